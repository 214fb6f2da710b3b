"""Compression objects keep the Keras contract: config, `.keras`, bfloat16.

Every schedule, hook, quantizer layer and callback of
`keras_vae.compression` goes through `get_config` -> JSON -> `from_config`
unchanged; a model carrying all three kinds of hooks saves, loads and
trains on; pruning and QAT train under `mixed_bfloat16` with finite
metrics. The JAX-backend bfloat16 run is in
`test_pruning.py::test_pruning_state_qat_and_bfloat16_on_the_jax_backend` (one
subprocess for all JAX checks).
"""

import json

import keras
import numpy as np
import pytest

import keras_vae
from keras_vae.compression import (
    ActivationQuantizer,
    ConstantSparsity,
    MagnitudePruning,
    PolynomialDecay,
    PruningCallback,
    QuantizationAwareTraining,
    QuantizeWrapper,
    SparsityPreservation,
    TiedRanges,
    TrainStepHook,
    is_quantization_aware,
    pruning_hooks,
    quantize_aware,
)


def _json_round_trip(obj):
    config = keras.saving.serialize_keras_object(obj)
    clone = keras.saving.deserialize_keras_object(json.loads(json.dumps(config)))
    assert type(clone) is type(obj)
    assert clone.get_config() == obj.get_config()
    return clone


CASES = {
    "ConstantSparsity": lambda: ConstantSparsity(0.3, 5, 50, frequency=5),
    "PolynomialDecay": lambda: PolynomialDecay(0.1, 0.9, 0, 100, power=2,
                                               frequency=7),
    "MagnitudePruning": lambda: MagnitudePruning(
        PolynomialDecay(0.0, 0.5, 0, 10, frequency=2),
        ["encoder/encoder_dense_0", "decoder/decoder_output"],
        block_size=(2, 1), name="pruning"),
    "SparsityPreservation": lambda: SparsityPreservation(
        ["decoder/decoder_output"], name="keep_zeros"),
    "TiedRanges": lambda: TiedRanges([["encoder/quant_z_mean",
                                       "decoder/quant_z"]]),
    "ActivationQuantizer": lambda: ActivationQuantizer(ema_decay=0.9,
                                                       enabled=False),
    "QuantizeWrapper": lambda: QuantizeWrapper(
        keras.layers.Conv2D(3, 2, activation="relu"), ema_decay=0.5),
    "PruningCallback": lambda: PruningCallback(
        ConstantSparsity(0.5, 0), layers=["decoder_output"], block_size=(1, 2)),
    "QuantizationAwareTraining": lambda: QuantizationAwareTraining(start_epoch=3),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_compression_objects_round_trip_through_json_config(name):
    original = CASES[name]()
    clone = _json_round_trip(original)
    if isinstance(original, TrainStepHook):
        assert clone.trainable is False and not clone.attached
    if name == "PolynomialDecay":
        for step in (0, 3, 7, 50, 100):
            assert float(clone.sparsity(step)) == float(original.sparsity(step))
    if name == "QuantizeWrapper":
        assert clone.per_channel and clone.layer.activation is keras.activations.relu
        assert clone.ema_decay == 0.5 and clone.output_quantizer.ema_decay == 0.5


def test_a_callable_layer_filter_has_no_config():
    with pytest.raises(ValueError, match="callable `layers`"):
        PruningCallback(ConstantSparsity(0.5, 0), layers=lambda layer: True).get_config()


def test_train_step_hook_base_needs_attach_and_attaches_once():
    with pytest.raises(NotImplementedError, match="attach"):
        TrainStepHook().attach(None)
    model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(8,))
    hook = SparsityPreservation(["decoder/decoder_output"])
    model.add_train_step_hook(hook)
    with pytest.raises(ValueError, match="already attached"):
        hook.attach(model)


def _kernel(model, path):
    from keras_vae.compression import kernels

    return kernels.kernel_variable(kernels.prunable_layers(model)[path]).numpy()


def test_model_with_every_hook_saves_loads_and_trains_on(digits, tmp_path):
    (x, _), _ = digits
    x = x[:128]
    keras.utils.set_random_seed(0)
    model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(16,), seed=0)
    model.compile(optimizer="adam")
    model.fit(x, batch_size=32, epochs=1, verbose=0, callbacks=[PruningCallback(
        ConstantSparsity(0.5, 0, frequency=2), layers=["decoder_output"])])
    # Zeros outside the pruned layer: QAT keeps them with its own hook.
    layer = model.encoder.get_layer("encoder_dense_0")
    kernel = layer.kernel.numpy()
    kernel[:, :4] = 0.0
    layer.kernel.assign(kernel)
    qat = quantize_aware(model)
    assert [type(h).__name__ for h in qat.train_step_hooks] == [
        "MagnitudePruning", "TiedRanges", "SparsityPreservation"]
    qat.compile(optimizer="adam")
    qat.fit(x, batch_size=32, epochs=1, verbose=0)
    path = str(tmp_path / "hooks.keras")
    qat.save(path)
    loaded = keras.saving.load_model(path)
    assert [h.get_config() for h in loaded.train_step_hooks] == [
        h.get_config() for h in qat.train_step_hooks]
    for a, b in zip(qat.weights, loaded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                      keras.ops.convert_to_numpy(b))
    np.testing.assert_array_equal(loaded.predict(x[:8], verbose=0),
                                  qat.predict(x[:8], verbose=0))
    loaded.compile(optimizer=keras.optimizers.Adam(1e-2))
    loaded.fit(x, batch_size=32, epochs=1, verbose=0, callbacks=[PruningCallback(
        ConstantSparsity(0.5, 0, frequency=2), layers=["decoder_output"])])
    assert int(pruning_hooks(loaded)[0].pruning_step.numpy()) == 12
    assert np.mean(_kernel(loaded, "decoder/decoder_output") == 0) == 0.5
    assert np.all(_kernel(loaded, "encoder/encoder_dense_0")[:, :4] == 0)
    tied = loaded.train_step_hooks[1].targets[0]
    assert float(tied[0].range_max.numpy()) == float(tied[1].range_max.numpy())


def _finite(history):
    for name in ("loss", "reconstruction_loss", "kl_loss", "elbo"):
        assert np.all(np.isfinite(history.history[name])), (name, history.history)


def test_pruning_and_qat_train_under_mixed_bfloat16():
    x = np.random.default_rng(0).uniform(size=(32, 8, 8, 1)).astype("float32")
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(16,), seed=0)
        model.compile(optimizer="adam")
        history = model.fit(x, batch_size=16, epochs=1, verbose=0, callbacks=[
            PruningCallback(ConstantSparsity(0.5, 0, frequency=1))])
        qat = quantize_aware(model, enabled=False)
        qat.compile(optimizer="adam")
        qat_history = qat.fit(x, batch_size=16, epochs=2, verbose=0,
                              callbacks=[QuantizationAwareTraining(1)])
        outputs = keras.ops.convert_to_numpy(
            keras.ops.cast(qat.predict(x[:4], verbose=0), "float32"))
        # Per-channel and transposed-convolution kernels in bfloat16 too.
        conv = quantize_aware(keras_vae.models.conv_vae((8, 8, 1), 2,
                                                        filters=(4, 8), seed=0))
        conv.compile(optimizer="adam")
        conv_history = conv.fit(x, batch_size=16, epochs=1, verbose=0)
    finally:
        keras.config.set_dtype_policy("float32")
    assert model.dtype_policy.name == "mixed_bfloat16"
    for fitted in (history, qat_history, conv_history):
        _finite(fitted)
    assert qat_history.history["quantization"] == [0.0, 1.0]
    assert is_quantization_aware(qat) and np.all(np.isfinite(outputs))
    hook = pruning_hooks(qat)[0]
    assert all(mask.dtype == "float32" for mask in hook.masks)
    for kernel in hook.kernels:  # float32 variables, exactly half zero
        assert kernel.dtype == "float32"
        assert np.mean(keras.ops.convert_to_numpy(kernel) == 0) == 0.5
    for trained in (qat, conv):
        quantizers = [layer.output_quantizer for layer in trained.encoder.layers
                      if isinstance(layer, QuantizeWrapper)]
        assert quantizers and all(
            q.range_max.dtype == "float32" and float(q.range_max.numpy()) > 0
            for q in quantizers)
