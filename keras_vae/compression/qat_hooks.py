"""Train-step hooks of quantization-aware training.

`quantize_aware` attaches them to the QAT copy of a model:

- `SparsityPreservation` keeps the exact zeros of a pruned, stripped model
  at zero while QAT fine-tunes it (TF-MOT's pruning-preserving QAT);
- `TiedRanges` gives the encoder's `z_mean` quantizer and the decoder's
  input quantizer one range, so the int8 `reconstruct` signature equals
  the trained graph.
"""

import keras
import numpy as np
from keras import ops

from keras_vae.compression.quantizers import ActivationQuantizer, QuantizeWrapper
from keras_vae.compression.train_step_hook import KernelMaskHook, TrainStepHook


@keras.saving.register_keras_serializable(package="keras_vae")
class SparsityPreservation(KernelMaskHook):
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

    def initial_mask(self, kernel):
        """1 where `kernel` is not zero now, 0 where it is."""
        nonzero = ops.convert_to_numpy(kernel.value) != 0
        return keras.initializers.Constant(nonzero.astype(np.float32))


@keras.saving.register_keras_serializable(package="keras_vae")
class TiedRanges(TrainStepHook):
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

    Example:

    >>> import keras_vae
    >>> from keras_vae.compression import TiedRanges, quantize_aware
    >>> qat = quantize_aware(keras_vae.models.mlp_vae((8, 8, 1), 2))
    >>> [type(hook).__name__ for hook in qat.train_step_hooks]
    ['TiedRanges']
    >>> qat.train_step_hooks[0].pairs
    [['encoder/quant_z_mean', 'decoder/quant_z']]
    """

    def __init__(self, pairs, **kwargs):
        super().__init__(**kwargs)
        self.pairs = [[str(a), str(b)] for a, b in pairs]

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
        self.check_detached()
        self.hold(
            (self._find(model, a), self._find(model, b)) for a, b in self.pairs
        )

    def after_apply(self):
        for first, second in self.targets:
            low = ops.minimum(first.range_min.value, second.range_min.value)
            high = ops.maximum(first.range_max.value, second.range_max.value)
            for quantizer in (first, second):
                quantizer.range_min.assign(low)
                quantizer.range_max.assign(high)

    def tie_now(self):
        """Tie the ranges outside a train step (eagerly, with copies)."""
        for first, second in self.targets:
            low = min(float(ops.convert_to_numpy(q.range_min))
                      for q in (first, second))
            high = max(float(ops.convert_to_numpy(q.range_max))
                       for q in (first, second))
            for quantizer in (first, second):
                quantizer.range_min.assign(low)
                quantizer.range_max.assign(high)

    def get_config(self):
        config = super().get_config()
        config.update({"pairs": [list(pair) for pair in self.pairs]})
        return config
