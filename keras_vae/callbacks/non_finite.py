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
    """Training produced a NaN or inf at a known step and term.

    Attributes:
        step: int. 1-based index of the first bad training step (counted
            over the whole run, like `optimizer.iterations`).
        epoch: int. 0-based epoch of that step.
        batch: int. 0-based batch index of that step within its epoch.
        term: str. `"reconstruction"`, `"KL"`, `"total loss"` or
            `"weights"` (the losses were finite but the update was not).
        value: float or None. The non-finite value that was logged.
    """

    def __init__(self, message, step, epoch, batch, term, value=None):
        super().__init__(message)
        self.step = step
        self.epoch = epoch
        self.batch = batch
        self.term = term
        self.value = value


@keras.saving.register_keras_serializable(package="keras_vae")
class StopOnNonFinite(keras.callbacks.Callback):
    """Stop at the first non-finite step and keep the last good weights.

    After every training batch the callback checks the logged
    `reconstruction_loss`, `kl_loss` and `loss` and the updated weights. At
    the first non-finite value it restores the model weights (and, with
    `restore_optimizer`, the optimizer state) from the end of the previous
    step, then raises `NonFiniteLossError`, a `ValueError` whose message
    names the step and the term (reconstruction or KL). Unlike
    `keras.callbacks.TerminateOnNaN`, nothing is left half-updated and the
    failure cannot pass unnoticed.

    Keeping the last good state costs one host copy of the weights per
    step, which is small next to a step for the model sizes keras-vae
    targets.

    Args:
        restore_optimizer: bool. Also snapshot and restore the optimizer
            variables (Adam moments, iteration count), so training can be
            resumed after the error, e.g. with a lower learning rate.

    Example:

    >>> import keras_vae
    >>> stop = keras_vae.callbacks.StopOnNonFinite()
    >>> # model.fit(x, epochs=10, callbacks=[stop])
    """

    def __init__(self, restore_optimizer=True):
        super().__init__()
        self.restore_optimizer = bool(restore_optimizer)
        self._good_weights = None
        self._good_optimizer = None
        self._epoch = 0

    def get_config(self):
        return {"restore_optimizer": self.restore_optimizer}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def _optimizer_variables(self):
        optimizer = getattr(self.model, "optimizer", None)
        if not self.restore_optimizer or optimizer is None:
            return []
        return list(optimizer.variables)

    def _snapshot(self):
        self._good_weights = [np.array(w) for w in self.model.get_weights()]
        self._good_optimizer = [
            np.array(keras.ops.convert_to_numpy(v))
            for v in self._optimizer_variables()
        ]

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
        self._snapshot()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        _keras_internals.sync_jax_state(self.model)
        optimizer = getattr(self.model, "optimizer", None)
        step = (
            int(keras.ops.convert_to_numpy(optimizer.iterations))
            if optimizer is not None
            else None
        )
        for key, term in _TERMS:
            if key not in logs:
                continue
            value = float(np.asarray(logs[key]))
            if not np.isfinite(value):
                self._fail(step, batch, term, f"{key}={value}", value)
        weights = self.model.get_weights()
        bad = sum(int((~np.isfinite(w)).sum()) for w in weights)
        if bad:
            self._fail(
                step, batch, "weights",
                f"{bad} non-finite weights after the update", None,
            )
        self._good_weights = [np.array(w) for w in weights]
        self._good_optimizer = [
            np.array(keras.ops.convert_to_numpy(v))
            for v in self._optimizer_variables()
        ]

    def _fail(self, step, batch, term, received, value):
        restored = self._restore()
        self.model.stop_training = True
        kept = (
            "The weights from before this step were restored."
            if restored
            else "No finite weights were recorded before this step."
        )
        if term == "weights":
            what = (
                "the weight update was not finite although the losses "
                "were (exploding gradients)"
            )
        else:
            what = f"the {term} term was not finite"
        raise NonFiniteLossError(
            f"Training stopped at step {step} (epoch {self._epoch}, batch "
            f"{batch}): {what}. {kept} Lower the learning rate, clip "
            "gradients (`clipnorm`) or check the data and the decoder "
            f"output scale. Received: {received}",
            step=step, epoch=self._epoch, batch=batch, term=term, value=value,
        )


__all__ = ["NonFiniteLossError", "StopOnNonFinite"]
