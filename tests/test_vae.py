import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae
from keras_vae.vae import VAE


def small_vae(input_shape=(8, 8, 1), **kwargs):
    return keras_vae.models.mlp_vae(
        input_shape, latent_dim=4, hidden_units=(32,), seed=1, **kwargs
    )


@pytest.fixture(scope="module")
def digits_x():
    (x_train, _), (x_test, _) = keras_vae.datasets.load("digits")
    return x_train[:512], x_test[:128]


def test_fit_reports_the_four_metrics_and_loss_falls(digits_x):
    x_train, _ = digits_x
    model = small_vae()
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(x_train, epochs=6, batch_size=64, verbose=0).history
    assert sorted(history) == ["elbo", "kl_loss", "loss", "reconstruction_loss"]
    assert history["loss"][-1] < 0.85 * history["loss"][0]
    # beta = 1: the elbo metric is minus the loss.
    np.testing.assert_allclose(history["elbo"], -np.array(history["loss"]), rtol=1e-5)


@pytest.mark.parametrize("jit_compile", [True, False])
def test_fit_on_tf_data_of_x_and_of_x_y(digits_x, jit_compile):
    x_train, _ = digits_x
    labels = np.arange(len(x_train)) % 10
    for dataset in (
        keras_vae.datasets.to_dataset(x_train, 64, seed=0),
        keras_vae.datasets.to_dataset(x_train, 64, seed=0, y=labels),
    ):
        model = small_vae()
        model.compile(optimizer="adam", jit_compile=jit_compile)
        history = model.fit(dataset, epochs=2, verbose=0).history
        assert np.isfinite(history["loss"]).all()
        assert history["loss"][1] < history["loss"][0]


def test_beta_weights_only_the_training_loss(digits_x):
    x_train, _ = digits_x
    model = small_vae(beta=4.0)
    model.compile(optimizer="adam")
    logs = model.fit(x_train[:64], epochs=1, batch_size=64, verbose=0).history
    recon, kl = logs["reconstruction_loss"][0], logs["kl_loss"][0]
    np.testing.assert_allclose(logs["loss"][0], recon + 4.0 * kl, rtol=1e-4)
    np.testing.assert_allclose(logs["elbo"][0], -(recon + kl), rtol=1e-4)
    model.beta = 0.5
    assert model.beta == 0.5 and float(model.beta_variable.numpy()) == 0.5


def test_kl_term_equals_monte_carlo_estimate(rng):
    model = small_vae()
    x = rng.uniform(size=(4, 8, 8, 1)).astype("float32")
    z_mean, z_log_var = (np.asarray(t, "float64") for t in model.encode(x))
    z_log_var = z_log_var + rng.normal(scale=0.5, size=z_log_var.shape)  # not ~0
    closed_form = np.asarray(model.prior.kl(z_mean.astype("float32"),
                                            z_log_var.astype("float32"))).sum(-1)
    std = np.exp(0.5 * z_log_var)
    samples = z_mean + std * rng.standard_normal((200_000, *z_mean.shape))
    log_q = -0.5 * (np.log(2 * np.pi) + z_log_var + ((samples - z_mean) / std) ** 2)
    log_p = -0.5 * (np.log(2 * np.pi) + samples ** 2)
    monte_carlo = (log_q - log_p).sum(-1).mean(0)
    np.testing.assert_allclose(closed_form, monte_carlo, atol=0.02, rtol=0.01)


def test_reconstruction_term_is_the_bernoulli_nll_of_the_decoder(rng):
    model = small_vae()
    x = rng.uniform(size=(3, 8, 8, 1)).astype("float32")
    terms = model.compute_terms(x, seed=3)
    logits = np.asarray(model.decoder(terms["z"]), "float64").reshape(3, -1)
    flat = x.reshape(3, -1).astype("float64")
    expected = (np.logaddexp(0, logits) - flat * logits).sum(1)
    np.testing.assert_allclose(np.asarray(terms["reconstruction"]), expected, rtol=1e-5)


def test_encode_decode_reconstruct_sample_shapes(rng):
    model = small_vae()
    x = rng.uniform(size=(5, 8, 8, 1)).astype("float32")
    z_mean, z_log_var = model.encode(x)
    assert z_mean.shape == (5, 4) and z_log_var.shape == (5, 4)
    decoded = np.asarray(model.decode(np.asarray(z_mean)))
    assert decoded.shape == (5, 8, 8, 1) and 0 <= decoded.min() and decoded.max() <= 1
    np.testing.assert_allclose(np.asarray(model.reconstruct(x)), decoded, atol=1e-6)
    np.testing.assert_allclose(np.asarray(model.predict(x, verbose=0)), decoded, atol=1e-6)
    assert np.asarray(model.sample(7, seed=0)).shape == (7, 8, 8, 1)


def test_same_seed_same_samples_and_other_seed_differs():
    model = small_vae()
    a = np.asarray(model.sample(6, seed=11))
    b = np.asarray(model.sample(6, seed=11))
    c = np.asarray(model.sample(6, seed=12))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    # Same weights and seed-generator state: the same stream of samples.
    twin = VAE.from_config(model.get_config())
    twin.set_weights(model.get_weights())
    np.testing.assert_array_equal(np.asarray(model.sample(3)), np.asarray(twin.sample(3)))
    assert np.abs(np.asarray(model.sample(3)) - np.asarray(model.sample(3))).max() > 1e-3


def test_log_variance_is_clipped_so_outputs_stay_finite():
    encoder = keras_vae.models.mlp_encoder((4,), 2, (3,))
    huge = [w * 1e6 for w in encoder.get_weights()]
    encoder.set_weights(huge)
    decoder = keras_vae.models.mlp_decoder((4,), 2, (3,))
    model = VAE(encoder, decoder, seed=0)
    x = np.full((2, 4), 1.0, "float32")
    terms = model.compute_terms(x, seed=0)
    assert float(np.max(np.asarray(terms["z_log_var"]))) <= 10.0
    assert np.isfinite(np.asarray(terms["kl"])).all()


def test_save_and_load_is_exact_after_training(tmp_path, digits_x):
    x_train, x_test = digits_x
    model = small_vae(likelihood="gaussian_per_pixel", beta=2.0)
    model.compile(optimizer="adam")
    model.fit(x_train[:128], epochs=1, verbose=0)
    path = str(tmp_path / "vae.keras")
    model.save(path)
    restored = keras.saving.load_model(path)  # no custom_objects needed
    assert isinstance(restored, VAE) and restored.beta == 2.0
    np.testing.assert_array_equal(
        np.asarray(restored.predict(x_test, verbose=0)),
        np.asarray(model.predict(x_test, verbose=0)),
    )
    np.testing.assert_array_equal(
        np.asarray(restored.likelihood.log_scale), np.asarray(model.likelihood.log_scale)
    )
    np.testing.assert_array_equal(
        np.asarray(restored.sample(4, seed=5)), np.asarray(model.sample(4, seed=5))
    )


# --------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "x,match",
    [
        (np.full((4, 8, 8, 1), np.nan, "float32"), "NaN or inf"),
        (np.full((4, 8, 8, 1), np.inf, "float32"), "NaN or inf"),
        (np.ones((4, 28, 28, 1), "float32"), r"wrong shape.*\(batch, 8, 8, 1\)"),
        (np.ones((4, 64), "float32"), r"Reshape it"),
        (np.full((4, 8, 8, 1), 2.0, "float32"), r"\[0, 1\].*max=2"),
        (np.full((4, 8, 8, 1), 255, "uint8"), "integer dtype uint8.*/ 255"),
        (np.zeros((0, 8, 8, 1), "float32"), "empty"),
    ],
)
def test_bad_input_is_refused_before_training(x, match):
    model = small_vae()
    model.compile(optimizer="adam")
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=match):
        model.fit(x, epochs=1, verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)  # no step ran
    with pytest.raises(ValueError, match=match):
        model.evaluate(x, verbose=0)


def test_bad_input_in_a_dataset_is_refused():
    model = small_vae()
    model.compile(optimizer="adam")
    dataset = tf.data.Dataset.from_tensor_slices(np.full((8, 8, 8, 1), 3.0, "float32")).batch(4)
    with pytest.raises(ValueError, match=r"first batch.*\[0, 1\]"):
        model.fit(dataset, epochs=1, verbose=0)


def test_gaussian_likelihood_accepts_values_outside_unit_interval(rng):
    model = small_vae(likelihood="gaussian")
    model.compile(optimizer="adam")
    x = rng.normal(size=(16, 8, 8, 1)).astype("float32") * 3
    history = model.fit(x, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])


@pytest.mark.parametrize("kwargs,match", [
    ({"beta": -1}, r"Expected `beta` >= 0. Received: beta=-1"),
    ({"beta": float("nan")}, "beta=nan"),
    ({"free_bits": -0.5}, "free_bits=-0.5"),
    ({"likelihood": "mse"}, "Unknown likelihood.*'mse'"),
    ({"prior": "laplace"}, "Unknown prior.*'laplace'"),
])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small_vae(**kwargs)


def test_beta_setter_refuses_negative():
    model = small_vae()
    with pytest.raises(ValueError, match="beta=-2"):
        model.beta = -2


def test_encoder_must_have_two_outputs():
    encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    decoder = keras_vae.models.mlp_decoder((4,), 2, (3,))
    with pytest.raises(ValueError, match=r"two outputs"):
        VAE(encoder, decoder)


# ----------------------------------------------------- compiled inference
def test_compiled_inference_equals_eager_and_follows_the_weights(rng):
    model = small_vae()
    x = rng.uniform(size=(3, 8, 8, 1)).astype("float32")
    z = rng.normal(size=(3, 4)).astype("float32")

    def eager():
        z_mean, z_log_var = model.posterior(x)
        return {
            "encode": (z_mean, z_log_var),
            "decode": model.likelihood.mean(model.decoder_params(z)),
            "reconstruct": model.likelihood.mean(model.decoder_params(z_mean)),
            "sample": model.likelihood.mean(model.decoder_params(
                model.prior.sample(2, 4, seed=7))),
        }

    def compiled():
        return {
            "encode": model.encode(x), "decode": model.decode(z),
            "reconstruct": model.reconstruct(x),
            "sample": model.sample(2, seed=7),
        }

    def assert_same(actual, expected):
        for name in expected:
            for a, b in zip(tf.nest.flatten(actual[name]),
                            tf.nest.flatten(expected[name])):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                           rtol=1e-6, atol=1e-7, err_msg=name)

    first = compiled()
    assert_same(first, eager())
    # New weights (training, loading, pruning masks) are seen at once.
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    model.fit(x, epochs=3, verbose=0)
    assert_same(compiled(), eager())
    assert np.abs(np.asarray(first["reconstruct"])
                  - np.asarray(model.reconstruct(x))).max() > 1e-4
    model.set_weights([w * 0.5 for w in model.get_weights()])
    assert_same(compiled(), eager())
    # Every input form goes through the same compiled function.
    for form in (x.tolist(), tf.constant(x)):
        np.testing.assert_allclose(np.asarray(model.reconstruct(form)),
                                   np.asarray(model.reconstruct(x)), rtol=1e-6)


def test_compiled_inference_follows_the_fake_quantization_switch(rng):
    from keras_vae.compression import quantize_aware, set_quantization

    model = quantize_aware(small_vae())
    x = rng.uniform(size=(4, 8, 8, 1)).astype("float32")
    model.compile(optimizer="adam")
    model.fit(x, epochs=1, verbose=0)  # observes activation ranges
    for enabled in (True, False, True):
        set_quantization(model, enabled)
        np.testing.assert_allclose(
            np.asarray(model.reconstruct(x)),
            np.asarray(model.likelihood.mean(model.decoder_params(
                model.posterior(x)[0]))), rtol=1e-6, atol=1e-7)
    set_quantization(model, False)
    off = np.asarray(model.reconstruct(x))
    set_quantization(model, True)
    assert np.abs(off - np.asarray(model.reconstruct(x))).max() > 0


def test_inference_is_traced_once_per_input_signature_not_run_eagerly(rng):
    model = small_vae()
    runs = []
    call = model.decoder.call

    def counted(*args, **kwargs):
        runs.append(1)  # Python runs while tracing, not in a compiled call
        return call(*args, **kwargs)

    model.decoder.call = counted
    for size in (1, 2, 3, 4, 5, 1, 3):
        x = rng.uniform(size=(size, 8, 8, 1)).astype("float32")
        model.reconstruct(x)
    # The first size, then one trace that generalises the batch size.
    assert len(runs) <= 2
