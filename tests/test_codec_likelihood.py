"""The discretised logistic likelihood for 8-bit data (the codec's 8-bit model)."""

import pathlib

import codec_models
import keras
import numpy as np
import pytest

import keras_vae
from keras_vae import codec
from keras_vae.codec import core
from keras_vae.codec.keras_network import KerasNetwork
from keras_vae.likelihoods import DiscretizedLogistic

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _params(loc_logit, log_scale, rows=256):
    return np.concatenate([np.full((rows, 1), loc_logit),
                           np.full((rows, 1), log_scale)], -1).astype("float32")


@pytest.mark.parametrize("loc_logit,log_scale",
                         [(0.3, -4.0), (-3.0, -8.5), (2.0, 1.5), (0.0, -6.0)])
def test_probabilities_of_all_256_levels_sum_to_one(loc_logit, log_scale):
    likelihood = DiscretizedLogistic()
    levels = (np.arange(256) / 255.0).reshape(256, 1).astype("float32")
    nll = keras.ops.convert_to_numpy(
        likelihood.negative_log_prob(levels, _params(loc_logit, log_scale)))
    assert np.all(np.isfinite(nll))
    assert np.exp(-nll.astype(np.float64)).sum() == pytest.approx(1.0, abs=1e-5)


def test_codec_level_table_matches_the_training_likelihood():
    likelihood = DiscretizedLogistic()
    params = _params(0.4, -4.5, rows=1)
    loc, log_scale = (keras.ops.convert_to_numpy(t)
                      for t in likelihood.split_params(params))
    table = core._level_probabilities(loc, log_scale, 256)[0]
    levels = (np.arange(256) / 255.0).reshape(256, 1).astype("float32")
    nll = keras.ops.convert_to_numpy(
        likelihood.negative_log_prob(levels, _params(0.4, -4.5)))
    np.testing.assert_allclose(table, np.exp(-nll.astype(np.float64)),
                               atol=2e-6)


def test_mean_is_the_clipped_location_and_exact_mean_is_within_half_a_level():
    likelihood = DiscretizedLogistic()
    params = np.random.default_rng(0).normal(size=(4, 8, 8, 2)).astype(
        "float32") * np.array([2.0, 3.0], "float32") - np.array([0, 4.0],
                                                                "float32")
    loc, log_scale = (keras.ops.convert_to_numpy(t)
                      for t in likelihood.split_params(params))
    mean = keras.ops.convert_to_numpy(likelihood.mean(params))
    np.testing.assert_allclose(mean, np.clip(loc, 0, 1), atol=1e-6)
    exact = core.reconstruction({"loc": loc, "log_scale": log_scale},
                                "discretizedlogistic", 256)
    table = core._level_probabilities(loc, log_scale, 256)
    discrete = (table @ (np.arange(256) / 255.0)).reshape(exact.shape)
    np.testing.assert_allclose(exact, discrete, atol=0.5 / 255 + 1e-6)


def test_model_builds_a_decoder_with_two_parameters_per_pixel_and_saves(
        tmp_path, digits):
    (x, _), _ = digits
    x = (np.round(x[:128] * 255) / 255).astype("float32")
    model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(16,),
                                     likelihood="discretized_logistic")
    assert tuple(model.decoder.output.shape) == (None, 8, 8, 2)
    conv = keras_vae.models.conv_vae((8, 8, 1), 2, filters=(4,),
                                     likelihood="discretized_logistic")
    assert tuple(conv.decoder.output.shape) == (None, 8, 8, 2)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(x, epochs=3, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    path = tmp_path / "model.keras"
    keras_vae.files.save_model(model, path)
    loaded = keras_vae.files.load_model(path)
    assert isinstance(loaded.likelihood, DiscretizedLogistic)
    assert loaded.likelihood.get_config()["num_levels"] == 256
    assert loaded.likelihood.get_config()["min_log_scale"] == -7.0
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded.reconstruct(x)),
                               keras.ops.convert_to_numpy(model.reconstruct(x)),
                               atol=1e-6)
    outputs = model.likelihood.export_outputs(model.decoder(np.zeros((3, 2))))
    assert sorted(outputs) == ["loc", "log_scale", "x_mean"]


def test_data_between_levels_or_outside_raises_value_error():
    likelihood = keras_vae.likelihoods.get("discretized_logistic")
    likelihood.validate_data(np.array([0.0, 1.0, 128 / 255.0]))
    with pytest.raises(ValueError, match="k / 255"):
        likelihood.validate_data(np.array([0.5]))
    with pytest.raises(ValueError, match="k / 255"):
        likelihood.validate_data(np.array([1.5]))
    with pytest.raises(ValueError, match="num_levels"):
        DiscretizedLogistic(num_levels=1)
    with pytest.raises(ValueError, match="min_log_scale"):
        DiscretizedLogistic(min_log_scale=3.0)


@pytest.mark.parametrize("loc_logit,log_scale", [(0.3, -7.0), (-6.0, -7.0),
                                                 (2.0, 1.5)])
def test_uniform_mass_keeps_a_floor_under_every_level_and_sums_to_one(
        loc_logit, log_scale):
    likelihood = DiscretizedLogistic(uniform_mass=1e-3)
    levels = (np.arange(256) / 255.0).reshape(256, 1).astype("float32")
    nll = keras.ops.convert_to_numpy(
        likelihood.negative_log_prob(levels, _params(loc_logit, log_scale)))
    probabilities = np.exp(-nll.astype(np.float64))
    # float32 log-probabilities: a relative error of about 1e-7 each.
    assert probabilities.sum() == pytest.approx(1.0, abs=5e-5)
    # No level costs more than log2(256 / 1e-3) bits, about 18.
    assert probabilities.min() >= 1e-3 / 256 * (1 - 1e-4)
    loc, scale = (keras.ops.convert_to_numpy(t)
                  for t in likelihood.split_params(_params(loc_logit,
                                                           log_scale, 1)))
    table = core._level_probabilities(loc, scale, 256, uniform_mass=1e-3)[0]
    # Keras computes in float32: a sharp logistic moves its levels by 1e-5.
    np.testing.assert_allclose(table, probabilities, atol=5e-5)
    np.testing.assert_allclose(table.min(), probabilities.min(), rtol=1e-3)


def test_uniform_mass_survives_config_and_keras_file_and_reaches_the_codec(
        tmp_path):
    likelihood = keras_vae.likelihoods.ContextDiscretizedLogistic(
        uniform_mass=2e-3, hidden_units=8)
    config = likelihood.get_config()
    assert config["uniform_mass"] == 2e-3
    clone = type(likelihood).from_config(config)
    assert clone.uniform_mass == 2e-3 and clone.levels.uniform_mass == 2e-3
    model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(16,),
                                     likelihood=likelihood)
    path = tmp_path / "model.keras"
    keras_vae.files.save_model(model, path)
    loaded = keras_vae.files.load_model(path)
    assert loaded.likelihood.uniform_mass == 2e-3
    assert loaded.likelihood.export_metadata()["uniform_mass"] == 2e-3

    class Network:
        likelihood = "contextdiscretizedlogistic"
        context_head = loaded.likelihood.head_weights()

    assert core.context_model(Network, (8, 8, 1))["uniform_mass"] == 2e-3
    # Files written before the option code without a uniform part.
    del Network.context_head["uniform_mass"]
    assert core.context_model(Network, (8, 8, 1))["uniform_mass"] == 0.0


def test_uniform_mass_outside_zero_to_one_raises_value_error():
    for value in (-0.1, 1.0, "a", True):
        with pytest.raises(ValueError, match="uniform_mass"):
            DiscretizedLogistic(uniform_mass=value)
    with pytest.raises(ValueError, match="uniform_mass"):
        keras_vae.likelihoods.ContextDiscretizedLogistic(uniform_mass=1.5)


@pytest.mark.parametrize("context", [True, False])
def test_uniform_mass_streams_round_trip_from_keras_and_the_int8_file(
        tmp_path, monkeypatch, context):
    monkeypatch.syspath_prepend(str(ROOT / "export"))
    import litert_vae

    train, test = codec_models.digits()["discretized_logistic"]
    keras.utils.set_random_seed(0)
    if context:
        likelihood = keras_vae.likelihoods.ContextDiscretizedLogistic(
            uniform_mass=1e-2, radius=3, hidden_units=8)
    else:
        likelihood = DiscretizedLogistic(uniform_mass=1e-2)
    model = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(32,),
                                     likelihood=likelihood, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(train, epochs=2, batch_size=64, verbose=0)
    x = test[:40]
    stream = codec.compress(model, x, batch_size=20, verbose=0)
    assert np.array_equal(codec.decompress(model, stream, verbose=0), x)
    header = codec.describe(stream)
    net_bits = 8 * header["payload_bytes"] - header["startup_bits"]
    elbo_bits = np.mean([np.sum(keras.ops.convert_to_numpy(
        terms["reconstruction"] + terms["kl"])) for terms in (
            model.compute_terms(x / 255.0, seed=seed) for seed in range(5))])
    # The codec pays the mixture the model trained with, not the logistic.
    assert net_bits == pytest.approx(elbo_bits / np.log(2.0), rel=0.05)
    path = str(tmp_path / "uniform.tflite")
    keras_vae.export.to_tflite(model, path, representative_data=train[:200])
    vae = litert_vae.LiteRTVAE(path)
    assert vae.metadata["uniform_mass"] == 1e-2
    if context:
        assert vae.metadata["likelihood_head"]["uniform_mass"] == 1e-2
    else:
        # The plain likelihood's pixel tables include the mixture on both
        # runtimes: no level below the uniform floor.
        for network in (KerasNetwork(model), litert_vae.CodecNetwork(vae)):
            assert core.network_uniform_mass(network) == 1e-2
            outputs = network.decode(np.zeros((3, 4), np.float32))
            _, chunks, arguments = core._pixel_coding(
                outputs, "discretizedlogistic", 256,
                core.network_uniform_mass(network))
            assert arguments(chunks[0])[0].min() >= 1e-2 / 256 * (1 - 1e-9)
    runtime_stream = litert_vae.compress(vae, x, batch_size=20, verbose=0)
    assert np.array_equal(
        litert_vae.decompress(vae, runtime_stream, verbose=0), x)
