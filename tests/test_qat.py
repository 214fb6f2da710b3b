"""Quantization-aware training: the int8 scheme, the switch, pruning, export.

The JAX-backend QAT run (switch at an epoch, zeros kept, save/load) is in
`test_pruning.py::test_pruning_state_qat_and_bfloat16_on_the_jax_backend`, so JAX
starts once for both.
"""

import keras
import numpy as np
import pytest

import keras_vae
from keras_vae.compression import (
    ActivationQuantizer,
    ConstantSparsity,
    PruningCallback,
    QuantizationAwareTraining,
    QuantizeWrapper,
    is_quantization_aware,
    pruning_hooks,
    quantize_aware,
    set_quantization,
    sparsity_report,
    strip_pruning,
)


@pytest.fixture(scope="module")
def data(digits):
    (x_train, _), (x_test, _) = digits
    return x_train, x_test


def _levels(values):
    return np.unique(np.round(values, 7)).size


def test_dense_kernels_are_symmetric_narrow_range_per_tensor():
    layer = QuantizeWrapper(keras.layers.Dense(16))
    layer.build((None, 32))
    kernel = np.random.default_rng(0).normal(size=(32, 16)).astype("float32")
    layer.layer.kernel.assign(kernel)
    quantized = keras.ops.convert_to_numpy(layer.quantized_kernel())
    bound = np.abs(kernel).max()
    step = bound / 127.0
    codes = quantized / step
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
    assert np.abs(codes).max() == pytest.approx(127.0, abs=1e-3)  # narrow
    assert _levels(quantized) <= 255
    np.testing.assert_allclose(quantized, kernel, atol=step / 2 + 1e-6)


def test_conv_kernels_are_quantized_per_output_channel():
    layer = QuantizeWrapper(keras.layers.Conv2D(4, 3))
    layer.build((None, 8, 8, 2))
    kernel = np.random.default_rng(1).normal(size=(3, 3, 2, 4)).astype("float32")
    kernel *= np.array([0.01, 0.1, 1.0, 10.0], "float32")  # channel scales
    layer.layer.kernel.assign(kernel)
    quantized = keras.ops.convert_to_numpy(layer.quantized_kernel())
    for channel in range(4):
        step = np.abs(kernel[..., channel]).max() / 127.0
        codes = quantized[..., channel] / step
        np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
        np.testing.assert_allclose(quantized[..., channel], kernel[..., channel],
                                   atol=step / 2 + 1e-7)


def test_activation_ranges_are_set_by_the_first_batch_then_moving_averages():
    quantizer = ActivationQuantizer(ema_decay=0.9)
    quantizer(np.array([[0.5, 2.0]], "float32"), training=True)
    # 0 is always inside the range (int8 represents it exactly).
    assert float(quantizer.range_min.numpy()) == 0.0
    assert float(quantizer.range_max.numpy()) == 2.0
    quantizer(np.array([[-1.0, 4.0]], "float32"), training=True)
    assert float(quantizer.range_min.numpy()) == pytest.approx(-0.1)
    assert float(quantizer.range_max.numpy()) == pytest.approx(2.2)
    outputs = quantizer(np.linspace(-0.1, 2.2, 1000, dtype="float32")[None])
    assert _levels(keras.ops.convert_to_numpy(outputs)) <= 256
    assert float(quantizer.range_max.numpy()) == pytest.approx(2.2)  # inference


def test_quantize_aware_wraps_every_kernel_and_starts_from_the_same_weights(data):
    x_train, x_test = data
    model = keras_vae.models.conv_vae((8, 8, 1), 2, filters=(4, 8), seed=0)
    qat = quantize_aware(model, enabled=False)
    wrapped = [layer for sub in (qat.encoder, qat.decoder)
               for layer in sub.layers if isinstance(layer, QuantizeWrapper)]
    # 2 conv, 2 heads; dense, 2 transposed conv, output conv
    assert len(wrapped) == 8
    assert [layer.per_channel for layer in wrapped].count(True) == 3
    # Same trainable weights; the quantizers add only non-trainable ranges.
    assert [v.shape for v in qat.trainable_weights] == [
        v.shape for v in model.trainable_weights]
    # Fake quantization off: the float model, exactly.
    np.testing.assert_allclose(qat.predict(x_test[:8], verbose=0),
                               model.predict(x_test[:8], verbose=0), atol=1e-6)
    set_quantization(qat, True)
    assert is_quantization_aware(qat)
    quantized = qat.predict(x_test[:8], verbose=0)
    assert not np.allclose(quantized, model.predict(x_test[:8], verbose=0))


def test_callback_switches_quantization_on_at_start_epoch(data):
    x_train, _ = data
    qat = quantize_aware(keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(16,)),
                         enabled=False)
    qat.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = qat.fit(x_train[:256], batch_size=64, epochs=3, verbose=0,
                      callbacks=[QuantizationAwareTraining(start_epoch=2)])
    assert history.history["quantization"] == [0.0, 0.0, 1.0]
    assert is_quantization_aware(qat)
    # The float epochs already observed the activation ranges.
    layer = qat.encoder.get_layer("quant_encoder_dense_0").output_quantizer
    assert float(layer.range_initialized.numpy()) == 1.0


def test_callback_refuses_a_model_that_is_not_quantization_aware(data):
    model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(16,))
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match="quantize_aware"):
        model.fit(data[0][:64], verbose=0, callbacks=[QuantizationAwareTraining()])
    with pytest.raises(ValueError, match="start_epoch"):
        QuantizationAwareTraining(start_epoch=-1)


def test_qat_model_saves_and_loads_with_its_ranges_and_switch(data, tmp_path):
    x_train, x_test = data
    qat = quantize_aware(keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(16,)))
    qat.compile(optimizer=keras.optimizers.Adam(1e-3))
    qat.fit(x_train[:256], batch_size=64, epochs=1, verbose=0)
    path = str(tmp_path / "qat.keras")
    qat.save(path)
    loaded = keras.saving.load_model(path)
    assert is_quantization_aware(loaded)
    np.testing.assert_array_equal(loaded.predict(x_test[:16], verbose=0),
                                  qat.predict(x_test[:16], verbose=0))
    set_quantization(qat, False)
    qat.save(path)
    assert not is_quantization_aware(keras.saving.load_model(path))


def test_qat_keeps_a_running_pruning_schedule(data):
    x_train, _ = data
    model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(16,))
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(x_train[:256], batch_size=64, epochs=1, verbose=0,
              callbacks=[PruningCallback(ConstantSparsity(0.6, 0, frequency=2))])
    qat = quantize_aware(model)
    hook = pruning_hooks(qat)[0]
    assert int(hook.pruning_step.numpy()) == 4  # the counter came along
    qat.compile(optimizer=keras.optimizers.Adam(1e-2))
    qat.fit(x_train[:256], batch_size=64, epochs=1, verbose=0,
            callbacks=[PruningCallback(ConstantSparsity(0.6, 0, frequency=2))])
    assert int(hook.pruning_step.numpy()) == 8
    for kernel in hook.kernels:
        assert np.mean(kernel.numpy() == 0) == pytest.approx(0.6, abs=0.01)


@pytest.fixture(scope="module")
def pruned(data):
    """A small MLP VAE trained, then pruned to 75% and stripped."""
    x_train, _ = data
    keras.utils.set_random_seed(0)
    model = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(64,), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(x_train, batch_size=64, epochs=6, verbose=0)
    schedule = keras_vae.compression.PolynomialDecay(0.0, 0.75, 0, 40, frequency=5)
    model.fit(x_train, batch_size=64, epochs=4, verbose=0,
              callbacks=[PruningCallback(schedule)])
    return strip_pruning(model)


def test_qat_after_pruning_keeps_zeros_and_int8_beats_post_training_int8(
    data, pruned, tmp_path
):
    from keras_vae.export import to_tflite, verify

    x_train, x_test = data
    before = sparsity_report(pruned)
    assert before.sparsity >= 0.75
    ptq_path = str(tmp_path / "ptq.tflite")
    to_tflite(pruned, ptq_path, representative_data=x_train[:300])
    ptq = verify(ptq_path, pruned, x_test)

    keras.utils.set_random_seed(1)
    qat = quantize_aware(pruned)
    qat.compile(optimizer=keras.optimizers.Adam(1e-3))
    qat.fit(x_train, batch_size=64, epochs=3, verbose=0)
    after = sparsity_report(strip_pruning(qat))
    for old, new in zip(before.rows, after.rows):
        assert new["layer"] == old["layer"]
        assert new["zeros"] >= old["zeros"]  # every pruned zero is still zero
    # No representative data: the file takes every range from QAT.
    qat_path = str(tmp_path / "qat.tflite")
    info = to_tflite(qat, qat_path)
    report = verify(qat_path, qat, x_test)
    assert report.passed and not report.dtype_problems
    assert report.tflite_nll <= ptq.tflite_nll
    assert info.num_bytes <= ptq.file.num_bytes * 1.05
    # Calibration data 100x too dim would shrink every calibrated range; the
    # QAT file does not change by one byte: its ranges are the trained ones.
    dim_path = str(tmp_path / "qat_dim.tflite")
    to_tflite(qat, dim_path, representative_data=x_train[:100] * 0.01)
    assert open(dim_path, "rb").read() == open(qat_path, "rb").read()
