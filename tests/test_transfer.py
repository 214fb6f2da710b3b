"""Fine-tuning on new data with the encoder frozen, wholly or in part."""

import keras
import numpy as np
import pytest

import keras_vae
from keras_vae import transfer


def _weights(model, names):
    return {name: [np.array(w) for w in model.encoder.get_layer(name).get_weights()]
            for name in names}


@pytest.fixture
def pretrained(digits):
    (x, y), _ = digits
    keras.utils.set_random_seed(0)
    model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(16,), seed=0)
    model.compile(optimizer="adam")
    # "Old" data: digits 0-4; the new data set is digits 5-9.
    model.fit(x[y < 5][:300], epochs=1, batch_size=100, verbose=0)
    return model, x[y >= 5][:300]


def test_fine_tune_keeps_a_frozen_encoder_and_trains_the_decoder(pretrained):
    model, x_new = pretrained
    names = ["encoder_dense_0", "z_mean", "z_log_var"]
    encoder_before = _weights(model, names)
    decoder_before = [np.array(w) for w in model.decoder.get_weights()]
    before = keras_vae.metrics.elbo(model, x_new, seed=0)
    history = transfer.fine_tune(model, x_new, epochs=5, learning_rate=3e-3,
                                 batch_size=50, verbose=0)
    for name, weights in _weights(model, names).items():
        for old, new in zip(encoder_before[name], weights):
            np.testing.assert_array_equal(old, new, err_msg=name)
    assert any(not np.array_equal(a, b)
               for a, b in zip(decoder_before, model.decoder.get_weights()))
    assert len(history.history["loss"]) == 5
    assert keras_vae.metrics.elbo(model, x_new, seed=0) > before


def test_partly_frozen_encoder_trains_only_the_named_layers(pretrained):
    model, x_new = pretrained
    frozen = transfer.freeze_encoder(model, trainable_layers=2)
    assert frozen == ["encoder_dense_0"]
    before = _weights(model, ["encoder_dense_0", "z_mean"])
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(x_new, epochs=1, batch_size=100, verbose=0)
    after = _weights(model, ["encoder_dense_0", "z_mean"])
    np.testing.assert_array_equal(before["encoder_dense_0"][0], after["encoder_dense_0"][0])
    assert not np.array_equal(before["z_mean"][0], after["z_mean"][0])
    assert transfer.freeze_encoder(model, ["z_mean", "z_log_var"]) == ["encoder_dense_0"]
    transfer.unfreeze(model)
    assert all(layer.trainable for layer in model.encoder.layers)


def test_frozen_state_survives_save_and_load(pretrained, tmp_path):
    model, _ = pretrained
    transfer.freeze_encoder(model)
    path = str(tmp_path / "frozen.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert not restored.encoder.get_layer("encoder_dense_0").trainable
    assert restored.decoder.get_layer("decoder_dense_0").trainable


def test_fine_tune_a_cvae_with_labels(digits):
    (x, y), _ = digits
    model = keras_vae.models.mlp_cvae((8, 8, 1), 10, 2, hidden_units=(16,), seed=0)
    before = np.array(model.encoder.get_layer("encoder_body").get_layer("z_mean").kernel)
    transfer.fine_tune(model, x[:100], y[:100], epochs=1, batch_size=50, verbose=0)
    after = np.array(model.encoder.get_layer("encoder_body").get_layer("z_mean").kernel)
    np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize(
    "trainable_layers,match",
    [(7, "trainable_layers=7"), (-1, "trainable_layers=-1"),
     (["dense_9"], "dense_9"), ("z_mean", "not a string")],
)
def test_freeze_encoder_refuses_bad_layer_choices(trainable_layers, match):
    model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(16,))
    with pytest.raises(ValueError, match=match):
        transfer.freeze_encoder(model, trainable_layers)


@pytest.mark.parametrize("learning_rate", [-1, 0, float("nan"), "fast"])
def test_fine_tune_refuses_a_learning_rate_that_is_not_positive(learning_rate):
    model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(8,))
    x = np.full((4, 8, 8, 1), 0.5, "float32")
    with pytest.raises(ValueError, match="learning_rate"):
        transfer.fine_tune(model, x, learning_rate=learning_rate, verbose=0)
    assert all(layer.trainable for layer in model.encoder.layers)
