"""`AtomicBackupAndRestore`: Keras' backup callback, committed atomically.

A run killed at any instant restarts from a whole checkpoint; see the class.
"""

import contextlib
import hashlib
import json
import os
import re

import keras
import numpy as np

from keras_vae import _keras_internals, distribute, files


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
    SHA-256 and the epoch, is replaced atomically (`keras_vae.files`). That
    replace is the single commit point: a restarted run sees either the
    old checkpoint or the new one, never a mix, and a checkpoint whose hash
    does not match is refused with an error naming the file.

    The callback only ever deletes what it wrote. It takes `backup_dir`
    only if the folder is new, empty, or marked as its own by an earlier
    run (the marker file `.keras-vae-backup`); a folder holding anything
    else (say the user's `model.keras`) is refused with a `ValueError`
    before training starts. When training ends with
    `delete_checkpoint=True`, it removes its checkpoints, metadata and
    marker, and the folder itself only if it created the folder and
    nothing else was put there.

    Everything the model and its optimizer save with `save_weights` comes
    back: weights, optimizer moments and step count, the KL weight
    `beta_variable` and other non-trainable schedule state (pruning masks
    and step). The sampling `SeedGenerator` states, which `save_weights`
    skips, are kept in the metadata file, so a resumed run draws the same
    noise as an uninterrupted one and ends with the same weights. As with
    Keras' callback, training resumes at the start of the epoch of the last
    checkpoint.

    In multi-worker training (`MultiWorkerMirroredStrategy`, several JAX
    processes) only the chief (`keras_vae.distribute.is_chief`) writes and
    deletes checkpoints, and every worker restores from them: `backup_dir`
    must be on storage that all workers see.

    Args:
        backup_dir: str. A folder for the checkpoints only: new, empty, or
            used by this callback before; never shared with other runs.
        save_freq: `"epoch"` or int. Save at the end of each epoch, or
            every `save_freq` batches.
        delete_checkpoint: bool. Delete the checkpoints when training
            ends normally.

    Example:

    >>> import keras_vae
    >>> backup = keras_vae.callbacks.AtomicBackupAndRestore("/tmp/run1/backup")
    >>> # model.fit(x, epochs=30, callbacks=[backup])  # rerun after a kill
    """

    _METADATA = "training_metadata.json"
    MARKER = ".keras-vae-backup"
    _CHECKPOINT = re.compile(r"^ckpt-\d{8}\.weights\.h5$")

    def __init__(self, backup_dir, save_freq="epoch", delete_checkpoint=True):
        super().__init__(
            backup_dir,
            save_freq=save_freq,
            double_checkpoint=False,
            delete_checkpoint=delete_checkpoint,
        )
        self._metadata_path = os.path.join(backup_dir, self._METADATA)
        self._marker_path = os.path.join(backup_dir, self.MARKER)
        self._counter = 0
        self._epochs_done = 0
        self._last_batch = 0
        self._batches_since_save = 0

    def get_config(self):
        return {
            "backup_dir": self.backup_dir,
            "save_freq": self.save_freq,
            "delete_checkpoint": self.delete_checkpoint,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # --- Keras callback hooks (public API only) ---------------------------

    def on_train_begin(self, logs=None):
        if self._writes_files():
            self._claim_folder()
        self._restore_checkpoint()

    def on_epoch_end(self, epoch, logs=None):
        self._epochs_done = epoch + 1
        self._last_batch = 0
        if self.save_freq == "epoch":
            self._write_checkpoint(batch=0)

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq == "epoch":
            return
        # With several steps per execution `batch` jumps by that many.
        if batch <= self._last_batch:  # a new epoch began
            self._batches_since_save += batch + 1
        else:
            self._batches_since_save += batch - self._last_batch
        self._last_batch = batch
        if self._batches_since_save >= self.save_freq:
            self._batches_since_save = 0
            self._write_checkpoint(batch=batch)

    def on_train_end(self, logs=None):
        if self.delete_checkpoint and self._writes_files():
            self._delete_own_files()

    def _writes_files(self):
        # Under multi-worker training every worker restores from the
        # chief's checkpoints (`backup_dir` on storage all workers see);
        # only the chief writes and deletes them.
        return distribute.is_chief(self.model)

    # --- the folder: claimed, and cleaned of our own files only -----------

    def _claim_folder(self):
        directory = self.backup_dir
        if os.path.lexists(directory) and not os.path.isdir(directory):
            raise ValueError(
                f"`backup_dir` {directory} is a file, expected a folder. "
                f"Received: backup_dir={directory!r}"
            )
        if os.path.isfile(self._marker_path):
            return  # ours, from an earlier run
        created = not os.path.exists(directory)
        if not created:
            foreign = sorted(os.listdir(directory))
            if foreign:
                shown = ", ".join(repr(name) for name in foreign[:5])
                raise ValueError(
                    f"`backup_dir` {directory} already holds files that "
                    f"AtomicBackupAndRestore did not write ({shown}"
                    f"{', ...' if len(foreign) > 5 else ''}). The callback "
                    "deletes its checkpoints when training ends, so it only "
                    "uses a new or empty folder, or one it created. Pass a "
                    "folder of its own, e.g. "
                    f"{os.path.join(directory, 'backup')!r}. Received: "
                    f"backup_dir={directory!r}"
                )
        os.makedirs(directory, exist_ok=True)
        files.write_json(self._marker_path, {"created_folder": created},
                         overwrite=True)

    def _delete_own_files(self):
        directory = self.backup_dir
        if not os.path.isfile(self._marker_path):
            return
        try:
            with open(self._marker_path) as handle:
                created = bool(json.load(handle).get("created_folder"))
        except (OSError, ValueError, AttributeError):
            created = False
        for name in os.listdir(directory):
            if name == self._METADATA or self._CHECKPOINT.match(name):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(directory, name))
        files.remove_stale_temporaries(directory, force=True)
        with contextlib.suppress(OSError):
            os.remove(self._marker_path)
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(directory)  # fails, as it should, if not empty

    def _remove_old_checkpoints(self, keep):
        for name in os.listdir(self.backup_dir):
            if self._CHECKPOINT.match(name) and name != keep:
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(self.backup_dir, name))
        # Temporary folders of a writer killed mid-checkpoint.
        files.remove_stale_temporaries(self.backup_dir, force=True)

    # --- checkpoints -------------------------------------------------------

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

    def _restore_checkpoint(self):
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
        self._remove_old_checkpoints(keep=metadata["weights"])
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        self.model.load_weights(path)
        self._set_seed_states(metadata.get("seed_states", []))
        _keras_internals.set_initial_epoch(self.model, metadata["epoch"])
        self._epochs_done = metadata["epoch"]
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

    def _write_checkpoint(self, batch):
        _keras_internals.sync_jax_state(self.model)
        if not self._writes_files():
            # Saving runs collective ops under MultiWorkerMirroredStrategy:
            # every worker saves, the others into a folder then deleted.
            distribute.save_weights_elsewhere(self.model)
            return
        self._counter += 1
        name = f"ckpt-{self._counter:08d}.weights.h5"
        path = os.path.join(self.backup_dir, name)
        with files.atomic_write(path, overwrite=True) as temporary:
            self.model.save_weights(temporary, overwrite=True)
        metadata = {
            "epoch": self._epochs_done,
            "batch": batch,
            "weights": name,
            "sha256": _sha256(path),
            "counter": self._counter,
            "seed_states": self._seed_states(),
        }
        with files.atomic_write(self._metadata_path, overwrite=True) as tmp:
            with open(tmp, "w") as handle:
                json.dump(metadata, handle)
        self._remove_old_checkpoints(keep=name)


__all__ = ["AtomicBackupAndRestore"]
