"""Callbacks that change or protect a VAE's training during `fit`.

- `KLWarmup`: ramps the KL weight `beta` (posterior-collapse remedy).
- `StopOnNonFinite`: stops at the first NaN/inf step, keeps the last good
  weights and raises `NonFiniteLossError`.
- `AtomicBackupAndRestore`: `keras.callbacks.BackupAndRestore` whose
  checkpoints are committed atomically and which deletes only its own
  files.
- `LearningCurve`: test negative ELBO against optimizer steps and
  training seconds.

Pruning and quantization-aware training have their callbacks in
`keras_vae.compression`.
"""

from keras_vae.callbacks.backup import AtomicBackupAndRestore
from keras_vae.callbacks.kl_warmup import KLWarmup
from keras_vae.callbacks.learning_curve import LearningCurve
from keras_vae.callbacks.non_finite import NonFiniteLossError, StopOnNonFinite

__all__ = [
    "AtomicBackupAndRestore",
    "KLWarmup",
    "LearningCurve",
    "NonFiniteLossError",
    "StopOnNonFinite",
]
