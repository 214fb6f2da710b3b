"""KL warm-up (annealing) of the `beta` weight during `fit`."""

import keras

from keras_vae import _keras_internals, _validation

_SCHEDULES = ("linear", "cyclical")
_UNITS = ("step", "epoch")


@keras.saving.register_keras_serializable(package="keras_vae")
class KLWarmup(keras.callbacks.Callback):
    """Anneal the KL weight `beta` from `start_beta` to `max_beta`.

    Writes `model.beta_variable` before every batch (`unit="step"`) or
    epoch (`unit="epoch"`). Only the training loss changes: the reported
    `elbo` always uses beta = 1.

    - `"linear"`: beta rises linearly over `warmup` steps (or epochs), then
      stays at `max_beta`.
    - `"cyclical"` (Fu et al., 2019): the schedule restarts every `warmup`
      steps (or epochs); within each cycle beta rises linearly during the
      first `ratio` of the cycle and stays at `max_beta` for the rest.

    The counter of steps continues across successive `fit` calls; epochs
    are those that `fit` reports (so `initial_epoch` is honoured). When
    `keras.callbacks.BackupAndRestore` resumes a killed run, a new callback
    continues the step schedule from the restored `optimizer.iterations`
    (the warm-up is assumed to have started with that optimizer). On JAX
    the callback first syncs the model state (`model.jax_state_sync()`),
    then assigns, so the next train step reads the new value.

    Args:
        warmup: int > 0. Length of the warm-up (linear) or of one cycle
            (cyclical), in units of `unit`.
        schedule: str. `"linear"` or `"cyclical"`.
        unit: str. `"step"` (per batch) or `"epoch"`.
        max_beta: float >= 0 or None. Final beta; None uses the beta the
            model was built with.
        start_beta: float >= 0. Beta at the start of (each) warm-up.
        ratio: float in (0, 1]. Cyclical only: fraction of each cycle spent
            increasing.

    Example:

    >>> import keras_vae
    >>> warmup = keras_vae.callbacks.KLWarmup(warmup=10, unit="epoch")
    >>> warmup.beta_at(5, max_beta=1.0)
    0.5
    """

    def __init__(
        self,
        warmup,
        schedule="linear",
        unit="step",
        max_beta=None,
        start_beta=0.0,
        ratio=0.5,
    ):
        super().__init__()
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup <= 0:
            raise ValueError(
                f"Expected `warmup` to be a positive int. Received: warmup={warmup!r}"
            )
        if schedule not in _SCHEDULES:
            raise ValueError(
                f"Expected `schedule` to be one of {_SCHEDULES}. "
                f"Received: schedule={schedule!r}"
            )
        if unit not in _UNITS:
            raise ValueError(
                f"Expected `unit` to be one of {_UNITS}. Received: unit={unit!r}"
            )
        if max_beta is not None:
            max_beta = _validation.check_non_negative(max_beta, "max_beta")
        start_beta = _validation.check_non_negative(start_beta, "start_beta")
        try:
            ratio_ok = 0.0 < float(ratio) <= 1.0
        except (TypeError, ValueError):
            ratio_ok = False
        if not ratio_ok:
            raise ValueError(
                f"Expected `ratio` in (0, 1]. Received: ratio={ratio!r}"
            )
        self.warmup = warmup
        self.schedule = schedule
        self.unit = unit
        self.max_beta = None if max_beta is None else float(max_beta)
        self.start_beta = float(start_beta)
        self.ratio = float(ratio)
        self.step = 0
        self.history = []
        # The top of the schedule for the model being trained: `max_beta`,
        # or the beta that model was built with.
        self._top = self.max_beta

    def beta_at(self, position, max_beta=None):
        """Beta at step or epoch `position` (0-based) of the schedule."""
        top = self._top if max_beta is None else float(max_beta)
        if top is None:
            raise ValueError(
                "`max_beta` is unknown before the callback sees a model. "
                "Pass `max_beta`. Received: max_beta=None"
            )
        if self.schedule == "linear":
            fraction = min(1.0, position / self.warmup)
        else:
            within = (position % self.warmup) / self.warmup
            fraction = min(1.0, within / self.ratio)
        return self.start_beta + (top - self.start_beta) * fraction

    def on_train_begin(self, logs=None):
        if not hasattr(self.model, "beta_variable"):
            raise ValueError(
                "KLWarmup changes the `beta_variable` of a keras_vae model "
                "(`keras_vae.VAE` or `CVAE`). Received: model of type "
                f"{type(self.model).__name__}"
            )
        if self.max_beta is None:
            # The beta the model was configured with, not the current value
            # that an earlier warm-up may have lowered.
            self._top = float(getattr(self.model, "_initial_beta", 1.0))

    def _write(self, value):
        model = self.model
        if keras.backend.backend() == "jax":
            model.jax_state_sync()
        model.beta_variable.assign(value)
        self.history.append(value)

    def on_train_batch_begin(self, batch, logs=None):
        if self.unit == "step":
            if not self.history and self._resumed_from_backup():
                self.step = self._restored_step()
            self._write(self.beta_at(self.step))
            self.step += 1

    def _resumed_from_backup(self):
        # A backup callback that restored a checkpoint told `fit` where to
        # resume. The step counter of this fresh callback is then 0, but
        # the restored optimizer knows how many steps were taken.
        return _keras_internals.restored_from_backup(self.model)

    def _restored_step(self):
        if keras.backend.backend() == "jax":
            self.model.jax_state_sync()
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_epoch_begin(self, epoch, logs=None):
        if self.unit == "epoch":
            self._write(self.beta_at(epoch))

    def get_config(self):
        return {
            "warmup": self.warmup,
            "schedule": self.schedule,
            "unit": self.unit,
            "max_beta": self.max_beta,
            "start_beta": self.start_beta,
            "ratio": self.ratio,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
