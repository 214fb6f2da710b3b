"""The discretised logistic likelihood for 8-bit data (the codec's 8-bit model)."""

import keras
import numpy as np
import pytest

import keras_vae
from keras_vae.codec import core
from keras_vae.likelihoods import DiscretizedLogistic


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
