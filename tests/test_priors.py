"""Priors: the standard normal and the learned mixture of Gaussians."""

import keras
import numpy as np
import pytest
from scipy.special import logsumexp, softmax
from scipy.stats import multivariate_normal

import keras_vae
from keras_vae import priors


def _mixture(means, log_vars, logits):
    prior = priors.MixtureOfGaussians(num_components=len(means))
    prior.build((None, means.shape[1]))
    prior.means.assign(means)
    prior.log_vars.assign(log_vars)
    prior.logits.assign(logits)
    return prior


def test_mixture_log_prob_matches_scipy(rng):
    means = rng.normal(size=(3, 2)).astype("float32")
    log_vars = rng.uniform(-1, 1, size=(3, 2)).astype("float32")
    logits = np.array([0.5, -1.0, 0.0], "float32")
    prior = _mixture(means, log_vars, logits)
    z = rng.normal(size=(5, 2)).astype("float32") * 2
    expected = logsumexp(
        [
            np.log(w) + multivariate_normal(m, np.diag(np.exp(v))).logpdf(z)
            for w, m, v in zip(softmax(logits), means, log_vars)
        ],
        axis=0,
    )
    np.testing.assert_allclose(np.asarray(prior.log_prob(z)), expected, rtol=1e-5)


def test_mixture_samples_follow_the_mixture_weights():
    means = np.array([[-10.0, 0.0], [10.0, 0.0]], "float32")
    log_vars = np.full((2, 2), -4.0, "float32")
    prior = _mixture(means, log_vars, np.log(np.array([0.25, 0.75], "float32")))
    z = np.asarray(prior.sample(4000, 2, seed=0))
    assert z.shape == (4000, 2)
    right = z[:, 0] > 0
    assert right.mean() == pytest.approx(0.75, abs=0.03)
    np.testing.assert_allclose(z[right].mean(0), [10.0, 0.0], atol=0.05)
    np.testing.assert_allclose(z[right].std(0), [np.exp(-2.0)] * 2, rtol=0.1)
    np.testing.assert_array_equal(np.asarray(prior.sample(10, 2, seed=3)),
                                  np.asarray(prior.sample(10, 2, seed=3)))


def test_mixture_kl_is_an_unbiased_monte_carlo_estimate(rng):
    # One standard-normal component: the estimate averages to the closed form.
    prior = _mixture(np.zeros((1, 3), "float32"), np.zeros((1, 3), "float32"),
                     np.zeros((1,), "float32"))
    z_mean = np.tile(np.array([[0.5, -1.0, 2.0]], "float32"), (20000, 1))
    z_log_var = np.tile(np.array([[-1.0, 0.5, 0.0]], "float32"), (20000, 1))
    z = (z_mean + np.exp(0.5 * z_log_var) * rng.normal(size=z_mean.shape)).astype("float32")
    estimate = np.asarray(prior.kl(z_mean, z_log_var, z))
    assert estimate.shape == (20000, 1)
    exact = np.asarray(priors.StandardNormal().kl(z_mean[:1], z_log_var[:1])).sum()
    assert estimate.mean() == pytest.approx(exact, abs=4 * estimate.std() / np.sqrt(20000))


def test_mixture_prior_trains_with_the_model_and_saves(digits, tmp_path):
    (x, _), (x_test, _) = digits
    model = keras_vae.models.mlp_vae(
        (8, 8, 1), 2, hidden_units=(32,), seed=0, free_bits=0.1,
        prior=keras_vae.priors.get({"class_name": "MixtureOfGaussians",
                                    "config": {"num_components": 4, "seed": 0}}),
    )
    assert len(model.prior.trainable_weights) == 3
    before = np.array(model.prior.means)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(x[:512], epochs=2, batch_size=128, verbose=0).history
    assert not np.allclose(np.array(model.prior.means), before)
    assert np.isfinite(history["elbo"]).all()
    # Same estimator at test time: per-example KL is log q(z|x) - log p(z).
    terms = model.compute_terms(x_test[:16], seed=1)
    z = np.asarray(terms["z"])
    log_q = keras_vae.priors.gaussian_log_density(
        z, np.asarray(terms["z_mean"]), np.asarray(terms["z_log_var"])).numpy().sum(-1)
    np.testing.assert_allclose(np.asarray(terms["kl"]),
                               log_q - np.asarray(model.prior.log_prob(z)), rtol=1e-4,
                               atol=1e-4)
    path = str(tmp_path / "mixture.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored.prior, priors.MixtureOfGaussians)
    np.testing.assert_array_equal(np.array(restored.prior.means), np.array(model.prior.means))


def test_get_resolves_names_and_refuses_unknown_ones():
    assert isinstance(priors.get("mixture"), priors.MixtureOfGaussians)
    assert isinstance(priors.get("standard_normal"), priors.StandardNormal)
    config = keras.saving.serialize_keras_object(priors.MixtureOfGaussians(5, 2.0, 1))
    clone = keras.saving.deserialize_keras_object(config)
    assert (clone.num_components, clone.initial_spread, clone.seed) == (5, 2.0, 1)
    with pytest.raises(ValueError, match="vampprior"):
        priors.get("vampprior")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_components": 0}, "num_components=0"),
        ({"num_components": 2.0}, "num_components=2.0"),
        ({"initial_spread": 0}, "initial_spread=0"),
        ({"initial_spread": "wide"}, "initial_spread='wide'"),
    ],
)
def test_mixture_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        priors.MixtureOfGaussians(**kwargs)


def test_priors_compute_in_float32_from_bfloat16_codes(rng):
    # Under mixed_bfloat16 the encoder emits bfloat16 codes. The closed-form
    # KL exp(v) - 1 - v cancels in bfloat16 (to negative values for small
    # v), so priors compute in float32.
    z_mean = rng.normal(scale=0.05, size=(64, 3)).astype("float32")
    z_log_var = rng.normal(scale=0.05, size=(64, 3)).astype("float32")
    z = rng.normal(size=(64, 3)).astype("float32")
    low = [keras.ops.cast(t, "bfloat16") for t in (z_mean, z_log_var, z)]
    rounded = [keras.ops.convert_to_numpy(keras.ops.cast(t, "float32"))
               for t in low]
    m, v = (t.astype("float64") for t in rounded[:2])
    kl = priors.StandardNormal().kl(*low)
    assert kl.dtype == "float32"
    np.testing.assert_allclose(np.asarray(kl), 0.5 * (np.exp(v) + m**2 - 1 - v),
                               rtol=1e-3, atol=1e-7)
    assert np.all(np.asarray(kl) >= 0)
    mixture = _mixture(rng.normal(size=(2, 3)).astype("float32"),
                       np.zeros((2, 3), "float32"), np.zeros((2,), "float32"))
    for method, args in ((mixture.kl, low), (mixture.log_prob, low[2:])):
        result = method(*args)
        assert result.dtype == "float32"
        np.testing.assert_allclose(
            np.asarray(result), np.asarray(method(*rounded[-len(args):])),
            rtol=1e-6)
    assert priors.StandardNormal().log_prob(low[2]).dtype == "float32"
