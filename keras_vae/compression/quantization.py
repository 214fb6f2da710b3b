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

This module is the model transform and its switch; the quantizer layers
are in `quantizers.py`, the QAT train-step hooks in `qat_hooks.py`.
"""

import keras
import numpy as np
from keras import ops

from keras_vae import _keras_internals
from keras_vae.compression import kernels as kernel_lookup
from keras_vae.compression.kernels import QUANTIZABLE_LAYERS
from keras_vae.compression.qat_hooks import SparsityPreservation, TiedRanges
from keras_vae.compression.quantizers import (
    DEFAULT_EMA_DECAY,
    ActivationQuantizer,
    QuantizeWrapper,
    SwitchableQuantizer,
    check_ema_decay,
)
from keras_vae.compression.train_step_hook import KernelMaskHook

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


def quantizer_layers(model):
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
            if isinstance(layer, SwitchableQuantizer):
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
    found = quantizer_layers(model)
    return bool(found) and all(layer.fake_quant_on for layer in found)


def set_quantization(model, enabled):
    """Switch the fake quantization of a QAT model on or off.

    Compiled train / test / predict functions are dropped so the next call
    traces the new graph.

    Args:
        model: `keras_vae.VAE` from `quantize_aware`.
        enabled: bool.
    """
    found = quantizer_layers(model)
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
        if isinstance(layer, (keras.Model, SwitchableQuantizer)):
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


def _has_zeros(layer):
    kernel = kernel_lookup.kernel_variable(layer)
    return bool(np.any(ops.convert_to_numpy(kernel.value) == 0))


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
    if quantizer_layers(model):
        raise ValueError(
            "This model is already quantization-aware; switch it with "
            "`set_quantization` or `QuantizationAwareTraining` instead of "
            f"wrapping it again. Received: model={model.name!r}"
        )
    ema_decay = check_ema_decay(ema_decay)
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
            new.assign(ops.convert_to_numpy(old))
    qat.beta_variable.assign(ops.convert_to_numpy(model.beta_variable))
    pairs = _latent_pairs(qat)
    if pairs:
        qat.add_train_step_hook(TiedRanges(pairs))
        qat.train_step_hooks[-1].tie_now()
    if preserve_sparsity:
        covered = set()
        for hook in qat.train_step_hooks:
            if isinstance(hook, KernelMaskHook):
                covered.update(hook.layer_names)
        sparse = [
            path for path, layer in kernel_lookup.prunable_layers(qat).items()
            if path not in covered and _has_zeros(layer)
        ]
        if sparse:
            qat.add_train_step_hook(SparsityPreservation(sparse))
    return qat


@keras.saving.register_keras_serializable(package="keras_vae")
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
        if not quantizer_layers(self.model):
            raise ValueError(
                "`QuantizationAwareTraining` needs a quantization-aware "
                "model: `qat = keras_vae.compression.quantize_aware(model)`, "
                "then `qat.compile(...)` and `qat.fit(..., callbacks=[...])`. "
                f"Received: model={self.model.name!r}"
            )

    def on_epoch_begin(self, epoch, logs=None):
        wanted = epoch >= self.start_epoch
        if is_quantization_aware(self.model) == wanted and all(
            layer.fake_quant_on == wanted for layer in quantizer_layers(self.model)
        ):
            return
        set_quantization(self.model, wanted)
        # The running `fit` calls `model.train_function` directly: rebuild
        # it (traced again on its next call) instead of leaving None.
        self.model.make_train_function(force=True)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["quantization"] = float(is_quantization_aware(self.model))

    def get_config(self):
        return {"start_epoch": self.start_epoch}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
