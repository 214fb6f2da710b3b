"""Magnitude pruning of a VAE's kernels, TF-MOT style, in Keras 3.

The state of pruning lives on the model, not in the callback: a
`MagnitudePruning` train-step hook (see `keras_vae.VAE.add_train_step_hook`)
holds one non-trainable mask per pruned kernel and a `pruning_step` counter.
Before each training batch it counts the step and, on the schedule's steps,
recomputes the masks from the kernels' magnitudes; after each optimizer
update it multiplies the kernels by their masks, so pruned weights stay
exactly zero. Because the masks and the counter are model variables, they are
saved in `.keras` files and checkpoints, survive `fit` called several times
and `keras.callbacks.BackupAndRestore`, and are part of the JAX state.

The step numbering and the mask rule match TF-MOT's `prune_low_magnitude`:
the first training batch is step 1; on a pruning step a kernel with `n`
weights keeps the `k = max(round(n * (1 - sparsity)), 1)` largest magnitudes
(ties at the threshold are kept too).
"""

import keras
import numpy as np
from keras import ops

from keras_vae import _keras_internals
from keras_vae.compression import kernels as kernel_lookup
from keras_vae.compression import pruning_schedule
from keras_vae.compression.train_step_hook import KernelMaskHook

__all__ = [
    "MagnitudePruning",
    "PruningCallback",
    "magnitude_mask",
    "pruning_hooks",
    "strip_pruning",
]


def _block_pool(abs_weights, block_size):
    """Average of each block, as TF-MOT's SAME-padded factorized pooling."""
    pooled = abs_weights
    for axis, size in enumerate(block_size):
        if size == 1:
            continue
        length = pooled.shape[axis]
        blocks = -(-length // size)
        padding = blocks * size - length
        before = padding // 2
        pad = [[0, 0], [0, 0]]
        pad[axis] = [before, padding - before]
        summed = ops.pad(pooled, pad)
        counts = np.pad(np.ones(length, "float32"), pad[axis])
        shape = list(summed.shape)
        shape[axis : axis + 1] = [blocks, size]
        summed = ops.sum(ops.reshape(summed, shape), axis=axis + 1)
        counts = counts.reshape(blocks, size).sum(axis=1)
        counts = counts.reshape((-1, 1) if axis == 0 else (1, -1))
        pooled = summed / counts
    return pooled


def _expand_blocks(mask, block_size, shape):
    for axis, size in enumerate(block_size):
        if size > 1:
            mask = ops.repeat(mask, size, axis=axis)
    return mask[: shape[0], : shape[1]]


def _check_block_size(block_size):
    try:
        block_size = tuple(int(size) for size in block_size)
    except (TypeError, ValueError):
        block_size = None
    if block_size is None or len(block_size) != 2 or min(block_size) < 1:
        raise ValueError(
            "Expected `block_size` to be a tuple of 2 ints >= 1. "
            f"Received: block_size={block_size!r}"
        )
    return block_size


def _check_blocks_fit(shape, block_size, what):
    if block_size != (1, 1) and len(shape) != 2:
        raise ValueError(
            f"Block pruning needs a rank-2 (Dense) kernel, as in TF-MOT, but "
            f"{what} has rank {len(shape)} (shape {tuple(shape)}). Prune it "
            "with block_size=(1, 1) or leave it out of `layers`. "
            f"Received: block_size={block_size}"
        )


def magnitude_mask(weights, sparsity, block_size=(1, 1)):
    """0/1 mask keeping the largest-magnitude weights, as TF-MOT does.

    Keeps `k = max(round(n * (1 - sparsity)), 1)` of the `n` weights (or
    blocks, averaged in magnitude) and every weight tied with the k-th
    largest magnitude.

    Args:
        weights: tensor. A kernel.
        sparsity: float or scalar tensor in [0, 1). Fraction to set to zero.
        block_size: tuple of 2 ints. Prune blocks of this shape (rank-2
            kernels only); `(1, 1)` prunes single weights.

    Returns:
        Tensor of the shape and dtype of `weights`, 1 where kept.

    Example:

    >>> import numpy as np
    >>> from keras_vae.compression import magnitude_mask
    >>> w = np.array([[0.1, -2.0], [0.5, 3.0]], "float32")
    >>> np.asarray(magnitude_mask(w, 0.5)).tolist()
    [[0.0, 1.0], [0.0, 1.0]]
    """
    block_size = _check_block_size(block_size)
    weights = ops.convert_to_tensor(weights)
    shape = tuple(weights.shape)
    _check_blocks_fit(shape, block_size, "`weights`")
    scores = ops.abs(weights)
    blocked = block_size != (1, 1)
    if blocked:
        scores = _block_pool(scores, block_size)
    flat = ops.reshape(scores, (-1,))
    count = int(np.prod(flat.shape))
    keep = ops.round(
        ops.cast(count, "float32")
        * (1.0 - ops.cast(sparsity, "float32"))
    )
    keep = ops.cast(ops.maximum(keep, 1.0), "int32")
    threshold = ops.take(ops.sort(flat), count - keep)
    mask = ops.cast(ops.greater_equal(scores, threshold), weights.dtype)
    if blocked:
        mask = _expand_blocks(mask, block_size, shape)
    return mask


@keras.saving.register_keras_serializable(package="keras_vae")
class MagnitudePruning(KernelMaskHook):
    """Train-step hook that prunes chosen kernels of a VAE by magnitude.

    Usually created by `PruningCallback`; it is kept on the model (in
    `model.train_step_hooks`) so its masks and step counter are saved,
    restored and carried through the JAX state. Before each training batch
    it counts the step and, on the schedule's steps, recomputes the masks
    from the kernels' magnitudes; after each optimizer update it multiplies
    the kernels by their masks. Remove it with `strip_pruning`.

    Args:
        schedule: `keras_vae.compression.PruningSchedule` or a TF-MOT
            schedule.
        layer_names: list of str. Paths from `prunable_layers(model)`.
        block_size: tuple of 2 ints. Block shape for rank-2 kernels.

    Example:

    >>> import keras_vae
    >>> from keras_vae.compression import ConstantSparsity, MagnitudePruning
    >>> model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(16,))
    >>> model.add_train_step_hook(MagnitudePruning(
    ...     ConstantSparsity(0.5, 0, frequency=1), ["encoder/encoder_dense_0"]))
    >>> int(model.train_step_hooks[0].pruning_step.numpy())
    0
    """

    def __init__(self, schedule, layer_names, block_size=(1, 1), **kwargs):
        super().__init__(layer_names, **kwargs)
        self.schedule = pruning_schedule.get(schedule)
        self.block_size = _check_block_size(block_size)

    def attach(self, model):
        """Create the step counter and the masks for `model`'s kernels."""
        self.check_detached()
        kernels = kernel_lookup.kernels_by_path(model, self.layer_names)
        for name, kernel in zip(self.layer_names, kernels):
            _check_blocks_fit(kernel.shape, self.block_size, repr(name))
        # The counter comes before the masks, the order `.keras` files of
        # pruned models store them in.
        self.pruning_step = self.add_weight(
            shape=(),
            dtype="int32",
            initializer="zeros",
            trainable=False,
            name="pruning_step",
        )
        self.add_masks(kernels)
        self.hold(kernels)

    def before_train_step(self):
        step = self.pruning_step.value + 1
        self.pruning_step.assign(step)
        should_prune, sparsity = self.schedule(step)
        for kernel, mask in zip(self.targets, self.masks):
            weights = kernel.value
            old_mask = mask.value
            new_mask = ops.cond(
                should_prune,
                lambda w=weights: magnitude_mask(w, sparsity, self.block_size),
                lambda m=old_mask: m,
            )
            mask.assign(new_mask)
            kernel.assign(weights * new_mask)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "schedule": keras.saving.serialize_keras_object(self.schedule),
                "block_size": list(self.block_size),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = pruning_schedule.get(config["schedule"])
        return cls(**config)


def pruning_hooks(model):
    """The `MagnitudePruning` hooks attached to `model` (possibly none)."""
    return [
        hook for hook in getattr(model, "train_step_hooks", ())
        if isinstance(hook, MagnitudePruning)
    ]


def _check_layers(layers):
    if layers is None or callable(layers) or isinstance(layers, str):
        return layers
    if isinstance(layers, (list, tuple)) and all(
        isinstance(name, str) for name in layers
    ):
        return list(layers)
    raise ValueError(
        "Expected `layers` to be None, a layer name or path, a list of them "
        f"or a callable `layer -> bool`. Received: layers={layers!r}"
    )


@keras.saving.register_keras_serializable(package="keras_vae")
class PruningCallback(keras.callbacks.Callback):
    """Prune a VAE's Dense and Conv kernels by magnitude during `fit`.

    The Keras 3 counterpart of TF-MOT's `prune_low_magnitude` plus
    `UpdatePruningStep`. On `set_model` it attaches a `MagnitudePruning`
    hook to the model, or reuses the one already there (after a first
    `fit`, a `.keras` load or a restore), so the schedule continues where it
    stopped. Masks change on the schedule's steps inside the train step and
    pruned weights stay exactly zero through every optimizer update, on the
    TensorFlow and JAX backends. Call `strip_pruning` when done.

    A later callback on an already pruned model may change the schedule,
    not the pruned layers or the block size: those raise a `ValueError`
    (prune `strip_pruning(model)` again to change them). Layers with
    kernels that pruning does not handle (e.g. `DepthwiseConv2D`) raise
    when named in `layers` and are reported by a warning otherwise.

    Args:
        schedule: `ConstantSparsity`, `PolynomialDecay` (ours or TF-MOT's).
        layers: None (every Dense / Conv kernel of the encoder and
            decoder), a list of layer names or paths
            (`"encoder/encoder_dense_0"`), or a callable `layer -> bool`
            (not saved by `get_config`).
        block_size: tuple of 2 ints. Prune blocks of this shape in Dense
            kernels; `(1, 1)` (default) prunes single weights.

    Example:

    >>> import keras, numpy as np, keras_vae
    >>> from keras_vae.compression import PruningCallback, ConstantSparsity
    >>> model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(16,))
    >>> model.compile(optimizer="adam")
    >>> x = np.random.default_rng(0).uniform(size=(64, 8, 8, 1)).astype("float32")
    >>> pruning = PruningCallback(ConstantSparsity(0.5, 0, frequency=1))
    >>> _ = model.fit(x, epochs=1, verbose=0, callbacks=[pruning])
    >>> kernel = model.encoder.get_layer("encoder_dense_0").kernel.numpy()
    >>> float((kernel == 0).mean())
    0.5
    """

    def __init__(self, schedule, layers=None, block_size=(1, 1)):
        super().__init__()
        self.schedule = pruning_schedule.get(schedule)
        self.layers = _check_layers(layers)
        self.block_size = _check_block_size(block_size)

    @property
    def hook(self):
        """The model's `MagnitudePruning` hook (None before `set_model`)."""
        hooks = pruning_hooks(self.model) if self.model is not None else []
        return hooks[0] if hooks else None

    def set_model(self, model):
        if not callable(getattr(model, "add_train_step_hook", None)):
            raise ValueError(
                "`PruningCallback` prunes `keras_vae.VAE` models (it needs "
                f"`add_train_step_hook`). Received: model={model!r}"
            )
        existing = pruning_hooks(model)
        if existing:
            self._continue(model, existing[0])
            super().set_model(model)
            return
        names = kernel_lookup.select_layers(model, self.layers)
        if not names:
            raise ValueError(
                "Expected `layers` to select at least one Dense or Conv "
                f"layer. Received: layers={self.layers!r}"
            )
        model.add_train_step_hook(
            MagnitudePruning(self.schedule, names, self.block_size)
        )
        super().set_model(model)

    def _continue(self, model, hook):
        """Reuse `hook`: refuse other layers or blocks, take the schedule."""
        names = kernel_lookup.select_layers(model, self.layers, warn=False)
        if sorted(names) != sorted(hook.layer_names) or (
            self.block_size != hook.block_size
        ):
            raise ValueError(
                "This model is already pruned (its `MagnitudePruning` hook "
                f"covers {hook.layer_names} with block_size={hook.block_size}); "
                "a new `PruningCallback` may change the schedule only. To "
                "prune other layers or blocks, prune a plain copy: "
                "`model = keras_vae.compression.strip_pruning(model)`, "
                "compile it and fit it with this callback. Received: "
                f"layers={self.layers!r} (selects {names}), "
                f"block_size={self.block_size}"
            )
        wanted = keras.saving.serialize_keras_object(self.schedule)
        if keras.saving.serialize_keras_object(hook.schedule) != wanted:
            hook.schedule = self.schedule
            model.train_function = None

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.hook is not None:
            _keras_internals.sync_jax_state(self.model)
            logs["pruning_step"] = int(
                ops.convert_to_numpy(self.hook.pruning_step)
            )

    def get_config(self):
        if callable(self.layers):
            raise ValueError(
                "A `PruningCallback` with a callable `layers` filter has no "
                "config (a function cannot be saved safely); pass layer "
                f"names or paths instead. Received: layers={self.layers!r}"
            )
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "layers": self.layers,
            "block_size": list(self.block_size),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = pruning_schedule.get(config["schedule"])
        return cls(**config)


def strip_pruning(model):
    """A plain copy of a pruned VAE: zeros baked in, no masks or counter.

    The copy has the same config minus the pruning hooks, and the weights
    of `model` with every pruned kernel multiplied by its mask. It saves,
    loads and exports like any model. It is not compiled.

    Args:
        model: `keras_vae.VAE`, usually trained with `PruningCallback`.

    Returns:
        A new `keras_vae.VAE` (the same object type as `model`).

    Example:

    >>> import keras_vae
    >>> from keras_vae.compression import strip_pruning
    >>> model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(16,))
    >>> plain = strip_pruning(model)
    >>> plain.train_step_hooks
    []
    """
    hooks = pruning_hooks(model)
    _keras_internals.sync_jax_state(model)
    config = model.get_config()
    config["train_step_hooks"] = [
        keras.saving.serialize_keras_object(hook)
        for hook in model.train_step_hooks
        if not isinstance(hook, MagnitudePruning)
    ]
    stripped = type(model).from_config(config)
    hook_variables = {id(v) for hook in hooks for v in hook.weights}
    masked = {}
    for hook in hooks:
        for kernel, mask in zip(hook.kernels, hook.masks):
            masked[id(kernel)] = (
                ops.convert_to_numpy(kernel.value)
                * ops.convert_to_numpy(mask.value)
            )
    source = [v for v in model.weights if id(v) not in hook_variables]
    target = stripped.weights
    if len(source) != len(target):
        raise ValueError(
            "Could not match the weights of the pruned model with a fresh "
            f"copy ({len(source)} vs {len(target)}). Received: model={model!r}"
        )
    for old, new in zip(source, target):
        value = masked.get(id(old))
        if value is None:
            value = ops.convert_to_numpy(old.value)
        if tuple(value.shape) != tuple(new.shape):
            raise ValueError(
                f"Weight {old.path!r} has shape {value.shape} but the copy "
                f"expects {tuple(new.shape)}. Received: model={model!r}"
            )
        new.assign(value)
    return stripped
