"""Fault handling during training: non-finite steps and interrupted runs.

`StopOnNonFinite` stops `fit` at the first step whose loss terms or updated
weights are not finite, restores the last good weights and raises
`NonFiniteLossError` naming the step and the term. `AtomicBackupAndRestore`
is `keras.callbacks.BackupAndRestore` with checkpoints that are committed
atomically, so a run killed at any instant restarts from a whole checkpoint.

Example:

>>> import keras, numpy as np, keras_vae
>>> model = keras_vae.models.mlp_vae((8, 8, 1), latent_dim=2,
...                                  hidden_units=(16,))
>>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
>>> x = np.random.default_rng(0).uniform(size=(32, 8, 8, 1)).astype("float32")
>>> history = model.fit(x, epochs=1, verbose=0,
...                     callbacks=[keras_vae.faults.StopOnNonFinite()])
"""

import hashlib
import json
import os

import keras
import numpy as np

from keras_vae import io as vae_io

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


def _sync_jax_state(model):
    # On JAX, `fit` keeps the live state outside the variables; this writes
    # it back (and makes the next step re-read whatever we assign).
    if keras.backend.backend() == "jax" and getattr(model, "_jax_state", None):
        model.jax_state_sync()


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
    >>> stop = keras_vae.faults.StopOnNonFinite()
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
        _sync_jax_state(self.model)
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


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@keras.saving.register_keras_serializable(package="keras_vae")
class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose checkpoints survive a kill at any instant.

    Keras' callback overwrites `latest.weights.h5` in place and then the
    metadata file, so a kill during the write leaves a truncated file, and
    a kill between the two leaves weights and epoch out of step. Here each
    checkpoint is written to a new file (`ckpt-<n>.weights.h5`) and synced
    to disk; then the small metadata file, which names that file, its
    SHA-256 and the epoch, is replaced atomically with `os.replace`. That
    replace is the single commit point: a restarted run sees either the
    old checkpoint or the new one, never a mix, and a checkpoint whose hash
    does not match is refused with an error naming the file.

    Everything the model and its optimizer save with `save_weights` comes
    back: weights, optimizer moments and step count, the KL weight
    `beta_variable` and other non-trainable schedule state (pruning masks
    and step). The sampling `SeedGenerator` states, which `save_weights`
    skips, are kept in the metadata file, so a resumed run draws the same
    noise as an uninterrupted one and ends with the same weights. As with
    Keras' callback, training resumes at the start of the epoch of the last
    checkpoint.

    Args:
        backup_dir: str. Directory for the checkpoints; must not be shared
            with other runs.
        save_freq: `"epoch"` or int. Save at the end of each epoch, or
            every `save_freq` batches.
        delete_checkpoint: bool. Delete `backup_dir` when training ends
            normally.

    Example:

    >>> import keras_vae
    >>> backup = keras_vae.faults.AtomicBackupAndRestore("/tmp/run1/backup")
    >>> # model.fit(x, epochs=30, callbacks=[backup])  # rerun after a kill
    """

    _METADATA = "training_metadata.json"

    def __init__(self, backup_dir, save_freq="epoch", delete_checkpoint=True):
        super().__init__(
            backup_dir,
            save_freq=save_freq,
            double_checkpoint=False,
            delete_checkpoint=delete_checkpoint,
        )
        self._metadata_path = os.path.join(backup_dir, self._METADATA)
        self._counter = 0

    def get_config(self):
        return {
            "backup_dir": self.backup_dir,
            "save_freq": self.save_freq,
            "delete_checkpoint": self.delete_checkpoint,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def _read_metadata(self):
        if not os.path.exists(self._metadata_path):
            return None
        try:
            with open(self._metadata_path) as handle:
                metadata = json.load(handle)
            metadata["epoch"] = int(metadata["epoch"])
            metadata["weights"] = str(metadata["weights"])
            metadata["sha256"] = str(metadata["sha256"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"The checkpoint metadata {self._metadata_path} is "
                f"unreadable ({error}). Delete {self.backup_dir} to start "
                f"over. Received: path={self._metadata_path!r}"
            ) from None
        return metadata

    def _remove_stale(self, keep):
        for name in os.listdir(self.backup_dir):
            if name == keep or name == self._METADATA:
                continue
            if name.startswith("ckpt-") or name.startswith(".tmp-"):
                try:
                    os.remove(os.path.join(self.backup_dir, name))
                except OSError:
                    pass

    def _load_model(self):
        if not self.model.built:
            raise ValueError(
                "`AtomicBackupAndRestore` needs a built model. Call the "
                f"model on a batch first. Received: model={self.model.name}"
            )
        metadata = self._read_metadata()
        if metadata is None:
            return
        path = os.path.join(self.backup_dir, metadata["weights"])
        if not os.path.exists(path) or _sha256(path) != metadata["sha256"]:
            raise ValueError(
                f"The checkpoint {path} is missing or does not match its "
                "recorded SHA-256; it was changed outside this callback. "
                f"Delete {self.backup_dir} to start over. Received: "
                f"path={path!r}"
            )
        self._remove_stale(keep=metadata["weights"])
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        self.model.load_weights(path)
        self._set_seed_states(metadata.get("seed_states", []))
        self.model._initial_epoch = metadata["epoch"]
        self._counter = int(metadata.get("counter", 0))

    def _seed_variables(self):
        # `save_weights` skips `SeedGenerator` states: without them a
        # resumed run would draw the sampling noise of a fresh model.
        return [
            variable for variable in self.model.non_trainable_variables
            if variable.path.endswith("seed_generator_state")
        ]

    def _seed_states(self):
        return [
            np.asarray(keras.ops.convert_to_numpy(variable)).tolist()
            for variable in self._seed_variables()
        ]

    def _set_seed_states(self, states):
        variables = self._seed_variables()
        if len(states) != len(variables):
            return
        for variable, state in zip(variables, states):
            variable.assign(np.asarray(state, dtype=variable.dtype))

    def _save_model(self):
        _sync_jax_state(self.model)
        os.makedirs(self.backup_dir, exist_ok=True)
        self._counter += 1
        name = f"ckpt-{self._counter:08d}.weights.h5"
        path = os.path.join(self.backup_dir, name)
        with vae_io.atomic_write(path, overwrite=True) as temporary:
            self.model.save_weights(temporary, overwrite=True)
        metadata = {
            "epoch": self._current_epoch,
            "batch": self._last_batch_seen,
            "weights": name,
            "sha256": _sha256(path),
            "counter": self._counter,
            "seed_states": self._seed_states(),
        }
        with vae_io.atomic_write(self._metadata_path, overwrite=True) as tmp:
            with open(tmp, "w") as handle:
                json.dump(metadata, handle)
        self._remove_stale(keep=name)


__all__ = ["AtomicBackupAndRestore", "NonFiniteLossError", "StopOnNonFinite"]
