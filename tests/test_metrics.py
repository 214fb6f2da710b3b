"""keras_vae.metrics: ELBO, IWAE NLL, active units, reconstruction error."""

import math

import keras
import numpy as np
import pytest
from scipy.special import logsumexp

import keras_vae
from keras_vae import metrics


@pytest.fixture(scope="module")
def trained(digits):
    """A small MLP VAE trained a few epochs on the 8x8 digits."""
    (x_train, _), (x_test, _) = digits
    keras.utils.set_random_seed(0)
    model = keras_vae.models.mlp_vae((8, 8, 1), latent_dim=4, hidden_units=(64,), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(x_train, epochs=8, batch_size=64, verbose=0)
    return model, x_test[:300]


def test_iwae_with_one_sample_equals_the_elbo_within_monte_carlo_error(trained):
    model, x = trained
    iwae = metrics.iwae_nll(model, x, num_samples=1, seed=1, return_per_example=True)
    elbo, per_example = metrics.elbo(model, x, seed=2, return_per_example=True)
    # Two independent one-sample estimates of the same expectation: their
    # difference is within a few standard errors.
    stderr = math.hypot(iwae["stderr"], per_example.std(ddof=1) / math.sqrt(len(x)))
    assert abs(iwae["nll"] + elbo) < 4 * stderr
    assert stderr < 2.0  # the check is not vacuous


def test_iwae_is_monotone_non_increasing_in_k_on_average(trained):
    model, x = trained
    ks = (1, 4, 16, 64)
    curves = np.array([
        [metrics.iwae_nll(model, x, num_samples=k, seed=seed)["nll"] for k in ks]
        for seed in range(2)
    ])
    mean = curves.mean(axis=0)
    assert np.all(np.diff(mean) <= 0), mean
    # And it tightens the bound by a clear margin (0.2 nats here), not noise.
    assert mean[0] - mean[-1] > 0.1, mean


def test_iwae_bound_is_below_the_negative_elbo(trained):
    model, x = trained
    iwae = metrics.iwae_nll(model, x, num_samples=100, seed=0)
    assert iwae["nll"] < -metrics.elbo(model, x, seed=0)
    assert iwae["num_samples"] == 100
    assert iwae["bits_per_dim"] == pytest.approx(iwae["nll"] / (64 * math.log(2.0)))


def test_iwae_chunking_does_not_change_the_estimate_beyond_noise(trained):
    model, x = trained
    whole = metrics.iwae_nll(model, x[:50], num_samples=40, seed=0)
    chunked = metrics.iwae_nll(model, x[:50], num_samples=40, seed=0, batch_size=7,
                               max_rows=30)
    assert abs(whole["nll"] - chunked["nll"]) < 3 * whole["stderr"]


def test_evaluate_reports_the_same_elbo_as_metrics_elbo(trained, tmp_path):
    model, x = trained
    # Same weights and the same seed: the posterior noise is the same draw.
    path = str(tmp_path / "m.keras")
    model.save(path)
    first = keras.saving.load_model(path)
    second = keras.saving.load_model(path)
    first.compile()
    evaluated = first.evaluate(x, batch_size=len(x), verbose=0, return_dict=True)
    value = metrics.elbo(second, x, batch_size=len(x), seed=None)
    assert value == pytest.approx(evaluated["elbo"], rel=1e-5)
    # Different noise: still the same estimator, within Monte Carlo error.
    value, per_example = metrics.elbo(model, x, seed=5, return_per_example=True)
    stderr = per_example.std(ddof=1) / math.sqrt(len(x))
    assert abs(value - evaluated["elbo"]) < 5 * stderr


def test_elbo_ignores_beta_and_free_bits(digits):
    (x, _), _ = digits
    x = x[:64]
    model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(8,), seed=0)
    reference = metrics.elbo(model, x, seed=0)
    model.beta = 4.0
    model.free_bits = 3.0
    assert metrics.elbo(model, x, seed=0) == pytest.approx(reference, rel=1e-6)


def test_log_mean_exp_is_stable_at_large_magnitudes():
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(5, 50)) * 30 - 5000.0
    expected = logsumexp(weights, axis=-1) - math.log(50)
    np.testing.assert_allclose(metrics._log_mean_exp(weights), expected, rtol=1e-12)
    assert np.isfinite(metrics._log_mean_exp(weights + 1e4)).all()


def test_iwae_stays_finite_for_hundreds_of_nats_per_example(rng):
    # A unit-scale Gaussian on data far from the decoder mean: NLL ~ 1e4.
    model = keras_vae.models.mlp_vae((30,), 2, hidden_units=(8,), likelihood="gaussian")
    x = rng.normal(loc=25.0, size=(20, 30)).astype("float32")
    result = metrics.iwae_nll(model, x, num_samples=50)
    assert np.isfinite(result["nll"]) and result["nll"] > 1000


def test_active_units_counts_dimensions_whose_posterior_mean_varies(digits):
    (x, _), _ = digits
    model = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(16,), seed=0)
    head = model.encoder.get_layer("z_mean")
    kernel, bias = head.get_weights()
    kernel[:, 1] = 0.0  # z[1] and z[3] no longer depend on x
    kernel[:, 3] = 0.0
    head.set_weights([kernel * 5.0, bias])
    variances = metrics.posterior_mean_variance(model, x[:200])
    assert variances[1] == 0.0 and variances[3] == 0.0
    assert metrics.active_units(model, x[:200]) == 2
    assert metrics.active_units(model, x[:200], threshold=1e9) == 0


def test_reconstruction_error_is_the_mse_of_reconstruct(trained):
    model, x = trained
    expected = np.mean((np.asarray(model.reconstruct(x)) - x) ** 2)
    assert metrics.reconstruction_error(model, x, batch_size=64) == pytest.approx(
        expected, rel=1e-5)


def test_metrics_of_a_cvae_need_labels(digits):
    (x, y), _ = digits
    model = keras_vae.models.mlp_cvae((8, 8, 1), 10, 2, hidden_units=(8,), seed=0)
    with pytest.raises(ValueError, match="labels"):
        metrics.elbo(model, x[:10])
    result = metrics.iwae_nll(model, x[:10], num_samples=5, labels=y[:10])
    assert np.isfinite(result["nll"])
    # Blind the encoder to the 64 pixels: the code then varies with the
    # label alone, so the count depends on the labels given.
    dense = model.encoder.get_layer("encoder_body").get_layer("encoder_dense_0")
    kernel, bias = dense.get_weights()
    kernel[:64] = 0.0
    dense.set_weights([kernel, bias])
    assert metrics.active_units(model, x[:10], labels=np.arange(10),
                                threshold=1e-6) == 2
    assert metrics.active_units(model, x[:10], labels=np.full(10, 3),
                                threshold=1e-6) == 0
    plain = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(8,))
    with pytest.raises(ValueError, match="labels"):
        metrics.elbo(plain, x[:10], labels=y[:10])


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda m, x: metrics.iwae_nll(m, x, num_samples=0), "num_samples=0"),
        (lambda m, x: metrics.iwae_nll(m, x, max_rows=-1), "max_rows=-1"),
        (lambda m, x: metrics.active_units(m, x, threshold=-1), "threshold=-1"),
        (lambda m, x: metrics.elbo(m, x, batch_size=0), "batch_size=0"),
        (lambda m, x: metrics.elbo(m, x[..., 0]), "shape"),
    ],
)
def test_metrics_refuse_bad_arguments(call, match, rng):
    model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(8,))
    x = rng.uniform(size=(4, 8, 8, 1)).astype("float32")
    with pytest.raises(ValueError, match=match):
        call(model, x)
