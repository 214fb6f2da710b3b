"""`AtomicBackupAndRestore`: Keras' backup callback, committed atomically.

A run killed at any instant restarts from a whole checkpoint; see the class.
"""

import hashlib
import json
import os

import keras
import numpy as np

from keras_vae import _keras_internals, files


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
    >>> backup = keras_vae.callbacks.AtomicBackupAndRestore("/tmp/run1/backup")
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
        _keras_internals.set_initial_epoch(self.model, metadata["epoch"])
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
        _keras_internals.sync_jax_state(self.model)
        os.makedirs(self.backup_dir, exist_ok=True)
        self._counter += 1
        name = f"ckpt-{self._counter:08d}.weights.h5"
        path = os.path.join(self.backup_dir, name)
        with files.atomic_write(path, overwrite=True) as temporary:
            self.model.save_weights(temporary, overwrite=True)
        epoch, batch = _keras_internals.backup_progress(self)
        metadata = {
            "epoch": epoch,
            "batch": batch,
            "weights": name,
            "sha256": _sha256(path),
            "counter": self._counter,
            "seed_states": self._seed_states(),
        }
        with files.atomic_write(self._metadata_path, overwrite=True) as tmp:
            with open(tmp, "w") as handle:
                json.dump(metadata, handle)
        self._remove_stale(keep=name)


__all__ = ["AtomicBackupAndRestore"]
