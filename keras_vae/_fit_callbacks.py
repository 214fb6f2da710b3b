"""What `fit` reads from the callbacks it is given.

Two questions, answered with public attributes only:

- `needs_every_batch(callback)`: must `fit` run one step per execution so
  that the callback sees every batch with its own index? Yes for any
  callback with a batch hook (overridden in its class, or set on the
  instance as `keras.callbacks.LambdaCallback` does), unless it is known to
  act once per epoch only (Keras' progress bar, `ModelCheckpoint` and
  `BackupAndRestore` saving per epoch, `KLWarmup(unit="epoch")`). A
  callback can also say so itself with a `needs_every_batch` attribute.
- `resolve_monitor_modes(callbacks, directions)`: Keras infers the `mode`
  of `ModelCheckpoint`, `EarlyStopping` and `ReduceLROnPlateau` only for
  metrics given to `compile`; for keras-vae's own metrics (`elbo` is
  better higher) `fit` sets `mode` on the callbacks left at `"auto"`.
"""

import keras

_BATCH_HOOKS = (
    "on_batch_begin", "on_batch_end",
    "on_train_batch_begin", "on_train_batch_end",
    "on_test_batch_begin", "on_test_batch_end",
    "on_predict_batch_begin", "on_predict_batch_end",
)


def has_batch_hooks(callback):
    """True when a callback defines a per-batch hook, on its class or itself."""
    instance_hooks = vars(callback) if hasattr(callback, "__dict__") else {}
    return any(
        name in instance_hooks
        or getattr(type(callback), name, None)
        is not getattr(keras.callbacks.Callback, name)
        for name in _BATCH_HOOKS
    )


def _epoch_only(callback):
    """True for callbacks known to act once per epoch despite batch hooks."""
    from keras_vae.callbacks import KLWarmup

    if isinstance(callback, (keras.callbacks.ProgbarLogger,
                             keras.callbacks.History)):
        return True  # the progress bar just shows fewer updates
    if isinstance(callback, (keras.callbacks.ModelCheckpoint,
                             keras.callbacks.BackupAndRestore)):
        return getattr(callback, "save_freq", None) == "epoch"
    if isinstance(callback, KLWarmup):
        return getattr(callback, "unit", None) == "epoch"
    return False


def needs_every_batch(callback):
    """Whether `callback` needs one training step per execution.

    Args:
        callback: `keras.callbacks.Callback`.
    """
    declared = getattr(callback, "needs_every_batch", None)
    if declared is not None:
        return bool(declared)
    return has_batch_hooks(callback) and not _epoch_only(callback)


def resolve_monitor_modes(callbacks, directions):
    """Set `mode` of monitoring callbacks at `"auto"` from `directions`.

    Args:
        callbacks: list of callbacks.
        directions: dict metric name -> `"up"` or `"down"`.
    """
    for callback in callbacks or ():
        monitor = getattr(callback, "monitor", None)
        if not isinstance(monitor, str) or getattr(callback, "mode", None) != (
            "auto"
        ):
            continue
        name = monitor[4:] if monitor.startswith("val_") else monitor
        direction = directions.get(name)
        if direction is not None:
            callback.mode = "max" if direction == "up" else "min"
