"""A VAE keeps the promises `fit`, `evaluate`, `compile` and `export` make.

What any Keras model does, a keras-vae model must do too: weigh examples by
`sample_weight` (and by `class_weight` where there are classes), call
per-batch callbacks on every batch, export in any state, log the metrics
given to `compile` and tell `ModelCheckpoint` which way is better, accept
the encoders of the keras.io and TensorFlow tutorials, and read a decoder
that ends in a sigmoid as probabilities. The JAX backend is checked in one
subprocess at the end.
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from backend_runner import run_with_backend

import keras_vae
from keras_vae import vae as vae_module

SHAPE = (8, 8, 1)


def _vae(**kwargs):
    return keras_vae.models.mlp_vae(SHAPE, 2, hidden_units=(8,), seed=0,
                                    **kwargs)


def _cvae(**kwargs):
    return keras_vae.models.mlp_cvae(SHAPE, 3, 2, hidden_units=(8,), seed=0,
                                     **kwargs)


def _data(count=32, seed=0):
    return np.random.default_rng(seed).uniform(
        size=(count, *SHAPE)).astype("float32")


def _weights(model):
    return [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]


def _kl(model, x):
    z_mean, z_log_var = (np.asarray(t, "float64") for t in model.encode(x))
    return 0.5 * (np.exp(z_log_var) + z_mean**2 - 1.0 - z_log_var).sum(-1)


# ------------------------------------------------------------ sample weights
@pytest.mark.parametrize("path", ["keras_loop", "fused"])
def test_zero_sample_weights_leave_the_weights_unchanged(path, monkeypatch):
    if path == "fused":
        monkeypatch.setattr(vae_module, "XLA_MIN_STEPS", 1)
    model = _vae()
    model.compile(optimizer="adam")
    before = _weights(model)
    model.fit(_data(), sample_weight=np.zeros(32), batch_size=8, verbose=0)
    fused = "make_fused_train_function" in model.train_function.__qualname__
    assert fused == (path == "fused")
    assert int(model.optimizer.iterations) == 4
    for a, b in zip(before, _weights(model)):
        np.testing.assert_array_equal(a, b)
    # The same fit with weights 1 does train.
    model.fit(_data(), sample_weight=np.ones(32), batch_size=8, verbose=0)
    assert not np.array_equal(before[0], _weights(model)[0])


def test_evaluate_reports_the_sample_weighted_mean_of_the_terms():
    model = _vae()
    model.compile(optimizer="adam")
    x = _data()
    weights = np.random.default_rng(1).uniform(size=32)
    weights[:8] = 0.0
    logs = model.evaluate(x, sample_weight=weights, batch_size=8, verbose=0,
                          return_dict=True)
    # The KL to the standard normal prior is exact (no sampling).
    kl = _kl(model, x)
    assert logs["kl_loss"] == pytest.approx(
        np.sum(weights * kl) / np.sum(weights), rel=1e-5)
    assert logs["kl_loss"] != pytest.approx(kl.mean(), rel=1e-3)
    assert logs["elbo"] == pytest.approx(
        -(logs["reconstruction_loss"] + logs["kl_loss"]), rel=1e-5)


def test_class_weight_weighs_a_cvae_by_class_and_is_refused_elsewhere():
    x, labels = _data(), np.arange(32) % 3
    model = _cvae()
    model.compile(optimizer="adam")
    before = _weights(model)
    model.fit(x, labels, class_weight={0: 0.0, 1: 0.0, 2: 0.0}, batch_size=8,
              verbose=0)
    for a, b in zip(before, _weights(model)):
        np.testing.assert_array_equal(a, b)
    model.fit(x, labels, class_weight={0: 1.0}, batch_size=8, verbose=0)
    assert not np.array_equal(before[0], _weights(model)[0])
    plain = _vae()
    plain.compile(optimizer="adam")
    with pytest.raises(ValueError, match="class_weight.*sample_weight"):
        plain.fit(x, class_weight={0: 1.0}, verbose=0)
    for bad in (np.full(32, -1.0), np.ones(5), np.full(32, np.nan)):
        with pytest.raises(ValueError, match="sample_weight"):
            plain.fit(x, sample_weight=bad, verbose=0)


# ------------------------------------------------------- per-batch callbacks
def test_per_batch_callbacks_on_instances_see_every_batch():
    model = _vae()
    model.compile(optimizer="adam")
    seen = []
    callback = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(batch))
    model.fit(_data(23), batch_size=1, callbacks=[callback], verbose=0)
    assert seen == list(range(23))
    assert model.steps_per_execution == 1


def test_epoch_only_callbacks_keep_several_steps_per_execution(tmp_path):
    model = _vae()
    model.compile(optimizer="adam")
    epoch_only = [
        keras.callbacks.ModelCheckpoint(str(tmp_path / "best.keras")),
        keras.callbacks.EarlyStopping(monitor="loss"),
        keras_vae.callbacks.KLWarmup(warmup=2, unit="epoch"),
        keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: None),
    ]
    model.fit(_data(), batch_size=4, callbacks=epoch_only, verbose=0)
    assert model.steps_per_execution == vae_module.DEFAULT_STEPS_PER_EXECUTION
    # A callback that is not known to act per epoch only gets every batch.
    model.fit(_data(), batch_size=4, verbose=0, callbacks=[
        keras_vae.callbacks.KLWarmup(warmup=2, unit="step")])
    assert model.steps_per_execution == 1


# --------------------------------------------------------------------- export
def _check_serving(model, path, x, inputs):
    expected = np.asarray(model.predict(inputs, verbose=0))
    if path.endswith(".tflite"):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=path)
        runner = interpreter.get_signature_runner()
        names = sorted(interpreter.get_signature_list()["serving_default"][
            "inputs"])
        feed = inputs if isinstance(inputs, list) else [inputs]
        outputs = runner(**dict(zip(names, feed)))
        actual = next(iter(outputs.values()))
    else:
        artifact = tf.saved_model.load(path)
        actual = artifact.serve(inputs).numpy()
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_export_works_fresh_trained_evaluated_and_loaded(tmp_path):
    x = _data(16)
    model = _vae()
    path = str(tmp_path / "fresh")
    model.export(path, format="tf_saved_model", verbose=False)
    _check_serving(model, path, x, x)
    model.compile(optimizer="adam")
    model.fit(x, verbose=0)
    path = str(tmp_path / "trained.tflite")
    model.export(path, format="litert", verbose=False)
    _check_serving(model, path, x, x)
    model.save(str(tmp_path / "model.keras"))
    loaded = keras.saving.load_model(str(tmp_path / "model.keras"))
    loaded.evaluate(x, verbose=0)
    path = str(tmp_path / "loaded")
    loaded.export(path, format="tf_saved_model", verbose=False)
    _check_serving(loaded, path, x, x)
    conditional = _cvae()
    path = str(tmp_path / "cvae")
    conditional.export(path, format="tf_saved_model", verbose=False)
    one_hot = np.eye(3, dtype="float32")[np.arange(16) % 3]
    _check_serving(conditional, path, x, [x, one_hot])


# -------------------------------------------------------------------- metrics
def test_compile_metrics_compare_x_with_its_reconstruction():
    x = _data()
    model = _vae()
    model.compile(optimizer="adam", metrics=["mae", keras.metrics.MeanSquaredError()],
                  weighted_metrics=["mse"])
    history = model.fit(x, batch_size=8, validation_data=(x,), verbose=0)
    assert {"mae", "mean_squared_error", "mse", "val_mae"} <= set(history.history)
    logs = model.evaluate(x, batch_size=32, verbose=0, return_dict=True)
    reconstruction = np.asarray(model.reconstruct(x))
    assert logs["mae"] == pytest.approx(np.abs(reconstruction - x).mean(),
                                        rel=1e-5)
    assert logs["mse"] == pytest.approx(np.square(reconstruction - x).mean(),
                                        rel=1e-5)
    # Weighted metrics follow sample_weight; the others do not.
    weights = np.zeros(32)
    weights[0] = 1.0
    logs = model.evaluate(x, sample_weight=weights, verbose=0,
                          return_dict=True)
    assert logs["mse"] == pytest.approx(
        np.square(reconstruction[0] - x[0]).mean(), rel=1e-5)
    assert logs["mae"] == pytest.approx(np.abs(reconstruction - x).mean(),
                                        rel=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    ({"loss": "mse"}, "own loss"),
    ({"metrics": ["no_such_metric"]}, "no_such_metric"),
    ({"metrics": [keras.metrics.MeanAbsoluteError(name="elbo")]}, "unique"),
    ({"metrics": ["mae", "mae"]}, "unique"),
    ({"metrics": [["mae"], ["mse"]]}, "one flat list"),
])
def test_compile_refuses_what_it_cannot_honour(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _vae().compile(optimizer="adam", **kwargs)


def test_checkpoint_and_early_stopping_infer_the_direction_of_our_metrics(
        tmp_path):
    x = _data()
    model = _vae()
    model.compile(optimizer="adam", metrics=["mae"])
    callbacks = [
        keras.callbacks.ModelCheckpoint(str(tmp_path / "best.keras"),
                                        monitor="val_elbo",
                                        save_best_only=True),
        keras.callbacks.EarlyStopping(monitor="val_elbo", patience=5),
        keras.callbacks.EarlyStopping(monitor="val_kl_loss", patience=5),
        keras.callbacks.EarlyStopping(monitor="val_mae", patience=5),
    ]
    model.fit(x, validation_data=(x,), epochs=2, callbacks=callbacks,
              verbose=0)
    assert [c.mode for c in callbacks] == ["max", "max", "min", "min"]
    assert os.path.exists(tmp_path / "best.keras")


# ------------------------------------------------------------------- encoders
class _Sampling(keras.layers.Layer):
    """The keras.io example's sampling layer (a third encoder output)."""

    def call(self, inputs):
        z_mean, z_log_var = inputs
        noise = keras.random.normal(keras.ops.shape(z_mean))
        return z_mean + keras.ops.exp(0.5 * z_log_var) * noise


def test_encoders_of_the_keras_and_tensorflow_tutorials_are_accepted():
    x = _data()
    inputs = keras.Input(SHAPE)
    hidden = keras.layers.Dense(8, activation="relu")(
        keras.layers.Flatten()(inputs))
    z_mean = keras.layers.Dense(2)(hidden)
    z_log_var = keras.layers.Dense(2)(hidden)
    three = keras.Model(inputs, [z_mean, z_log_var,
                                 _Sampling()([z_mean, z_log_var])])
    one = keras.Model(inputs, keras.layers.Dense(4)(hidden))
    for encoder in (three, one):
        decoder = keras_vae.models.mlp_decoder(SHAPE, 2, (8,))
        model = keras_vae.VAE(encoder, decoder)
        assert model.latent_dim == 2
        z_mean, z_log_var = (np.asarray(t) for t in model.encode(x))
        outputs = encoder(x)
        if encoder is one:
            np.testing.assert_allclose(z_mean, np.asarray(outputs)[:, :2],
                                       rtol=1e-6)
            np.testing.assert_allclose(z_log_var, np.asarray(outputs)[:, 2:],
                                       rtol=1e-6)
        else:
            # The sample is ignored: encoding is deterministic.
            np.testing.assert_allclose(z_mean, np.asarray(outputs[0]),
                                       rtol=1e-6)
            np.testing.assert_array_equal(z_mean, np.asarray(model.encode(x)[0]))
        model.compile(optimizer="adam")
        assert np.isfinite(model.fit(x, verbose=0).history["loss"][0])
    odd = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    with pytest.raises(ValueError, match="2 \\* latent_dim"):
        keras_vae.VAE(odd, keras_vae.models.mlp_decoder(SHAPE, 2, (8,)))


# ------------------------------------------------------------ sigmoid decoder
def _sigmoid_decoder(activation="sigmoid", bias=-12.0):
    inputs = keras.Input((2,))
    outputs = keras.layers.Dense(
        64, activation=activation,
        bias_initializer=keras.initializers.Constant(bias))(inputs)
    return keras.Model(inputs, keras.layers.Reshape(SHAPE)(outputs))


def test_a_sigmoid_decoder_under_bernoulli_is_read_as_probabilities(tmp_path):
    encoder = keras_vae.models.mlp_encoder(SHAPE, 2, (8,))
    model = keras_vae.VAE(encoder, _sigmoid_decoder(), seed=0)
    assert model.likelihood.from_logits is False
    # A black image under a decoder whose pixels are all ~0: a near-zero
    # loss (as logits the same outputs would cost 64 * log 2 nats).
    black = np.zeros((4, *SHAPE), "float32")
    nll = np.asarray(model.compute_terms(black)["reconstruction"])
    assert np.all(nll < 0.01)
    np.testing.assert_allclose(np.asarray(model.reconstruct(black)),
                               np.asarray(model.decoder(model.encode(black)[0])),
                               rtol=1e-6)
    model.save(str(tmp_path / "sigmoid.keras"))
    loaded = keras.saving.load_model(str(tmp_path / "sigmoid.keras"))
    assert loaded.likelihood.from_logits is False


def test_a_decoder_that_cannot_feed_the_likelihood_is_refused():
    encoder = keras_vae.models.mlp_encoder(SHAPE, 2, (8,))
    with pytest.raises(ValueError, match="from_logits=False"):
        keras_vae.VAE(encoder, _sigmoid_decoder(),
                      likelihood=keras_vae.likelihoods.Bernoulli())
    with pytest.raises(ValueError, match="softmax"):
        keras_vae.VAE(encoder, _sigmoid_decoder("softmax"))
    # A Gaussian mean may well come out of a sigmoid.
    model = keras_vae.VAE(encoder, _sigmoid_decoder(), likelihood="gaussian")
    assert isinstance(model.likelihood, keras_vae.likelihoods.Gaussian)


# ------------------------------------------------------------------------ JAX
def test_jax_backend_keeps_the_contract():
    out = run_with_backend(
        """
        import numpy as np, keras, keras_vae, jax.numpy as jnp
        import tensorflow as tf
        assert keras.backend.backend() == "jax"
        x = np.random.default_rng(0).uniform(size=(32, 8, 8, 1)).astype("float32")
        model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(8,), seed=0)
        model.compile(optimizer="adam", metrics=["mae"])
        before = [np.array(w) for w in model.get_weights()]
        model.fit(x, sample_weight=np.zeros(32), batch_size=8, verbose=0)
        assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
        weights = np.random.default_rng(1).uniform(size=32)
        logs = model.evaluate(x, sample_weight=weights, batch_size=8, verbose=0,
                              return_dict=True)
        z_mean, z_log_var = (np.asarray(t, "float64") for t in model.encode(x))
        kl = 0.5 * (np.exp(z_log_var) + z_mean**2 - 1 - z_log_var).sum(-1)
        np.testing.assert_allclose(logs["kl_loss"], (weights * kl).sum() / weights.sum(),
                                   rtol=1e-5)
        # Streaming input is checked in every batch, on JAX too.
        bad = x.copy(); bad[20] = np.nan
        try:
            model.fit(tf.data.Dataset.from_tensor_slices(bad).batch(8), verbose=0)
            raise AssertionError("NaN in batch 2 was not refused")
        except ValueError as error:
            assert "Batch 2" in str(error) and "`x`" in str(error), error
        # The model is whole after the refused fit, and JAX arrays are checked.
        model.fit(x, epochs=1, verbose=0)
        try:
            model.encode(jnp.asarray(bad))
            raise AssertionError("NaN in a JAX array was not refused")
        except ValueError as error:
            assert "NaN" in str(error)
        # Compiled inference sees the trained weights and equals eager.
        np.testing.assert_allclose(np.asarray(model.reconstruct(jnp.asarray(x))),
                                   np.asarray(model.likelihood.mean(model.decoder_params(
                                       model.posterior(x)[0]))), rtol=1e-6, atol=1e-6)
        cvae = keras_vae.models.mlp_cvae((8, 8, 1), 3, 2, hidden_units=(8,), seed=0)
        cvae.compile(optimizer="adam")
        labels = np.arange(32) % 3
        before = [np.array(w) for w in cvae.get_weights()]
        cvae.fit(x, labels, class_weight={0: 0.0, 1: 0.0, 2: 0.0}, verbose=0)
        assert all(np.array_equal(a, b) for a, b in zip(before, cvae.get_weights()))
        labels[30] = 7
        try:
            cvae.fit(tf.data.Dataset.from_tensor_slices((x, labels)).batch(8), verbose=0)
            raise AssertionError("label 7 of 3 classes was not refused")
        except ValueError as error:
            assert "Batch 3" in str(error) and "labels" in str(error), error
        print("ok")
        """
    )
    assert out.strip().splitlines()[-1] == "ok"
