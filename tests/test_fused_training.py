"""The fused TensorFlow train function of `fit`: same training, faster.

`VAE.fit` on numpy input under the "auto" compile settings (TensorFlow,
XLA, 32 steps per execution) runs each execution's full batches in one
XLA computation and feeds them from `in_memory_dataset`. These tests pin
down that it trains exactly like Keras' own loop and keeps `fit`'s
contract (every batch, the partial one included; epochs of more than one
execution; validation; callbacks).
"""

import keras
import numpy as np
import pytest

import keras_vae
from keras_vae import _fused_training, vae

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the fused train function is TensorFlow's",
)


@pytest.fixture
def always_xla(monkeypatch):
    # Tiny fits stay under the 500-step XLA threshold of "auto"; lower it so
    # the test runs the path that real trainings take.
    monkeypatch.setattr(vae, "XLA_MIN_STEPS", 1)


def _data(count=1000, seed=0):
    return np.random.default_rng(seed).uniform(
        size=(count, 8, 8, 1)).astype("float32")


def _model(**compile_kwargs):
    model = keras_vae.models.mlp_vae(
        (8, 8, 1), latent_dim=2, hidden_units=(16,), seed=0
    )
    model.compile(optimizer="adam", **compile_kwargs)
    return model


def _weights(model):
    return [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]


def test_fused_fit_trains_exactly_like_keras_loop(always_xla):
    x = _data()
    keras.utils.set_random_seed(0)
    fused = _model()
    # In order, so that both runs see the same batches.
    fused_history = fused.fit(x, epochs=3, batch_size=64, shuffle=False,
                              verbose=0)
    assert "make_fused_train_function" in fused.train_function.__qualname__

    keras.utils.set_random_seed(0)
    reference = _model(jit_compile=True, steps_per_execution=32)
    reference_history = reference.fit(
        _fused_training.in_memory_dataset(x, 64, shuffle=False), epochs=3,
        shuffle=False, verbose=0,
    )
    assert "make_fused_train_function" not in (
        reference.train_function.__qualname__
    )
    # 1000 images in batches of 64: 15 full batches and one of 40, each
    # epoch, all trained.
    assert int(fused.optimizer.iterations) == 3 * 16
    assert int(reference.optimizer.iterations) == 3 * 16
    for a, b in zip(_weights(fused), _weights(reference)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # And the weights did move.
    assert not np.allclose(_weights(fused)[0], _weights(_model())[0])
    np.testing.assert_allclose(
        fused_history.history["elbo"], reference_history.history["elbo"],
        rtol=1e-5,
    )


def test_epochs_of_several_executions_and_a_partial_batch(always_xla):
    x = _data(1000)
    model = _model()
    # Batches of 16: 62 full and one of 8 per epoch, i.e. two executions
    # (32 steps, then 31) per epoch.
    history = model.fit(x, epochs=2, batch_size=16, verbose=0)
    assert int(model.optimizer.iterations) == 2 * 63
    assert history.history["loss"][1] < history.history["loss"][0]


def test_loss_falls_and_evaluate_agrees(always_xla, digits):
    (x_train, _), _ = digits
    keras.utils.set_random_seed(1)
    model = keras_vae.models.mlp_vae(
        x_train.shape[1:], latent_dim=4, hidden_units=(64,), seed=1
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(x_train, epochs=8, batch_size=64, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.8 * losses[0]
    train_elbo = model.evaluate(x_train, batch_size=len(x_train), verbose=0,
                                return_dict=True)["elbo"]
    # The last epoch's running ELBO and a fresh evaluation of the same
    # data agree to within a few nats (the running mean lags the weights).
    assert abs(train_elbo - history.history["elbo"][-1]) < 5.0


def test_validation_split_and_callbacks_keep_keras_semantics(always_xla):
    x = _data(640)
    model = _model()
    seen = []

    class EpochEnd(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(sorted(logs))

    history = model.fit(x, epochs=2, batch_size=64, validation_split=0.25,
                        callbacks=[EpochEnd()], verbose=0)
    # 480 training images: 8 batches per epoch; validation on the rest.
    assert int(model.optimizer.iterations) == 16
    assert "val_elbo" in history.history
    assert seen[-1] == sorted(history.history)


def test_per_batch_callback_turns_fusion_off(always_xla):
    x = _data(256)
    batches = []

    class BatchEnd(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            batches.append(batch)

    model = _model()
    model.fit(x, epochs=1, batch_size=64, callbacks=[BatchEnd()], verbose=0)
    assert batches == [0, 1, 2, 3]
    assert "make_fused_train_function" not in (
        model.train_function.__qualname__
    )


def test_in_memory_dataset_covers_every_example_once_per_epoch():
    x = np.arange(10, dtype="float32").reshape(10, 1)
    dataset = _fused_training.in_memory_dataset(x, 4, shuffle=True)
    epochs = []
    for _ in range(2):
        values = np.concatenate([batch[0].numpy() for batch in dataset])
        assert sorted(values.ravel().tolist()) == list(range(10))
        epochs.append(values.ravel().tolist())
    assert [len(b[0]) for b in dataset] == [4, 4, 2]
    assert epochs[0] != epochs[1]  # reshuffled every epoch
    in_order = _fused_training.in_memory_dataset(x, 4, shuffle=False)
    assert np.concatenate([b[0].numpy() for b in in_order]).ravel().tolist() \
        == list(range(10))


def test_quantization_aware_model_trains_the_same_on_the_fused_path(
        always_xla):
    from keras_vae.compression import quantize_aware

    x = _data(512)
    results = {}
    for name, compile_kwargs, data in (
        ("fused", {}, x),
        ("keras", dict(jit_compile=True, steps_per_execution=32),
         _fused_training.in_memory_dataset(x, 64, shuffle=False)),
    ):
        keras.utils.set_random_seed(0)
        qat = quantize_aware(keras_vae.models.mlp_vae(
            (8, 8, 1), latent_dim=2, hidden_units=(16,), seed=0))
        qat.compile(optimizer="adam", **compile_kwargs)
        kwargs = {"batch_size": 64} if name == "fused" else {}
        qat.fit(data, epochs=2, shuffle=False, verbose=0, **kwargs)
        fused = "make_fused_train_function" in qat.train_function.__qualname__
        assert fused == (name == "fused")
        # Weights and the observed activation ranges (non-trainable).
        results[name] = [keras.ops.convert_to_numpy(v) for v in qat.weights]
    for a, b in zip(results["fused"], results["keras"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_distribution_strategy_keeps_keras_loop(always_xla):
    import tensorflow as tf

    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        model = _model()
    model.fit(_data(256), epochs=1, batch_size=64, verbose=0)
    assert int(model.optimizer.iterations) == 4
    assert "make_fused_train_function" not in (
        model.train_function.__qualname__
    )


def test_cvae_on_numpy_labels_takes_the_fused_path(always_xla):
    x = _data(200)
    labels = np.arange(200) % 3
    results = {}
    for name, compile_kwargs in (
        ("fused", {}),
        ("keras", dict(jit_compile=True, steps_per_execution=32)),
    ):
        keras.utils.set_random_seed(0)
        model = keras_vae.models.mlp_cvae((8, 8, 1), 3, latent_dim=2,
                                          hidden_units=(16,), seed=0)
        model.compile(optimizer="adam", **compile_kwargs)
        if name == "fused":
            # The defaults of VAE.compile, as for an unconditional model.
            model.fit(x, labels, batch_size=16, epochs=2, shuffle=False,
                      verbose=0)
            assert model.steps_per_execution == 32 and model.jit_compile
            assert "make_fused_train_function" in (
                model.train_function.__qualname__)
        else:
            one_hot = np.eye(3, dtype="float32")[labels]
            model.fit(_fused_training.in_memory_dataset(
                (x, one_hot), 16, shuffle=False), epochs=2, verbose=0)
        # 200 examples in batches of 16: 12 full ones and one of 8.
        assert int(model.optimizer.iterations) == 2 * 13
        results[name] = _weights(model)
    for a, b in zip(results["fused"], results["keras"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
