import keras
import numpy as np
import pytest

import keras_vae
from keras_vae.likelihoods import Bernoulli, Gaussian


def bernoulli_nll_float64(x, logits):
    x = x.astype("float64").reshape(len(x), -1)
    logits = logits.astype("float64").reshape(len(x), -1)
    log_p = -np.logaddexp(0.0, -logits)  # log sigmoid(l)
    log_not_p = -np.logaddexp(0.0, logits)  # log (1 - sigmoid(l))
    return -(x * log_p + (1 - x) * log_not_p).sum(axis=1)


def test_bernoulli_matches_float64_reference(rng):
    x = rng.uniform(size=(16, 7, 5, 1)).astype("float32")
    x[:4] = (x[:4] > 0.5)  # binary rows too
    logits = rng.normal(scale=4.0, size=x.shape).astype("float32")
    nll = np.asarray(Bernoulli().negative_log_prob(x, logits))
    np.testing.assert_allclose(nll, bernoulli_nll_float64(x, logits), rtol=1e-5)


def test_bernoulli_is_finite_for_extreme_logits():
    x = np.array([[0.0, 1.0, 0.0, 1.0, 0.5]], "float32")
    logits = np.array([[1e4, -1e4, -1e4, 1e4, 88.0]], "float32")
    nll = np.asarray(Bernoulli().negative_log_prob(x, logits))
    np.testing.assert_allclose(nll, bernoulli_nll_float64(x, logits), rtol=1e-5)
    assert np.isfinite(nll).all()


def test_gaussian_unit_scale_matches_reference(rng):
    x = rng.normal(size=(8, 6)).astype("float32")
    mean = rng.normal(size=(8, 6)).astype("float32")
    expected = (0.5 * np.log(2 * np.pi) + 0.5 * (x - mean) ** 2).sum(axis=1)
    nll = np.asarray(Gaussian().negative_log_prob(x, mean))
    np.testing.assert_allclose(nll, expected, rtol=1e-5)


@pytest.mark.parametrize("mode,shape", [("global", ()), ("per_pixel", (3, 2))])
def test_gaussian_learned_scale_has_weights(mode, shape, rng):
    likelihood = Gaussian(log_scale=mode, initial_log_scale=np.log(2.0))
    likelihood.build((None, 3, 2))
    assert tuple(likelihood.log_scale.shape) == shape
    x = rng.normal(size=(4, 3, 2)).astype("float32")
    mean = np.zeros_like(x)
    expected = (0.5 * np.log(2 * np.pi) + np.log(2.0) + 0.5 * (x / 2.0) ** 2)
    np.testing.assert_allclose(
        np.asarray(likelihood.negative_log_prob(x, mean)),
        expected.reshape(4, -1).sum(1), rtol=1e-5,
    )


def test_get_resolves_names_and_round_trips_config():
    assert isinstance(keras_vae.likelihoods.get("bernoulli"), Bernoulli)
    gaussian = keras_vae.likelihoods.get("gaussian_per_pixel")
    assert gaussian.log_scale_mode == "per_pixel"
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(gaussian)
    )
    assert isinstance(restored, Gaussian) and restored.log_scale_mode == "per_pixel"


def test_unknown_likelihood_name_is_a_clear_error():
    with pytest.raises(ValueError, match=r"Unknown likelihood.*likelihood='poisson'"):
        keras_vae.likelihoods.get("poisson")
    with pytest.raises(ValueError, match="log_scale='learned'"):
        Gaussian(log_scale="learned")


def test_bernoulli_refuses_data_outside_unit_interval():
    with pytest.raises(ValueError, match=r"\[0, 1\].*max=255"):
        Bernoulli().validate_data(np.array([[0.0, 255.0]]))


def test_bernoulli_from_probabilities_matches_the_logits_form(rng):
    x = rng.uniform(size=(8, 5, 5, 1)).astype("float32")
    logits = rng.normal(scale=3.0, size=x.shape).astype("float32")
    probabilities = 1.0 / (1.0 + np.exp(-logits.astype("float64")))
    likelihood = Bernoulli(from_logits=False)
    np.testing.assert_allclose(
        np.asarray(likelihood.negative_log_prob(x, probabilities.astype("float32"))),
        bernoulli_nll_float64(x, logits), rtol=1e-4)
    np.testing.assert_array_equal(np.asarray(likelihood.mean(probabilities)),
                                  probabilities)
    # Saturated probabilities stay finite (clipped before the logs).
    edge = np.asarray(likelihood.negative_log_prob(
        np.array([[1.0, 0.0]], "float32"), np.array([[0.0, 1.0]], "float32")))
    assert np.isfinite(edge).all()
    clone = keras_vae.likelihoods.get(keras.saving.serialize_keras_object(likelihood))
    assert clone.from_logits is False
    with pytest.raises(ValueError, match="from_logits"):
        Bernoulli(from_logits="no")
