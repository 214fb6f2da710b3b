"""Which layers of a VAE hold kernels that compression can change.

The one place that knows which Keras layers pruning and quantization
handle, where their kernel variable is, and how a layer is named by path
(`"encoder/<layer>"`, `"decoder/<layer>"`, nested models add their names).
`pruning`, `quantization`, `qat_hooks` and `sparsity_report` all ask here.

Pruning follows TF-MOT's registry: Dense, Conv1D/2D/3D and their
transposes prune `kernel`, SeparableConv1D/2D prune `pointwise_kernel`.
Other layers with kernel-like weights (rank >= 2, e.g. `DepthwiseConv2D`,
`Embedding`, a Keras-quantized `Dense`) are not pruned: selecting them by
name raises, and leaving them out of a model-wide selection warns.
"""

import warnings

import keras

# Layer type -> name of the weight that magnitude pruning masks.
PRUNABLE_KERNELS = (
    (keras.layers.Dense, "kernel"),
    (keras.layers.Conv1D, "kernel"),
    (keras.layers.Conv2D, "kernel"),
    (keras.layers.Conv3D, "kernel"),
    (keras.layers.Conv1DTranspose, "kernel"),
    (keras.layers.Conv2DTranspose, "kernel"),
    (keras.layers.Conv3DTranspose, "kernel"),
    (keras.layers.SeparableConv1D, "pointwise_kernel"),
    (keras.layers.SeparableConv2D, "pointwise_kernel"),
)
PRUNABLE_LAYERS = tuple(layer_type for layer_type, _ in PRUNABLE_KERNELS)

# Quantization-aware training (TF-MOT's default 8-bit scheme): one weight
# range per output channel for convolutions, one per kernel for Dense and
# transposed convolutions.
PER_CHANNEL_LAYERS = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
)
PER_TENSOR_LAYERS = (
    keras.layers.Dense,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
)
QUANTIZABLE_LAYERS = PER_CHANNEL_LAYERS + PER_TENSOR_LAYERS


def _kernel_name(layer):
    for layer_type, name in PRUNABLE_KERNELS:
        if isinstance(layer, layer_type):
            return name
    return None


def kernel_variable(layer):
    """The kernel variable of a Dense / Conv layer (not its LoRA sum).

    `Dense.kernel` is a computed tensor when LoRA is on; the variable
    itself is the layer weight named `"kernel"` (`"pointwise_kernel"` for a
    separable convolution).

    Args:
        layer: `keras.layers.Layer` of a type in `PRUNABLE_LAYERS`, built.

    Returns:
        `keras.Variable`.

    Example:

    >>> import keras
    >>> from keras_vae.compression import kernels
    >>> layer = keras.layers.Dense(3, name="head")
    >>> layer.build((None, 2))
    >>> kernels.kernel_variable(layer).path
    'head/kernel'
    """
    name = _kernel_name(layer)
    for variable in layer.weights if name else ():
        if variable.name == name:
            return variable
    raise ValueError(
        "Expected a built Dense, Conv or SeparableConv layer with a float "
        f"kernel. Received: layer={getattr(layer, 'name', layer)!r}"
    )


def walk_layers(model):
    """`(path, layer)` for every layer of a VAE's encoder and decoder.

    A wrapper (such as a QAT `QuantizeWrapper`) stands for the layer it
    wraps, under that layer's name, so paths do not change with QAT.

    Args:
        model: `keras_vae.VAE` or `keras.Model`.

    Yields:
        tuple of (str, `keras.layers.Layer`).
    """
    for prefix, sub_model in _sub_models(model):
        yield from _walk(sub_model, prefix)


def _walk(model, prefix):
    for layer in model.layers:
        name = f"{prefix}/{layer.name}"
        if isinstance(layer, keras.Model):
            yield from _walk(layer, name)
        elif isinstance(layer, keras.layers.Wrapper):
            yield f"{prefix}/{layer.layer.name}", layer.layer
        else:
            yield name, layer


def _sub_models(model):
    if hasattr(model, "encoder") and hasattr(model, "decoder"):
        return (("encoder", model.encoder), ("decoder", model.decoder))
    return ((model.name, model),)


def _is_prunable(layer):
    return (
        isinstance(layer, PRUNABLE_LAYERS)
        and layer.built
        and not getattr(layer, "quantization_mode", None)
    )


def prunable_layers(model):
    """Prunable layers of a VAE (or any functional model) by path.

    Paths are `"encoder/<layer name>"` and `"decoder/<layer name>"` for a
    VAE (nested models add their names), in the order of the layers.

    Args:
        model: `keras_vae.VAE` or `keras.Model`.

    Returns:
        dict mapping each path to a Dense / Conv / SeparableConv layer.

    Example:

    >>> import keras_vae
    >>> from keras_vae.compression import prunable_layers
    >>> model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(16,))
    >>> list(prunable_layers(model))[:1]
    ['encoder/encoder_dense_0']
    """
    return {
        path: layer for path, layer in walk_layers(model) if _is_prunable(layer)
    }


def unprunable_layers(model):
    """Layers with kernel-like weights (rank >= 2) that pruning leaves alone.

    Args:
        model: `keras_vae.VAE` or `keras.Model`.

    Returns:
        dict mapping each path to the layer (e.g. a `DepthwiseConv2D`).
    """
    return {
        path: layer
        for path, layer in walk_layers(model)
        if not _is_prunable(layer)
        and any(len(variable.shape) >= 2 for variable in layer.weights)
    }


def _describe(layers):
    return ", ".join(
        f"{path} ({type(layer).__name__})" for path, layer in layers.items()
    )


_SUPPORTED = (
    "Dense, Conv1D/2D/3D, Conv1D/2D/3DTranspose and SeparableConv1D/2D "
    "(pointwise kernel), as TF-MOT"
)


def select_layers(model, layers=None, warn=True):
    """Paths of the layers a pruning callback's `layers` argument selects.

    Args:
        model: `keras_vae.VAE` or `keras.Model`.
        layers: None (every prunable layer), a layer name or path, a list
            of them, or a callable `layer -> bool`.
        warn: bool. Warn when layers with kernel-like weights are left
            dense because pruning does not handle their type.

    Returns:
        list of str, in the order of the layers.

    Raises:
        ValueError: a name matches no layer, or a layer pruning does not
            handle (it is never skipped silently).
    """
    available = prunable_layers(model)
    unhandled = unprunable_layers(model)
    if layers is None or callable(layers):
        wanted = (lambda layer: True) if layers is None else layers
        chosen = [path for path, layer in available.items() if wanted(layer)]
        skipped = {
            path: layer for path, layer in unhandled.items() if wanted(layer)
        }
        if skipped and warn:
            warnings.warn(
                f"Pruning leaves these layers dense: {_describe(skipped)}. "
                f"Magnitude pruning handles {_SUPPORTED}; exclude the others "
                "with `layers` to silence this warning.",
                UserWarning,
                stacklevel=3,
            )
        return chosen
    names = [layers] if isinstance(layers, str) else list(layers)
    chosen = []
    for name in names:
        refused = {
            path: layer for path, layer in unhandled.items()
            if name in (path, layer.name)
        }
        if refused:
            raise ValueError(
                f"Cannot prune {_describe(refused)}: magnitude pruning "
                f"handles {_SUPPORTED}. Remove it from `layers`. "
                f"Received: layers={layers!r}"
            )
        matches = [
            path for path, layer in available.items()
            if name in (path, layer.name)
        ]
        if not matches:
            raise ValueError(
                "Expected `layers` to name prunable layers of the encoder or "
                f"decoder: {sorted(available)}. Received: layers={layers!r}"
            )
        chosen.extend(path for path in matches if path not in chosen)
    return chosen


def kernels_by_path(model, layer_names):
    """The kernel variables of the layers at `layer_names`, in that order.

    Args:
        model: `keras_vae.VAE` or `keras.Model`.
        layer_names: list of str. Paths from `prunable_layers(model)`.

    Returns:
        list of `keras.Variable`.
    """
    available = prunable_layers(model)
    missing = [name for name in layer_names if name not in available]
    if missing or not layer_names:
        raise ValueError(
            "Expected `layer_names` to list prunable layers of the model: "
            f"{sorted(available)}. Received: layer_names={list(layer_names)}"
        )
    return [kernel_variable(available[name]) for name in layer_names]
