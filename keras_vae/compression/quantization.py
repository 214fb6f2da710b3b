"""Quantization-aware training (QAT) of a VAE, TFLite int8 scheme, Keras 3.

`quantize_aware(model)` returns a copy of a `keras_vae.VAE` whose encoder
and decoder simulate int8 inference in the forward pass with
`keras.quantizers.fake_quant_with_min_max_vars` (TensorFlow's FakeQuant op,
which the TFLite converter reads), following TF-MOT's default 8-bit scheme:

- weights: symmetric, narrow range ([-127, 127]), the range taken from the
  current kernel at every step; one range per kernel for `Dense` and
  `Conv2DTranspose`, one per output channel for `Conv1D/2D/3D`;
- activations: asymmetric per tensor, at the model inputs and after each
  quantized layer (after its activation function), with ranges kept as
  exponential moving averages of the batch min/max (always including 0).

The `QuantizationAwareTraining(start_epoch)` callback switches the fake
quantization on at a chosen epoch, so training can be float first and
quantized last; while it is off, the activation ranges are still
observed. Pruned zeros survive QAT: the pruning hook of a pruned model is
carried over (its masks keep applying after each update), and a model
whose pruning was stripped gets a `SparsityPreservation` hook that keeps its
exact zeros at zero. The model saves and loads as a `.keras` file, and
`keras_vae.export.to_tflite` converts it to int8 with the trained ranges.
"""

import keras
import numpy as np
from keras import ops

from keras_vae import _keras_internals
from keras_vae.compression import pruning

PER_CHANNEL_LAYERS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
PER_TENSOR_LAYERS = (
    keras.layers.Dense,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
)
QUANTIZABLE_LAYERS = PER_CHANNEL_LAYERS + PER_TENSOR_LAYERS
# Layers whose int8 kernels use the scale of their input (reshapes, crops,
# nearest upsampling, max pooling, dropout): no range of their own needed.
PASSTHROUGH_LAYERS = (
    keras.layers.InputLayer,
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.Permute,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.Cropping3D,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.UpSampling1D,
    keras.layers.UpSampling2D,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.Dropout,
    keras.layers.Identity,
)
DEFAULT_EMA_DECAY = 0.999
# A kernel that is all zeros (fully pruned) still needs a non-empty range.
_MIN_RANGE = 1e-6


def _check_ema_decay(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = None
    if value is None or not 0.0 <= value < 1.0:
        raise ValueError(
            "Expected `ema_decay` in [0, 1): the weight of the old range in "
            f"the moving average. Received: ema_decay={value!r}"
        )
    return value


class _Switchable(keras.layers.Layer):
    """A layer with a saved on/off switch for its fake quantization.

    The switch is a Python flag read when the step is traced (so an "off"
    layer adds no FakeQuant op at all) mirrored in a non-trainable variable
    so that `.keras` files and checkpoints keep it.
    """

    def _add_switch(self, enabled):
        self._fake_quant_on = bool(enabled)
        self.quantize_enabled = self.add_weight(
            shape=(),
            dtype="int32",
            initializer=keras.initializers.Constant(int(bool(enabled))),
            trainable=False,
            name="quantize_enabled",
        )

    @property
    def fake_quant_on(self):
        """bool. Whether the forward pass fake-quantizes."""
        return self._fake_quant_on

    def set_fake_quant(self, enabled):
        """Switch fake quantization on or off (retrace compiled steps)."""
        self._fake_quant_on = bool(enabled)
        self.quantize_enabled.assign(int(self._fake_quant_on))

    def load_own_variables(self, store):
        super().load_own_variables(store)
        self._fake_quant_on = bool(
            int(ops.convert_to_numpy(self.quantize_enabled.value))
        )


@keras.saving.register_keras_serializable(package="keras_vae")
class ActivationQuantizer(_Switchable):
    """Fake-quantize a tensor to int8 with a moving-average range.

    Asymmetric per-tensor quantization over 256 levels, as TF-MOT's
    `MovingAverageQuantizer` (8 bits, per tensor, asymmetric). In training
    the range is updated from each batch's min and max (extended to hold
    0, which int8 must represent exactly); the first batch sets it directly
    instead of averaging with an arbitrary initial range. In inference the
    stored range is used.

    Args:
        ema_decay: float in [0, 1). Weight of the old range in the moving
            average. Defaults to 0.999 as in TF-MOT.
        enabled: bool. Fake-quantize (True) or only observe the range.

    Example:

    >>> import numpy as np
    >>> from keras_vae.compression import ActivationQuantizer
    >>> quantizer = ActivationQuantizer()
    >>> y = quantizer(np.linspace(-1, 1, 5, dtype="float32")[None],
    ...               training=True)
    >>> float(quantizer.range_min.numpy()), float(quantizer.range_max.numpy())
    (-1.0, 1.0)
    """

    def __init__(self, ema_decay=DEFAULT_EMA_DECAY, enabled=True, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.ema_decay = _check_ema_decay(ema_decay)
        self.enabled = bool(enabled)
        self._add_switch(enabled)
        self.range_min = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(-6.0),
            trainable=False, name="range_min",
        )
        self.range_max = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(6.0),
            trainable=False, name="range_max",
        )
        self.range_initialized = self.add_weight(
            shape=(), initializer="zeros", trainable=False,
            name="range_initialized",
        )
        self.built = True

    def call(self, inputs, training=False):
        inputs = ops.convert_to_tensor(inputs)
        range_min = self.range_min.value
        range_max = self.range_max.value
        if training:
            batch_min = ops.minimum(ops.cast(ops.min(inputs), "float32"), 0.0)
            batch_max = ops.maximum(ops.cast(ops.max(inputs), "float32"), 0.0)
            started = ops.greater(self.range_initialized.value, 0.5)
            decay = self.ema_decay
            range_min = ops.where(
                started, decay * range_min + (1.0 - decay) * batch_min, batch_min
            )
            range_max = ops.where(
                started, decay * range_max + (1.0 - decay) * batch_max, batch_max
            )
            self.range_min.assign(range_min)
            self.range_max.assign(range_max)
            self.range_initialized.assign(1.0)
        if not self._fake_quant_on:
            return inputs
        range_max = ops.maximum(range_max, range_min + _MIN_RANGE)
        return keras.quantizers.fake_quant_with_min_max_vars(
            inputs, range_min, range_max, num_bits=8, narrow_range=False
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"ema_decay": self.ema_decay, "enabled": self.enabled})
        return config


def _weight_range(kernel, axis):
    """Symmetric range: [-max|w|, max|w|] per tensor or per `axis`."""
    magnitude = ops.abs(kernel)
    if axis is None:
        bound = ops.max(magnitude)
    else:
        axes = [i for i in range(len(kernel.shape)) if i != axis % len(kernel.shape)]
        bound = ops.max(magnitude, axis=axes)
    bound = ops.maximum(bound, _MIN_RANGE)
    return -bound, bound


@keras.saving.register_keras_serializable(package="keras_vae")
class QuantizeWrapper(keras.layers.Wrapper, _Switchable):
    """Run a Dense or Conv layer with int8 fake-quantized kernel and output.

    The kernel is quantized symmetrically over [-127, 127] (narrow range)
    from its current magnitude at every call, per tensor for `Dense` and
    transposed convolutions, per output channel for `Conv1D/2D/3D` (TF-MOT's
    default 8-bit scheme). The output, after the layer's activation, goes
    through an `ActivationQuantizer`. The wrapped layer keeps its own
    variables, so pruning hooks and `strip_pruning` see the same kernels.

    Args:
        layer: `keras.layers.Dense`, `Conv1D`, `Conv2D`, `Conv3D`,
            `Conv1DTranspose` or `Conv2DTranspose`.
        ema_decay: float in [0, 1). Moving-average decay of the output range.
        enabled: bool. Fake-quantize (True) or run the float layer.

    Example:

    >>> import keras, numpy as np
    >>> from keras_vae.compression import QuantizeWrapper
    >>> layer = QuantizeWrapper(keras.layers.Dense(4))
    >>> tuple(layer(np.ones((2, 3), "float32")).shape)
    (2, 4)
    """

    def __init__(self, layer, ema_decay=DEFAULT_EMA_DECAY, enabled=True, **kwargs):
        if not isinstance(layer, QUANTIZABLE_LAYERS):
            raise ValueError(
                "Expected `layer` to be a Dense, Conv1D/2D/3D or "
                "Conv1D/2DTranspose layer. Wrap only those; other layers get "
                f"an `ActivationQuantizer` after them. Received: layer={layer!r}"
            )
        if getattr(layer, "lora_enabled", False) or getattr(
            layer, "quantization_mode", None
        ):
            raise ValueError(
                "Expected a float layer without LoRA or Keras weight "
                "quantization; merge or remove them before QAT. "
                f"Received: layer={layer.name!r}"
            )
        kwargs.setdefault("name", f"quant_{layer.name}")
        super().__init__(layer, **kwargs)
        self.ema_decay = _check_ema_decay(ema_decay)
        self.enabled = bool(enabled)
        self._add_switch(enabled)
        self.output_quantizer = ActivationQuantizer(
            ema_decay=self.ema_decay, enabled=enabled, name="output_quantizer"
        )
        self.per_channel = isinstance(layer, PER_CHANNEL_LAYERS)

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.built = True

    def set_fake_quant(self, enabled):
        super().set_fake_quant(enabled)
        self.output_quantizer.set_fake_quant(enabled)

    @property
    def kernel_variable(self):
        """The wrapped layer's kernel variable."""
        return pruning._kernel_of(self.layer)

    def quantized_kernel(self):
        """The kernel as the int8 model sees it (dequantized)."""
        kernel = ops.convert_to_tensor(self.kernel_variable)
        if not self._fake_quant_on:
            return kernel
        axis = -1 if self.per_channel else None
        low, high = _weight_range(kernel, axis)
        return keras.quantizers.fake_quant_with_min_max_vars(
            kernel, low, high, num_bits=8, narrow_range=True, axis=axis
        )

    def _bias(self, layer, rank):
        if layer.data_format == "channels_last":
            shape = (1,) * (rank + 1) + (layer.filters,)
        else:
            shape = (1, layer.filters) + (1,) * rank
        return ops.reshape(layer.bias, shape)

    def call(self, inputs, training=False):
        layer = self.layer
        kernel = self.quantized_kernel()
        if isinstance(layer, keras.layers.Dense):
            outputs = ops.matmul(inputs, kernel)
            if layer.bias is not None:
                outputs = ops.add(outputs, layer.bias)
        elif isinstance(layer, PER_TENSOR_LAYERS):  # transposed convolutions
            outputs = ops.conv_transpose(
                inputs, kernel, strides=list(layer.strides),
                padding=layer.padding, output_padding=layer.output_padding,
                dilation_rate=layer.dilation_rate,
                data_format=layer.data_format,
            )
            if layer.use_bias:
                outputs = ops.add(outputs, self._bias(layer, layer.rank))
        else:
            padding = layer.padding
            if padding == "causal":
                inputs = ops.pad(inputs, _keras_internals.causal_padding(layer))
                padding = "valid"
            outputs = ops.conv(
                inputs, kernel, strides=list(layer.strides), padding=padding,
                dilation_rate=layer.dilation_rate,
                data_format=layer.data_format,
            )
            if layer.use_bias:
                outputs = ops.add(outputs, self._bias(layer, layer.rank))
        if layer.activation is not None:
            outputs = layer.activation(outputs)
        return self.output_quantizer(outputs, training=training)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"ema_decay": self.ema_decay, "enabled": self.enabled})
        return config


@keras.saving.register_keras_serializable(package="keras_vae")
class SparsityPreservation(keras.layers.Layer):
    """Train-step hook keeping the exact zeros of chosen kernels at zero.

    TF-MOT's pruning-preserving QAT in the form of a hook (see
    `keras_vae.VAE.add_train_step_hook`): when attached it records where
    each kernel is exactly zero (a pruned, stripped model) in a saved
    mask, and after every optimizer update multiplies the kernel by it.

    Args:
        layer_names: list of str. Paths from
            `keras_vae.compression.prunable_layers(model)`.

    Example:

    >>> import keras_vae
    >>> from keras_vae.compression import SparsityPreservation
    >>> model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(16,))
    >>> model.add_train_step_hook(SparsityPreservation(["decoder/decoder_output"]))
    >>> float(model.train_step_hooks[0].masks[0].numpy().mean())
    1.0
    """

    def __init__(self, layer_names, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.layer_names = [str(name) for name in layer_names]
        self._refs = pruning._Refs([])

    def attach(self, model):
        """Create one mask per kernel, 1 where the kernel is not zero."""
        available = pruning.prunable_layers(model)
        missing = [name for name in self.layer_names if name not in available]
        if missing or not self.layer_names:
            raise ValueError(
                "Expected `layer_names` to list prunable layers of the model: "
                f"{sorted(available)}. Received: layer_names={self.layer_names}"
            )
        kernels = [pruning._kernel_of(available[name]) for name in self.layer_names]
        self.masks = []
        for index, kernel in enumerate(kernels):
            nonzero = (ops.convert_to_numpy(kernel.value) != 0).astype(
                kernel.dtype
            )
            self.masks.append(
                self.add_weight(
                    shape=kernel.shape,
                    dtype=kernel.dtype,
                    initializer=keras.initializers.Constant(nonzero),
                    trainable=False,
                    name=f"mask_{index}",
                )
            )
        self._refs.items = kernels
        self.built = True

    @property
    def kernels(self):
        """list of the kernel variables kept sparse."""
        return list(self._refs.items)

    def before_train_step(self):
        pass

    def after_apply(self):
        for kernel, mask in zip(self._refs.items, self.masks):
            kernel.assign(kernel.value * mask.value)

    def call(self, inputs):
        return inputs

    def get_config(self):
        config = super().get_config()
        config.update({"layer_names": list(self.layer_names)})
        return config


@keras.saving.register_keras_serializable(package="keras_vae")
class TiedRanges(keras.layers.Layer):
    """Train-step hook giving pairs of activation quantizers one range.

    The encoder's `z_mean` output and the decoder's input are quantized
    back to back in an exported `reconstruct` signature. The TFLite
    converter folds two consecutive FakeQuant ops into one but keeps the
    decoder's bias scaled for the second range, which corrupts the int8
    result when the ranges differ. After every optimizer update this hook
    sets both quantizers of each pair to the union of their ranges, so
    the second quantization is exact (a no-op) and the folded graph equals
    the trained one. `quantize_aware` adds it for every encoder output that
    the decoder reads.

    Args:
        pairs: list of `[path_a, path_b]`, each path `"encoder/<layer>"` or
            `"decoder/<layer>"` naming an `ActivationQuantizer` or a
            `QuantizeWrapper` (its output quantizer).
    """

    def __init__(self, pairs, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.pairs = [[str(a), str(b)] for a, b in pairs]
        self._refs = pruning._Refs([])

    def _find(self, model, path):
        prefix, _, name = path.partition("/")
        sub_model = getattr(model, prefix, None)
        try:
            layer = sub_model.get_layer(name)
        except (AttributeError, ValueError):
            layer = None
        if isinstance(layer, QuantizeWrapper):
            layer = layer.output_quantizer
        if not isinstance(layer, ActivationQuantizer):
            raise ValueError(
                "Expected each path in `pairs` to name an activation "
                "quantizer of the encoder or decoder of a quantization-aware "
                f"model. Received: path={path!r}"
            )
        return layer

    def attach(self, model):
        """Resolve the quantizers of each pair on `model`."""
        self._refs.items = [
            (self._find(model, a), self._find(model, b)) for a, b in self.pairs
        ]
        self.built = True

    def before_train_step(self):
        pass

    def after_apply(self):
        for first, second in self._refs.items:
            low = ops.minimum(first.range_min.value, second.range_min.value)
            high = ops.maximum(first.range_max.value, second.range_max.value)
            for quantizer in (first, second):
                quantizer.range_min.assign(low)
                quantizer.range_max.assign(high)

    def tie_now(self):
        """Tie the ranges outside a train step (eagerly, with copies)."""
        for first, second in self._refs.items:
            low = min(float(ops.convert_to_numpy(q.range_min.value))
                      for q in (first, second))
            high = max(float(ops.convert_to_numpy(q.range_max.value))
                       for q in (first, second))
            for quantizer in (first, second):
                quantizer.range_min.assign(low)
                quantizer.range_max.assign(high)

    def call(self, inputs):
        return inputs

    def get_config(self):
        config = super().get_config()
        config.update({"pairs": [list(pair) for pair in self.pairs]})
        return config


def _latent_pairs(model):
    """Paths of (encoder output quantizer, decoder input quantizer) pairs."""
    producer = _keras_internals.producing_operation

    decoder_inputs = [
        layer for layer in model.decoder.layers
        if isinstance(layer, ActivationQuantizer)
        and isinstance(producer(layer.input), keras.layers.InputLayer)
    ]
    encoder_outputs = [producer(t) for t in model.encoder.outputs]
    pairs = []
    if encoder_outputs and decoder_inputs:
        # The decoder reads z ~ q(z | x) around `z_mean`, the first output;
        # `reconstruct` feeds it `z_mean` directly.
        head = encoder_outputs[0]
        if isinstance(head, (QuantizeWrapper, ActivationQuantizer)):
            pairs.append([f"encoder/{head.name}", f"decoder/{decoder_inputs[0].name}"])
    return pairs


def quantizers(model):
    """Every `QuantizeWrapper` and `ActivationQuantizer` inside `model`."""
    found = []
    sub_models = (
        (model.encoder, model.decoder)
        if hasattr(model, "encoder") and hasattr(model, "decoder")
        else (model,)
    )
    stack = list(sub_models)
    while stack:
        current = stack.pop(0)
        for layer in getattr(current, "layers", ()):
            if isinstance(layer, _Switchable):
                found.append(layer)
            elif isinstance(layer, keras.Model):
                stack.append(layer)
    return found


def is_quantization_aware(model):
    """True when `model` has fake-quantizers switched on (a QAT model).

    `keras_vae.export.to_tflite` uses it to convert with the trained ranges
    instead of calibrating on a representative dataset.

    Example:

    >>> import keras_vae
    >>> from keras_vae.compression import is_quantization_aware
    >>> is_quantization_aware(keras_vae.models.mlp_vae((8, 8, 1), 2))
    False
    """
    found = quantizers(model)
    return bool(found) and all(layer.fake_quant_on for layer in found)


def set_quantization(model, enabled):
    """Switch the fake quantization of a QAT model on or off.

    Compiled train / test / predict functions are dropped so the next call
    traces the new graph.

    Args:
        model: `keras_vae.VAE` from `quantize_aware`.
        enabled: bool.
    """
    found = quantizers(model)
    if not found:
        raise ValueError(
            "Expected a model from `keras_vae.compression.quantize_aware` "
            f"(it has no fake-quantizers). Received: model={model.name!r}"
        )
    _keras_internals.sync_jax_state(model)
    for layer in found:
        layer.set_fake_quant(enabled)
    model.test_function = None
    model.predict_function = None


def _input_quantizer_call(cache, ema_decay, enabled):
    """`clone_model` call function adding the activation quantizers."""

    def quantize_inputs(value):
        def one(tensor):
            if not isinstance(tensor, keras.KerasTensor):
                return tensor
            operation = _keras_internals.producing_operation(tensor)
            if not isinstance(operation, keras.layers.InputLayer):
                return tensor
            key = id(tensor)
            if key not in cache:
                name = f"quant_{operation.name}"
                cache[key] = ActivationQuantizer(
                    ema_decay=ema_decay, enabled=enabled, name=name
                )(tensor)
            return cache[key]

        return keras.tree.map_structure(one, value)

    def call_function(layer, *args, **kwargs):
        args = quantize_inputs(args)
        kwargs = quantize_inputs(kwargs)
        outputs = layer(*args, **kwargs)
        if isinstance(layer, (QuantizeWrapper, keras.Model)) or isinstance(
            layer, PASSTHROUGH_LAYERS
        ):
            return outputs
        return ActivationQuantizer(
            ema_decay=ema_decay, enabled=enabled, name=f"quant_{layer.name}"
        )(outputs)

    return call_function


def _quantize_functional(model, ema_decay, enabled):
    originals = {}

    def clone_function(layer):
        copy = layer.__class__.from_config(layer.get_config())
        originals[id(copy)] = layer
        if isinstance(layer, QUANTIZABLE_LAYERS):
            return QuantizeWrapper(copy, ema_decay=ema_decay, enabled=enabled)
        return copy

    for layer in model.layers:
        if isinstance(layer, (keras.Model, _Switchable)):
            raise ValueError(
                "`quantize_aware` handles flat functional encoders and "
                "decoders of keras layers (no nested models, not quantized "
                f"twice). Received: layer={layer.name!r} in {model.name!r}"
            )
    clone = keras.models.clone_model(
        model,
        clone_function=clone_function,
        call_function=_input_quantizer_call({}, ema_decay, enabled),
    )
    for layer in clone.layers:
        inner = layer.layer if isinstance(layer, QuantizeWrapper) else layer
        source = originals.get(id(inner))
        if source is not None and source.weights:
            inner.set_weights(source.get_weights())
    return clone


def quantize_aware(model, enabled=True, preserve_sparsity=True, ema_decay=DEFAULT_EMA_DECAY):
    """Copy a VAE with int8 fake quantization in its encoder and decoder.

    TF-MOT's `quantize_model` for keras-vae models in Keras 3. Every Dense
    and Conv layer is wrapped in a `QuantizeWrapper` (int8 kernel, output
    range), the encoder and decoder inputs and the outputs of other
    layers with their own values get an `ActivationQuantizer`; reshapes,
    crops and upsampling keep their input's range. All weights are copied.

    Pruning is preserved: a `MagnitudePruning` hook is carried over with
    its masks and step (the schedule goes on), and with
    `preserve_sparsity=True` a model without one (stripped after pruning)
    gets a `SparsityPreservation` hook over every kernel that has exact
    zeros, so they stay zero while QAT fine-tunes.

    Compile the returned model and train it for a few epochs (a lower
    learning rate is usual), optionally with `QuantizationAwareTraining`
    to switch quantization on at a later epoch. Export with
    `keras_vae.export.to_tflite(qat_model, path)`: the int8 file uses the
    trained ranges, no calibration data needed.

    Args:
        model: `keras_vae.VAE` with functional encoder and decoder.
        enabled: bool. Start with fake quantization on (default) or off
            (the callback switches it on).
        preserve_sparsity: bool. Keep the zeros of a pruned (stripped)
            model at zero during QAT.
        ema_decay: float in [0, 1). Moving-average decay of the
            activation ranges (0.999 as in TF-MOT).

    Returns:
        A new, uncompiled `keras_vae.VAE` of the same class.

    Example:

    >>> import keras_vae
    >>> from keras_vae.compression import quantize_aware
    >>> model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(16,))
    >>> qat = quantize_aware(model)
    >>> qat.encoder.get_layer("quant_encoder_dense_0").layer.name
    'encoder_dense_0'
    """
    if not (hasattr(model, "encoder") and hasattr(model, "decoder")):
        raise ValueError(
            "Expected a `keras_vae.VAE` (a model with `encoder` and "
            f"`decoder`). Received: model={model!r}"
        )
    if quantizers(model):
        raise ValueError(
            "This model is already quantization-aware; switch it with "
            "`set_quantization` or `QuantizationAwareTraining` instead of "
            f"wrapping it again. Received: model={model.name!r}"
        )
    ema_decay = _check_ema_decay(ema_decay)
    _keras_internals.sync_jax_state(model)
    encoder = _quantize_functional(model.encoder, ema_decay, enabled)
    decoder = _quantize_functional(model.decoder, ema_decay, enabled)
    config = model.get_config()
    config["encoder"] = encoder
    config["decoder"] = decoder
    hooks = list(model.train_step_hooks)
    config["train_step_hooks"] = [
        keras.saving.serialize_keras_object(hook) for hook in hooks
    ]
    qat = type(model).from_config(config)
    # Weights outside the encoder/decoder (beta, likelihood, prior) and the
    # hooks' masks and counters, in the same order as in the source.
    for source, target in (
        (model.likelihood, qat.likelihood),
        (model.prior, qat.prior),
        *zip(hooks, qat.train_step_hooks),
    ):
        for old, new in zip(source.weights, target.weights):
            new.assign(ops.convert_to_numpy(old.value))
    qat.beta_variable.assign(ops.convert_to_numpy(model.beta_variable.value))
    pairs = _latent_pairs(qat)
    if pairs:
        qat.add_train_step_hook(TiedRanges(pairs))
        qat.train_step_hooks[-1].tie_now()
    if preserve_sparsity:
        covered = set()
        for hook in qat.train_step_hooks:
            covered.update(getattr(hook, "layer_names", ()))
        sparse = [
            path for path, layer in pruning.prunable_layers(qat).items()
            if path not in covered
            and np.any(ops.convert_to_numpy(pruning._kernel_of(layer).value) == 0)
        ]
        if sparse:
            qat.add_train_step_hook(SparsityPreservation(sparse))
    return qat


class QuantizationAwareTraining(keras.callbacks.Callback):
    """Switch a QAT model's fake quantization on from `start_epoch`.

    Epochs before `start_epoch` train the float model (the activation
    ranges are still observed, so they are warm when quantization starts);
    from `start_epoch` on, the forward pass simulates int8. Epoch numbers
    are those of `fit` (pass `initial_epoch` when resuming by hand;
    `BackupAndRestore` does it for you). The switch is saved with the
    model. On a model that is not quantization-aware yet, it raises and
    tells you to call `quantize_aware` first (a callback cannot replace
    the model `fit` is training).

    Args:
        start_epoch: int >= 0. First epoch with fake quantization.

    Example:

    >>> import keras, numpy as np, keras_vae
    >>> from keras_vae.compression import (QuantizationAwareTraining,
    ...                                    quantize_aware)
    >>> model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(16,))
    >>> qat = quantize_aware(model, enabled=False)
    >>> qat.compile(optimizer="adam")
    >>> x = np.random.default_rng(0).uniform(size=(64, 8, 8, 1)).astype("float32")
    >>> _ = qat.fit(x, epochs=2, verbose=0,
    ...             callbacks=[QuantizationAwareTraining(start_epoch=1)])
    >>> keras_vae.compression.is_quantization_aware(qat)
    True
    """

    def __init__(self, start_epoch=0):
        super().__init__()
        if isinstance(start_epoch, bool) or not isinstance(start_epoch, int) or start_epoch < 0:
            raise ValueError(
                "Expected `start_epoch` to be an int >= 0. "
                f"Received: start_epoch={start_epoch!r}"
            )
        self.start_epoch = start_epoch

    def on_train_begin(self, logs=None):
        if not quantizers(self.model):
            raise ValueError(
                "`QuantizationAwareTraining` needs a quantization-aware "
                "model: `qat = keras_vae.compression.quantize_aware(model)`, "
                "then `qat.compile(...)` and `qat.fit(..., callbacks=[...])`. "
                f"Received: model={self.model.name!r}"
            )

    def on_epoch_begin(self, epoch, logs=None):
        wanted = epoch >= self.start_epoch
        if is_quantization_aware(self.model) == wanted and all(
            layer.fake_quant_on == wanted for layer in quantizers(self.model)
        ):
            return
        set_quantization(self.model, wanted)
        # The running `fit` calls `model.train_function` directly: rebuild
        # it (traced again on its next call) instead of leaving None.
        self.model.make_train_function(force=True)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["quantization"] = float(is_quantization_aware(self.model))
