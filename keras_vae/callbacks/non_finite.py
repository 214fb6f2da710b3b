"""Stop `fit` at the first non-finite step and keep the last good weights.

`StopOnNonFinite` stops `fit` at the first step whose loss terms or updated
weights are not finite, restores the last good weights and raises
`NonFiniteLossError` naming the step and the term.

Example:

>>> import keras, numpy as np, keras_vae
>>> model = keras_vae.models.mlp_vae((8, 8, 1), latent_dim=2,
...                                  hidden_units=(16,))
>>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
>>> x = np.random.default_rng(0).uniform(size=(32, 8, 8, 1)).astype("float32")
>>> history = model.fit(x, epochs=1, verbose=0,
...                     callbacks=[keras_vae.callbacks.StopOnNonFinite()])
"""

import keras
import numpy as np

from keras_vae import _keras_internals

# Logged metric -> the ELBO term it measures, checked in this order.
_TERMS = (
    ("reconstruction_loss", "reconstruction"),
    ("kl_loss", "KL"),
    ("loss", "total loss"),
)


class NonFiniteLossError(ValueError):
    """Training produced a NaN or inf in a known range of steps and term.

    With `steps_per_execution=1` the range is one step; with more, Keras
    runs several steps per call and the callback sees only the end of each
    call, so the range is that execution's steps.

    Attributes:
        step: int. 1-based index of the last step of the execution in which
            the value appeared (counted over the whole run, like
            `optimizer.iterations`); the exact bad step when
            `first_step == step`.
        first_step: int. 1-based index of the first step of that execution.
            The restored weights are those from before this step.
        epoch: int. 0-based epoch of those steps.
        batch: int. 0-based batch index of `step` within its epoch.
        first_batch: int. 0-based batch index of `first_step`.
        term: str. `"reconstruction"`, `"KL"`, `"total loss"` or
            `"weights"` (the losses were finite but the update was not).
        value: float or None. The non-finite value that was logged.
    """

    def __init__(self, message, step, epoch, batch, term, value=None,
                 first_step=None, first_batch=None):
        super().__init__(message)
        self.step = step
        self.first_step = step if first_step is None else first_step
        self.epoch = epoch
        self.batch = batch
        self.first_batch = batch if first_batch is None else first_batch
        self.term = term
        self.value = value


@keras.saving.register_keras_serializable(package="keras_vae")
class StopOnNonFinite(keras.callbacks.Callback):
    """Stop at the first non-finite step and keep the last good weights.

    After every training execution (every batch when `steps_per_execution`
    is 1, every `steps_per_execution` batches otherwise) the callback
    checks the logged `reconstruction_loss`, `kl_loss` and `loss` (running
    means over the epoch, so a NaN at any step of the execution shows) and
    the updated weights. At the first non-finite value it restores the
    model weights (and, with `restore_optimizer`, the optimizer state) from
    the end of the previous execution, i.e. from before the first step of
    the failed execution, then raises `NonFiniteLossError`, a `ValueError`
    whose message names the step (or range of steps of one execution), the
    epoch, the batches and the term (reconstruction or KL). Unlike
    `keras.callbacks.TerminateOnNaN`, nothing is left half-updated and the
    failure cannot pass unnoticed.

    Neither Keras nor keras-vae adds this callback to `fit` on its own
    (as in Keras, a plain `fit` trains through NaN unless asked); the
    `keras-vae` command line and `keras_vae.training.train_and_report` use
    it by default.

    Keeping the last good state costs one host copy of the weights per
    execution, which is small next to a step for the model sizes keras-vae
    targets. The command line uses `every_step=False`.

    Args:
        restore_optimizer: bool. Also snapshot and restore the optimizer
            variables (Adam moments, iteration count), so training can be
            resumed after the error, e.g. with a lower learning rate.
        every_step: bool. Ask `fit` for one step per execution (when
            `compile` left `steps_per_execution="auto"`), so the error names
            the exact step. With False the check runs once per execution
            of several steps, which keeps `fit` fast, and the error names
            that execution's range of steps. An explicit
            `steps_per_execution` in `compile` always wins.

    Example:

    >>> import keras_vae
    >>> stop = keras_vae.callbacks.StopOnNonFinite()
    >>> # model.fit(x, epochs=10, callbacks=[stop])
    """

    def __init__(self, restore_optimizer=True, every_step=True):
        super().__init__()
        self.restore_optimizer = bool(restore_optimizer)
        self.every_step = bool(every_step)
        # Read by `fit`'s "auto" execution setting (keras_vae/_fit_callbacks).
        self.needs_every_batch = self.every_step
        self._good_weights = None
        self._good_optimizer = None
        self._good_step = 0
        self._epoch = 0
        self._first_batch = 0

    def get_config(self):
        return {"restore_optimizer": self.restore_optimizer,
                "every_step": self.every_step}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def _optimizer_variables(self):
        optimizer = getattr(self.model, "optimizer", None)
        if not self.restore_optimizer or optimizer is None:
            return []
        return list(optimizer.variables)

    def _iterations(self):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            return None
        return int(keras.ops.convert_to_numpy(optimizer.iterations))

    def _snapshot(self, weights=None):
        weights = self.model.get_weights() if weights is None else weights
        self._good_weights = [np.array(w) for w in weights]
        self._good_optimizer = [
            np.array(keras.ops.convert_to_numpy(v))
            for v in self._optimizer_variables()
        ]
        self._good_step = self._iterations() or 0

    def _restore(self):
        if self._good_weights is None:
            return False
        self.model.set_weights(self._good_weights)
        variables = self._optimizer_variables()
        if len(variables) == len(self._good_optimizer):
            for variable, value in zip(variables, self._good_optimizer):
                variable.assign(value)
        return True

    def on_train_begin(self, logs=None):
        optimizer = getattr(self.model, "optimizer", None)
        if self.restore_optimizer and optimizer is not None and not optimizer.built:
            # Build now so the state before the first step can be kept.
            optimizer.build(self.model.trainable_variables)
        _keras_internals.sync_jax_state(self.model)
        self._snapshot()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        # Keras calls this once per execution, with its first batch.
        self._first_batch = batch

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        _keras_internals.sync_jax_state(self.model)
        for key, term in _TERMS:
            if key not in logs:
                continue
            value = float(np.asarray(logs[key]))
            if not np.isfinite(value):
                self._fail(batch, term, f"{key}={value}", value)
        weights = self.model.get_weights()
        bad = sum(int((~np.isfinite(w)).sum()) for w in weights)
        if bad:
            self._fail(
                batch, "weights",
                f"{bad} non-finite weights after the update", None,
            )
        self._snapshot(weights)

    def _fail(self, batch, term, received, value):
        first_step = self._good_step + 1
        step = self._iterations()
        if step is None or step < first_step:
            step = first_step + max(batch - self._first_batch, 0)
        first_batch = min(self._first_batch, batch)
        restored = self._restore()
        self.model.stop_training = True
        if step == first_step:
            where = f"at step {step} (epoch {self._epoch}, batch {batch})"
        else:
            where = (
                f"in the execution of steps {first_step}-{step} (epoch "
                f"{self._epoch}, batches {first_batch}-{batch}; with "
                "steps_per_execution > 1 the exact step is not observed, "
                "compile with steps_per_execution=1 to find it)"
            )
        kept = (
            f"The weights from before step {first_step} were restored."
            if restored
            else f"No finite weights were recorded before step {first_step}."
        )
        if term == "weights":
            what = (
                "the weight update was not finite although the losses "
                "were (exploding gradients)"
            )
        else:
            what = f"the {term} term was not finite"
        raise NonFiniteLossError(
            f"Training stopped {where}: {what}. {kept} Lower the learning "
            "rate, clip gradients (`clipnorm`) or check the data and the "
            f"decoder output scale. Received: {received}",
            step=step, epoch=self._epoch, batch=batch, term=term, value=value,
            first_step=first_step, first_batch=first_batch,
        )


__all__ = ["NonFiniteLossError", "StopOnNonFinite"]
