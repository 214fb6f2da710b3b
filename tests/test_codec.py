"""`keras_vae.codec`: bits-back and lossy streams from a Keras VAE.

Tiny 8x8 digit models (binarised for the Bernoulli likelihood, 8-bit for
the discretised logistic) trained for a few epochs; the exported-file
runtime and the command line are in `test_codec_runtime.py`.
"""

import json
import os
import pathlib

import codec_models
import keras
import numpy as np
import pytest
from backend_runner import run_with_backend
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import keras_vae
from keras_vae import codec
from keras_vae.codec import core

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data():
    binary, levels = codec_models.digits().values()
    return {"binary_train": binary[0], "binary": binary[1][:200],
            "levels_train": levels[0], "levels": levels[1][:120]}


@pytest.fixture(scope="module")
def binary_model():
    return codec_models.trained("bernoulli")


@pytest.fixture(scope="module")
def levels_model():
    return codec_models.trained("discretized_logistic")


def _negative_elbo_bits(model, x, samples=10):
    x = np.asarray(x, "float32")
    total = 0.0
    for seed in range(samples):
        terms = model.compute_terms(x, seed=seed)
        total += float(np.sum(keras.ops.convert_to_numpy(
            terms["reconstruction"] + terms["kl"])))
    return total / samples / np.log(2.0)


def test_lossless_binary_stream_restores_every_bit_at_the_negative_elbo_rate(
        binary_model, data):
    x = data["binary"]
    stream = codec.compress(binary_model, x, batch_size=64, verbose=0)
    restored = codec.decompress(binary_model, stream, verbose=0)
    assert restored.dtype == np.bool_ and restored.shape == x.shape
    assert np.array_equal(restored, x)
    header = codec.describe(stream)
    net_bits = 8 * header["payload_bytes"] - header["startup_bits"]
    # Bits-back pays the negative ELBO per image, up to its noise.
    assert net_bits == pytest.approx(_negative_elbo_bits(binary_model, x),
                                     rel=0.04)
    # The start-up cost is one image's latent pop, at most 24 bits a symbol.
    assert 0 < header["startup_bits"] <= 24 * 4 + 64


def test_lossless_8bit_stream_restores_uint8_and_float_levels_bit_for_bit(
        levels_model, data):
    x = data["levels"]
    stream = codec.compress(levels_model, x, batch_size=50, verbose=0)
    restored = codec.decompress(levels_model, stream, verbose=0)
    assert restored.dtype == np.uint8 and np.array_equal(restored, x)
    as_float = (x / 255.0).astype("float32")[:20]
    restored = codec.decompress(
        levels_model, codec.compress(levels_model, as_float, verbose=0),
        verbose=0)
    assert restored.dtype == np.float32
    assert restored.tobytes() == as_float.tobytes()
    header = codec.describe(stream)
    net_bits = 8 * header["payload_bytes"] - header["startup_bits"]
    assert net_bits == pytest.approx(
        _negative_elbo_bits(levels_model, x / 255.0), rel=0.04)


@pytest.mark.parametrize("likelihood, key", [
    ("context_bernoulli", "binary"), ("context_discretized_logistic", "levels")])
def test_context_likelihoods_code_pixel_by_pixel_at_the_negative_elbo_rate(
        likelihood, key, data, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "export"))
    import litert_vae

    model = codec_models.trained(likelihood)
    x = data[key][:60]
    network_input = x if key == "binary" else x / 255.0
    stream = codec.compress(model, x, batch_size=30, verbose=0)
    restored = codec.decompress(model, stream, verbose=0)
    assert restored.dtype == x.dtype and np.array_equal(restored, x)
    header = codec.describe(stream)
    assert header["likelihood"] == likelihood.replace("_", "")
    net_bits = 8 * header["payload_bytes"] - header["startup_bits"]
    # The numpy head of the codec computes the Keras likelihood's numbers.
    assert net_bits == pytest.approx(
        _negative_elbo_bits(model, network_input), rel=0.05)
    # The int8 file carries the head in its metadata; its streams round-trip.
    path = str(tmp_path / "context.tflite")
    keras_vae.export.to_tflite(model, path,
                               representative_data=data[f"{key}_train"][:200])
    vae = litert_vae.LiteRTVAE(path)
    runtime_stream = litert_vae.compress(vae, x, batch_size=30, verbose=0)
    assert np.array_equal(litert_vae.decompress(vae, runtime_stream, verbose=0),
                          x)


def test_lossy_streams_trade_bits_for_reconstruction_error(levels_model, data):
    x = data["levels"]
    sizes, errors = [], []
    for step in (2.0, 0.5, 0.05):
        stream = codec.compress(levels_model, x, mode="lossy", step=step,
                                verbose=0)
        restored = codec.decompress(levels_model, stream, verbose=0)
        assert restored.dtype == np.uint8 and restored.shape == x.shape
        sizes.append(len(stream))
        errors.append(np.mean((restored.astype(float) - x) ** 2))
    assert sizes[0] < sizes[1] < sizes[2]
    assert errors[0] > errors[2]
    # A fine grid gives about the decoder's own reconstruction error.
    mean = core.reconstruction(
        codec.KerasNetwork(levels_model).decode(keras.ops.convert_to_numpy(
            levels_model.encode(x / 255.0)[0])),
        "discretizedlogistic", 256)
    direct = np.mean((np.rint(mean * 255) - x) ** 2)
    assert errors[2] < 1.2 * direct + 1.0


def test_refined_pixels_come_back_within_half_a_grid_step_for_more_bits(
        levels_model, data):
    x = data["levels"][:60]
    sizes = []
    for pixel_step in (85, 15, 5, 1):
        stream = codec.compress(levels_model, x, mode="lossy", step=0.5,
                                pixel_step=pixel_step, verbose=0)
        restored = codec.decompress(levels_model, stream, verbose=0)
        assert restored.dtype == np.uint8 and restored.shape == x.shape
        error = np.abs(restored.astype(int) - x.astype(int))
        assert error.max() <= pixel_step // 2
        # Restored pixels are grid levels.
        assert np.all(restored % pixel_step == 0)
        header = codec.describe(stream)
        assert header["pixel_step"] == pixel_step and header["version"] == 2
        sizes.append(len(stream))
    assert np.array_equal(restored, x)  # pixel_step=1: exact given the code
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    # Floats k / 255 in, floats on the same grid out.
    as_float = (x[:10] / 255.0).astype("float32")
    restored = codec.decompress(levels_model, codec.compress(
        levels_model, as_float, mode="lossy", pixel_step=3, verbose=0),
        verbose=0)
    assert restored.dtype == np.float32
    assert np.abs(restored - as_float).max() <= 1 / 255 + 1e-6


def test_latent_only_streams_keep_the_first_format_version(levels_model,
                                                           binary_model, data):
    lossy = codec.compress(levels_model, data["levels"][:10], mode="lossy",
                           verbose=0)
    lossless = codec.compress(binary_model, data["binary"][:10], verbose=0)
    # Byte 4 is the version: streams without refined pixels are the same
    # bytes as before the pixel refinement existed.
    assert lossy[4] == 1 and lossless[4] == 1
    assert codec.describe(lossy)["pixel_step"] == 0
    assert codec.decompress(levels_model, lossy, verbose=0).shape == (10, 8, 8, 1)
    assert np.array_equal(codec.decompress(binary_model, lossless, verbose=0),
                          data["binary"][:10])


@pytest.mark.parametrize("pixel_step", [2, 4, 0, 256, True, 5.0, "5", -5])
def test_pixel_step_that_does_not_divide_255_raises_value_error(
        levels_model, data, pixel_step):
    with pytest.raises(ValueError, match=(
            r"\(1, 3, 5, 15, 17, 51, 85, 255\)\. Received: pixel_step=")):
        codec.compress(levels_model, data["levels"][:2], mode="lossy",
                       pixel_step=pixel_step, verbose=0)


def test_pixel_step_needs_lossy_mode_8bit_levels_and_the_8bit_likelihood(
        binary_model, levels_model, data):
    with pytest.raises(ValueError, match="discretised logistic.*"
                       "Received: pixel_step=5"):
        codec.compress(binary_model, data["binary"][:2], mode="lossy",
                       pixel_step=5, verbose=0)
    with pytest.raises(ValueError, match="mode='lossy'.*Received: pixel_step=5"):
        codec.compress(levels_model, data["levels"][:2], pixel_step=5,
                       verbose=0)
    between_levels = data["levels"][:2] / 255.0 + 0.3 / 255.0
    with pytest.raises(ValueError, match="between levels"):
        codec.compress(levels_model, between_levels, mode="lossy",
                       pixel_step=5, verbose=0)


def test_refined_stream_never_returns_wrong_pixels(levels_model, data):
    x = data["levels"][:40]
    stream = codec.compress(levels_model, x, mode="lossy", step=0.5,
                            pixel_step=5, batch_size=16, verbose=0)
    damaged = bytearray(stream)
    damaged[-3] ^= 0x01
    with pytest.raises(ValueError, match="corrupted"):
        codec.decompress(levels_model, bytes(damaged), verbose=0)

    class Drifting(codec.KerasNetwork):
        # The same model on a runtime whose outputs differ in the last bits.
        def decode(self, z):
            outputs = super().decode(z)
            return dict(outputs, loc=outputs["loc"] + 2e-3)

    with pytest.raises(ValueError, match="network outputs"):
        core.decompress(Drifting(levels_model), stream, verbose=0)

    class OtherRuntime(codec.KerasNetwork):
        def __init__(self, model):
            super().__init__(model)
            self.kind = "litert"

    with pytest.raises(ValueError, match="refined pixels.*keras-tensorflow"):
        core.decompress(OtherRuntime(levels_model), stream, verbose=0)
    # Latent-only streams only need the model: any runtime kind decodes them.
    lossy = codec.compress(levels_model, x, mode="lossy", verbose=0)
    assert core.decompress(OtherRuntime(levels_model), lossy,
                           verbose=0).shape == x.shape


def test_lossy_prior_entropy_model_needs_no_side_information(binary_model, data):
    x = data["binary"][:50]
    adaptive = codec.compress(binary_model, x, mode="lossy", verbose=0)
    prior = codec.compress(binary_model, x, mode="lossy",
                           entropy_model="prior", verbose=0)
    assert codec.describe(prior)["scale_codes"] == []
    assert len(codec.describe(adaptive)["scale_codes"]) == 4
    restored = codec.decompress(binary_model, prior, verbose=0)
    assert restored.dtype == np.bool_ and restored.shape == x.shape


def test_header_describes_the_stream(binary_model, data):
    x = data["binary"][:20]
    stream = codec.compress(binary_model, x, precision=10, batch_size=8,
                            verbose=0)
    header = codec.describe(stream)
    assert stream[:4] == core.MAGIC
    assert header["mode"] == "lossless" and header["precision"] == 10
    assert header["shape"] == [20, 8, 8, 1] and header["dtype"] == "bool"
    assert header["kind"] == "keras-tensorflow"
    assert header["likelihood"] == "bernoulli" and header["batch_size"] == 8
    assert header["fingerprint"] == codec.model_fingerprint(
        binary_model)[:16].hex()
    assert header["total_bytes"] == len(stream)
    assert header["header_bytes"] < 100


def test_fingerprint_changes_with_one_weight_and_not_with_training_state(
        binary_model):
    model = keras.models.clone_model(binary_model)
    model.set_weights(binary_model.get_weights())
    assert codec.model_fingerprint(model) == codec.model_fingerprint(
        binary_model)
    model.beta = 0.5
    assert codec.model_fingerprint(model) == codec.model_fingerprint(
        binary_model)
    kernel = model.decoder.weights[0]
    value = keras.ops.convert_to_numpy(kernel).copy()
    value[0, 0] += 1e-6
    kernel.assign(value)
    assert codec.model_fingerprint(model) != codec.model_fingerprint(
        binary_model)


@pytest.fixture(scope="module")
def stream(binary_model, data):
    return codec.compress(binary_model, data["binary"][:30], verbose=0)


@pytest.mark.parametrize("position", [2, 30, -40, -1])
def test_corrupted_stream_raises_value_error(binary_model, stream, position):
    damaged = bytearray(stream)
    damaged[position] ^= 0x10
    with pytest.raises(ValueError, match="corrupted|not a keras-vae stream"):
        codec.decompress(binary_model, bytes(damaged), verbose=0)


@pytest.mark.parametrize("keep", [0, 3, 30, -1])
def test_truncated_stream_raises_value_error(binary_model, stream, keep):
    with pytest.raises(ValueError, match="truncated|not a keras-vae stream"):
        codec.decompress(binary_model, stream[:keep], verbose=0)


def test_stream_of_another_model_raises_value_error(stream):
    other = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(32,))
    with pytest.raises(ValueError, match="another model"):
        codec.decompress(other, stream, verbose=0)


def test_stream_of_another_format_version_raises_value_error(binary_model,
                                                             stream):
    newer = bytearray(stream)
    newer[4] = core.FORMAT_VERSION + 1
    with pytest.raises(ValueError, match="format version"):
        codec.decompress(binary_model, bytes(newer), verbose=0)


def test_receiver_with_other_network_outputs_gets_an_error_not_wrong_data(
        binary_model, data):
    x = data["binary"][:40]
    stream = codec.compress(binary_model, x, batch_size=16, verbose=0)

    class Drifting(codec.KerasNetwork):
        # The same model on a runtime whose outputs differ in the last bits.
        def decode(self, z):
            outputs = super().decode(z)
            return {"x_mean": np.clip(outputs["x_mean"] * 1.001, 0, 1)}

    with pytest.raises(ValueError, match="network outputs"):
        core.decompress(Drifting(binary_model), stream, verbose=0)


def test_lossless_mode_refuses_data_it_cannot_restore_exactly(
        binary_model, levels_model, data):
    with pytest.raises(ValueError, match="binary data"):
        codec.compress(binary_model, data["levels"], verbose=0)
    between_levels = data["levels"][:4] / 255.0 + 0.3 / 255.0
    with pytest.raises(ValueError, match="between levels"):
        codec.compress(levels_model, between_levels, verbose=0)
    with pytest.raises(ValueError, match="shape"):
        codec.compress(binary_model, np.zeros((2, 8, 8), bool), verbose=0)
    with pytest.raises(ValueError, match="mode"):
        codec.compress(binary_model, data["binary"][:2], mode="zip")


def test_lossless_mode_refuses_models_without_exact_code_lengths():
    gaussian = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(8,),
                                        likelihood="gaussian")
    with pytest.raises(ValueError, match="mode='lossy'"):
        codec.compress(gaussian, np.zeros((2, 8, 8, 1), "float32"), verbose=0)
    mixture = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(8,),
                                       prior="mixture")
    with pytest.raises(ValueError, match="standard normal"):
        codec.compress(mixture, np.zeros((2, 8, 8, 1), bool), verbose=0)
    # Lossy latent codes work with any prior (adaptive entropy model).
    stream = codec.compress(mixture, np.zeros((2, 8, 8, 1), bool),
                            mode="lossy", verbose=0)
    assert codec.decompress(mixture, stream, verbose=0).shape == (2, 8, 8, 1)
    conditional = keras_vae.models.mlp_cvae((8, 8, 1), 3, 2, hidden_units=(8,))
    with pytest.raises(ValueError, match="conditional"):
        codec.compress(conditional, np.zeros((2, 8, 8, 1), bool), verbose=0)


def test_batches_ramp_up_then_stay_full():
    sizes = core.schedule(1000, 128)
    assert sum(sizes) == 1000 and sizes[0] == 1
    assert max(sizes) == 128 and sizes.count(128) >= 3
    done = np.cumsum([0] + sizes[:-1])
    assert all(s <= max(1, d // 4) for s, d in zip(sizes, done) if s < 128)
    assert core.schedule(1, 128) == [1]


def test_latent_buckets_have_equal_prior_mass_and_are_symmetric():
    centres = core.bucket_centres(8)
    assert len(centres) == 256 and np.all(np.diff(centres) > 0)
    np.testing.assert_allclose(centres, -centres[::-1], atol=1e-12)
    from statistics import NormalDist

    cdf = np.array([NormalDist().cdf(c) for c in centres])
    np.testing.assert_allclose(cdf, (np.arange(256) + 0.5) / 256, atol=1e-12)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(images=arrays(np.bool_, st.tuples(st.integers(1, 3), st.just(8),
                                         st.just(8), st.just(1))))
def test_any_binary_8x8_image_round_trips(binary_model, images):
    stream = codec.compress(binary_model, images, batch_size=2, verbose=0)
    assert np.array_equal(codec.decompress(binary_model, stream, verbose=0),
                          images)


def test_streams_round_trip_on_jax_and_refuse_tensorflow_lossless_streams(
        binary_model, levels_model, data, tmp_path):
    keras_vae.files.save_model(binary_model, tmp_path / "binary.keras")
    keras_vae.files.save_model(levels_model, tmp_path / "levels.keras")
    np.save(tmp_path / "x.npy", data["binary"][:24])
    np.save(tmp_path / "levels.npy", data["levels"][:24])
    (tmp_path / "tf.kvz").write_bytes(
        codec.compress(binary_model, data["binary"][:24], verbose=0))
    out = run_with_backend(f"""
        import json, numpy as np, keras_vae
        from keras_vae import codec
        folder = {str(tmp_path)!r}
        result = {{}}
        for name, data in (("binary", "x"), ("levels", "levels")):
            model = keras_vae.files.load_model(f"{{folder}}/{{name}}.keras")
            x = np.load(f"{{folder}}/{{data}}.npy")
            stream = codec.compress(model, x, batch_size=8, verbose=0)
            result[name] = bool(np.array_equal(
                codec.decompress(model, stream, verbose=0), x))
            result["kind"] = codec.describe(stream)["kind"]
        lossy = codec.compress(model, x, mode="lossy", verbose=0)
        result["lossy_shape"] = list(
            codec.decompress(model, lossy, verbose=0).shape)
        # The 8-bit likelihood trains on JAX too.
        history = model.fit((x / 255.0).astype("float32"), epochs=1,
                            batch_size=8, verbose=0)
        result["jax_loss"] = float(history.history["loss"][-1])
        binary = keras_vae.files.load_model(folder + "/binary.keras")
        try:
            codec.decompress(binary, open(folder + "/tf.kvz", "rb").read(),
                             verbose=0)
            result["tensorflow_stream"] = "decoded"
        except ValueError as error:
            result["tensorflow_stream"] = str(error)
        print(json.dumps(result))
    """)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["binary"] and result["levels"]
    assert result["kind"] == "keras-jax"
    assert result["lossy_shape"] == [24, 8, 8, 1]
    assert np.isfinite(result["jax_loss"]) and result["jax_loss"] > 0
    assert "keras-tensorflow" in result["tensorflow_stream"]


def test_codec_core_imports_neither_keras_nor_tensorflow():
    source = (ROOT / "keras_vae" / "codec" / "core.py").read_text()
    imports = [line.split()[1] for line in source.splitlines()
               if line.startswith(("import ", "from "))]
    assert set(imports) <= {"functools", "hashlib", "math", "statistics",
                            "struct", "zlib", "numpy"}, imports
    assert os.path.getsize(ROOT / "keras_vae" / "codec" / "core.py") > 0
