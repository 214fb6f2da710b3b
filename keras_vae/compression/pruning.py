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

from keras_vae.compression import pruning_schedule

PRUNABLE_LAYERS = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
)


def _kernel_of(layer):
    # `Dense.kernel` is a computed tensor when LoRA is on; the variable is
    # `_kernel`.
    kernel = getattr(layer, "_kernel", None)
    return kernel if isinstance(kernel, keras.Variable) else layer.kernel


def _walk(model, prefix):
    for layer in model.layers:
        name = f"{prefix}/{layer.name}"
        if isinstance(layer, keras.Model):
            yield from _walk(layer, name)
        elif isinstance(layer, keras.layers.Wrapper):
            # A `QuantizeWrapper` (QAT) keeps the wrapped layer's variables:
            # the path names the wrapped layer, as before wrapping.
            yield f"{prefix}/{layer.layer.name}", layer.layer
        else:
            yield name, layer


def _sub_models(model):
    if hasattr(model, "encoder") and hasattr(model, "decoder"):
        return (("encoder", model.encoder), ("decoder", model.decoder))
    return ((model.name, model),)


def prunable_layers(model):
    """Prunable layers of a VAE (or any functional model) by path.

    Paths are `"encoder/<layer name>"` and `"decoder/<layer name>"` for a
    VAE (nested models add their names), in the order of the layers.

    Args:
        model: `keras_vae.VAE` or `keras.Model`.

    Returns:
        dict mapping each path to a Dense / Conv layer.

    Example:

    >>> import keras_vae
    >>> from keras_vae.compression import prunable_layers
    >>> model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(16,))
    >>> list(prunable_layers(model))[:1]
    ['encoder/encoder_dense_0']
    """
    found = {}
    for prefix, sub_model in _sub_models(model):
        for path, layer in _walk(sub_model, prefix):
            if isinstance(layer, PRUNABLE_LAYERS) and layer.built:
                found[path] = layer
    return found


def _select_layers(model, layers):
    available = prunable_layers(model)
    if layers is None:
        return list(available)
    if callable(layers):
        return [path for path, layer in available.items() if layers(layer)]
    if isinstance(layers, str):
        layers = [layers]
    chosen = []
    for name in layers:
        matches = [
            path for path, layer in available.items()
            if name in (path, layer.name)
        ]
        if not matches:
            raise ValueError(
                f"Expected `layers` to name prunable layers of the encoder or "
                f"decoder: {sorted(available)}. Received: layers={layers!r}"
            )
        chosen.extend(path for path in matches if path not in chosen)
    return chosen


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
    weights = ops.convert_to_tensor(weights)
    shape = tuple(weights.shape)
    scores = ops.abs(weights)
    blocked = tuple(block_size) != (1, 1)
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


class _Refs:
    """Holds variables without Keras tracking them a second time."""

    def __init__(self, items):
        self.items = list(items)


@keras.saving.register_keras_serializable(package="keras_vae")
class MagnitudePruning(keras.layers.Layer):
    """Train-step hook that prunes chosen kernels of a VAE by magnitude.

    Usually created by `PruningCallback`; it is kept on the model (in
    `model.train_step_hooks`) so its masks and step counter are saved,
    restored and carried through the JAX state. Remove it with
    `strip_pruning`.

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
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.schedule = pruning_schedule.get(schedule)
        self.layer_names = [str(name) for name in layer_names]
        self.block_size = _check_block_size(block_size)
        self._refs = _Refs([])

    def attach(self, model):
        """Create the masks and the step counter for `model`'s kernels."""
        if self._refs.items:
            raise ValueError(
                "This `MagnitudePruning` hook is already attached to a model. "
                f"Create a new one. Received: hook={self.name!r}"
            )
        available = prunable_layers(model)
        missing = [name for name in self.layer_names if name not in available]
        if missing or not self.layer_names:
            raise ValueError(
                "Expected `layer_names` to list prunable layers of the model: "
                f"{sorted(available)}. Received: layer_names={self.layer_names}"
            )
        kernels = [_kernel_of(available[name]) for name in self.layer_names]
        if self.block_size != (1, 1):
            for name, kernel in zip(self.layer_names, kernels):
                if len(kernel.shape) != 2:
                    raise ValueError(
                        "Block pruning applies to rank-2 (Dense) kernels "
                        f"only; prune {name!r} with block_size=(1, 1). "
                        f"Received: block_size={self.block_size}"
                    )
        self.pruning_step = self.add_weight(
            shape=(),
            dtype="int32",
            initializer="zeros",
            trainable=False,
            name="pruning_step",
        )
        self.masks = [
            self.add_weight(
                shape=kernel.shape,
                dtype=kernel.dtype,
                initializer="ones",
                trainable=False,
                name=f"mask_{index}",
            )
            for index, kernel in enumerate(kernels)
        ]
        self._refs.items = kernels
        self.built = True

    @property
    def kernels(self):
        """list of the pruned kernel variables, in `layer_names` order."""
        return list(self._refs.items)

    def before_train_step(self):
        step = self.pruning_step.value + 1
        self.pruning_step.assign(step)
        should_prune, sparsity = self.schedule(step)
        for kernel, mask in zip(self._refs.items, self.masks):
            weights = kernel.value
            old_mask = mask.value
            new_mask = ops.cond(
                should_prune,
                lambda w=weights: magnitude_mask(w, sparsity, self.block_size),
                lambda m=old_mask: m,
            )
            mask.assign(new_mask)
            kernel.assign(weights * new_mask)

    def after_apply(self):
        for kernel, mask in zip(self._refs.items, self.masks):
            kernel.assign(kernel.value * mask.value)

    def call(self, inputs):
        return inputs

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "schedule": keras.saving.serialize_keras_object(self.schedule),
                "layer_names": list(self.layer_names),
                "block_size": list(self.block_size),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = pruning_schedule.get(config["schedule"])
        return cls(**config)


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


def pruning_hooks(model):
    """The `MagnitudePruning` hooks attached to `model` (possibly none)."""
    return [
        hook for hook in getattr(model, "train_step_hooks", ())
        if isinstance(hook, MagnitudePruning)
    ]


class PruningCallback(keras.callbacks.Callback):
    """Prune a VAE's Dense and Conv kernels by magnitude during `fit`.

    The Keras 3 counterpart of TF-MOT's `prune_low_magnitude` plus
    `UpdatePruningStep`. On `set_model` it attaches a `MagnitudePruning`
    hook to the model, or reuses the one already there (after a first
    `fit`, a `.keras` load or a restore), so the schedule continues where it
    stopped. Masks change on the schedule's steps inside the train step and
    pruned weights stay exactly zero through every optimizer update, on the
    TensorFlow and JAX backends. Call `strip_pruning` when done.

    Args:
        schedule: `ConstantSparsity`, `PolynomialDecay` (ours or TF-MOT's).
        layers: None (every Dense / Conv kernel of the encoder and
            decoder), a list of layer names or paths
            (`"encoder/encoder_dense_0"`), or a callable `layer -> bool`.
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
        self.layers = layers
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
        super().set_model(model)
        existing = pruning_hooks(model)
        if existing:
            hook = existing[0]
            wanted = keras.saving.serialize_keras_object(self.schedule)
            if keras.saving.serialize_keras_object(hook.schedule) != wanted:
                hook.schedule = self.schedule
                model.train_function = None
            return
        names = _select_layers(model, self.layers)
        if not names:
            raise ValueError(
                "Expected `layers` to select at least one Dense or Conv "
                f"layer. Received: layers={self.layers!r}"
            )
        model.add_train_step_hook(
            MagnitudePruning(self.schedule, names, self.block_size)
        )

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.hook is not None:
            if keras.backend.backend() == "jax":
                self.model.jax_state_sync()
            logs["pruning_step"] = int(
                ops.convert_to_numpy(self.hook.pruning_step.value)
            )


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
    if keras.backend.backend() == "jax" and getattr(model, "_jax_state", None):
        model.jax_state_sync()
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
