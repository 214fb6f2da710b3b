"""Int8 fake-quantization layers: activations and Dense / Conv kernels.

TF-MOT's default 8-bit scheme in Keras 3, with
`keras.quantizers.fake_quant_with_min_max_vars` (TensorFlow's FakeQuant op,
which the TFLite converter reads):

- `QuantizeWrapper`: a Dense or Conv layer whose kernel is quantized
  symmetrically over [-127, 127] from its current magnitude, per tensor
  for `Dense` and transposed convolutions, per output channel for
  `Conv1D/2D/3D`, and whose output goes through an `ActivationQuantizer`;
- `ActivationQuantizer`: asymmetric per-tensor quantization over 256
  levels with a moving-average range.

Both carry a saved on/off switch (`SwitchableQuantizer`). The model
transform that inserts them is `keras_vae.compression.quantize_aware`.
"""

import keras
from keras import ops

from keras_vae import _keras_internals
from keras_vae.compression import kernels as kernel_lookup
from keras_vae.compression.kernels import (
    PER_CHANNEL_LAYERS,
    PER_TENSOR_LAYERS,
    QUANTIZABLE_LAYERS,
)

DEFAULT_EMA_DECAY = 0.999
# A kernel that is all zeros (fully pruned) still needs a non-empty range.
_MIN_RANGE = 1e-6


def check_ema_decay(value):
    """`ema_decay` as a float in [0, 1), or a `ValueError`."""
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


class SwitchableQuantizer(keras.layers.Layer):
    """Base of layers with a saved on/off switch for fake quantization.

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
            int(ops.convert_to_numpy(self.quantize_enabled))
        )


@keras.saving.register_keras_serializable(package="keras_vae")
class ActivationQuantizer(SwitchableQuantizer):
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
        self.ema_decay = check_ema_decay(ema_decay)
        self.enabled = bool(enabled)
        self._add_switch(enabled)
        # Ranges stay float32 under a mixed policy (`autocast=False`): a
        # bfloat16 range would move the int8 grid by up to 0.4%. Under a
        # tf.distribute strategy each replica's update is averaged
        # (`aggregation="mean"`), so all replicas keep the same ranges.
        self.range_min = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(-6.0),
            trainable=False, name="range_min", dtype="float32", autocast=False,
            aggregation="mean",
        )
        self.range_max = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(6.0),
            trainable=False, name="range_max", dtype="float32", autocast=False,
            aggregation="mean",
        )
        self.range_initialized = self.add_weight(
            shape=(), initializer="zeros", trainable=False,
            name="range_initialized", dtype="float32", autocast=False,
            aggregation="mean",
        )
        self.built = True

    def call(self, inputs, training=False):
        inputs = ops.convert_to_tensor(inputs)
        # TensorFlow's FakeQuant takes float32 only: quantize in float32 and
        # return the compute dtype of a mixed policy (bfloat16, float16).
        values = ops.cast(inputs, "float32")
        range_min = self.range_min.value
        range_max = self.range_max.value
        if training:
            batch_min = ops.minimum(ops.min(values), 0.0)
            batch_max = ops.maximum(ops.max(values), 0.0)
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
        outputs = keras.quantizers.fake_quant_with_min_max_vars(
            values, range_min, range_max, num_bits=8, narrow_range=False
        )
        return ops.cast(outputs, inputs.dtype)

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
class QuantizeWrapper(keras.layers.Wrapper, SwitchableQuantizer):
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
        self.ema_decay = check_ema_decay(ema_decay)
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
        return kernel_lookup.kernel_variable(self.layer)

    def quantized_kernel(self):
        """The kernel as the int8 model sees it (dequantized, float32)."""
        kernel = ops.cast(ops.convert_to_tensor(self.kernel_variable), "float32")
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
        kernel = ops.cast(self.quantized_kernel(), self.compute_dtype)
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
