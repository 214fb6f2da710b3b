"""The one door to private Keras and TensorFlow internals.

keras-vae uses the public Keras 3 API everywhere except in this module.
Each function below wraps one private attribute or function that has no
public equivalent, says why, and is the only place to fix when a Keras
release changes it. `SUPPORTED_KERAS` is the Keras range the test suite
covers (and `setup.cfg` pins); `check_keras_version` fails with a message
naming this module when the installed Keras is outside it; it runs when
keras-vae is imported (`KERAS_VAE_ALLOW_UNTESTED_KERAS=1` skips it).

What is used, and why no public API does the job:

- `Layer._tracker` (`tracking_unlocked`): Keras locks a model's attribute
  tracking once it is built; a train-step hook (pruning, QAT) attached to a
  built model must still be tracked so its variables are saved.
- `Model._compile_config` (`set_compile_config`): `compile` records its
  arguments there for `.keras` files; keras-vae stores `"auto"` for the
  execution settings it resolves per `fit` call, so a loaded model chooses
  again instead of inheriting one call's choice, and the `metrics` it
  computes itself (on the reconstruction) instead of passing to Keras.
- `Model._initial_epoch` (`set_initial_epoch`, `restored_from_backup`):
  the hook through which `keras.callbacks.BackupAndRestore` itself tells
  `fit` where to resume; `KLWarmup` reads it to continue its schedule.
- `Model._distribute_strategy` (`model_distribute_strategy`): the strategy
  a model was built under; `tf.distribute.has_strategy()` only sees the
  current scope.
- `KerasTensor._keras_history` (`producing_operation`): the layer that
  produced a symbolic tensor, to rebuild a functional model with wrapped
  layers (Keras has `clone_model`, but its `clone_function` cannot insert
  the activation quantizers between layers).
- `Conv1D._compute_causal_padding` (`causal_padding`): the padding Keras
  applies for `padding="causal"`, reused by the quantized convolution so it
  computes exactly what the float layer does.
- `Metric._direction` (`metric_direction`, `set_metric_direction`): whether
  a metric is better higher ("up") or lower ("down"). Keras' own metrics
  carry it and its `ModelCheckpoint`/`EarlyStopping` read it for
  `mode="auto"`; there is no public accessor. keras-vae declares it on its
  metrics (`elbo` up, the losses down) and reads it to resolve `mode="auto"`
  of the callbacks given to `fit`.
- `TFLiteConverter._experimental_disable_per_channel_quantization_for_dense_layers`
  (`set_per_tensor_dense_quantization`, TensorFlow, not Keras): the only
  switch for TF-MOT's per-tensor int8 scheme on Dense kernels.
"""

import contextlib
import os

import keras

#: (lowest, first unsupported) Keras release, as (major, minor) tuples.
SUPPORTED_KERAS = ((3, 15), (3, 16))


def _version_tuple(version):
    parts = []
    for piece in str(version).split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts + [0] * (2 - len(parts)))


def check_keras_version(version=None):
    """Raise `ImportError` when Keras is outside `SUPPORTED_KERAS`.

    Args:
        version: str or None. A Keras version string; the installed one by
            default.

    Returns:
        str. The checked version.

    Example:

    >>> from keras_vae import _keras_internals
    >>> _ = _keras_internals.check_keras_version()
    """
    version = keras.__version__ if version is None else str(version)
    low, high = SUPPORTED_KERAS
    if not low <= _version_tuple(version) < high:
        raise ImportError(
            f"keras-vae is tested with Keras >={low[0]}.{low[1]},"
            f"<{high[0]}.{high[1]}; the private Keras internals it relies on "
            "(listed in keras_vae/_keras_internals.py) may differ in other "
            "releases. Install a supported Keras, e.g. "
            f"`pip install 'keras>={low[0]}.{low[1]},<{high[0]}.{high[1]}'` "
            "(or set KERAS_VAE_ALLOW_UNTESTED_KERAS=1 to try this one at "
            f"your own risk). Received: keras=={version}"
        )
    return version


@contextlib.contextmanager
def tracking_unlocked(layer):
    """Let `layer` track new attributes although it is built (`_tracker`)."""
    tracker = layer._tracker
    locked = tracker.locked
    tracker.unlock()
    try:
        yield
    finally:
        if locked:
            tracker.lock()


def set_compile_config(model, **values):
    """Record `values` in the compile config saved with `model`."""
    model._compile_config.config.update(values)


def set_initial_epoch(model, epoch):
    """Make the next `fit` of `model` start at `epoch` (`_initial_epoch`)."""
    model._initial_epoch = int(epoch)


def restored_from_backup(model):
    """Whether a backup callback set where this `fit` resumes (`_initial_epoch`)."""
    return getattr(model, "_initial_epoch", None) is not None


def model_distribute_strategy(model):
    """The `tf.distribute` strategy `model` was built under, or None."""
    return getattr(model, "_distribute_strategy", None)


def producing_operation(tensor):
    """The layer or operation that produced a symbolic `KerasTensor`."""
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history.operation


def causal_padding(layer):
    """Padding of a `padding="causal"` convolution, as `ops.pad` takes it."""
    return layer._compute_causal_padding()


def metric_direction(metric):
    """`"up"`, `"down"` or None: whether `metric` is better higher or lower."""
    return getattr(metric, "_direction", None)


def set_metric_direction(metric, direction):
    """Declare `metric` better when `"up"` (higher) or `"down"` (lower)."""
    if direction not in ("up", "down"):
        raise ValueError(
            'Expected `direction` to be "up" or "down". '
            f"Received: direction={direction!r}"
        )
    metric._direction = direction


def set_per_tensor_dense_quantization(converter, per_tensor):
    """Quantize Dense kernels per tensor (TF-MOT's scheme) or per channel."""
    converter._experimental_disable_per_channel_quantization_for_dense_layers = (
        bool(per_tensor)
    )


def sync_jax_state(model):
    """Write the live JAX training state of `fit` back into the variables.

    Public API (`Model.jax_state_sync`), kept here so that callers need not
    branch on the backend: on JAX, `fit` holds the newest values outside the
    variables until it ends; callbacks that read or assign variables during
    `fit` call this first. A no-op on TensorFlow.
    """
    if keras.backend.backend() == "jax":
        model.jax_state_sync()


# Checked once, when keras-vae is imported.
if not os.environ.get("KERAS_VAE_ALLOW_UNTESTED_KERAS"):
    check_keras_version()
