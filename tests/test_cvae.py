"""Conditional VAE: labels in, labels honoured, labels required."""

import keras
import numpy as np
import pytest

import keras_vae


def _halves(num_examples, seed=0):
    """8x8 images whose class says which half is bright: 0 left, 1 right."""
    rng = np.random.default_rng(seed)
    labels = np.arange(num_examples) % 2
    x = rng.uniform(0.0, 0.1, size=(num_examples, 8, 8, 1)).astype("float32")
    x[labels == 0, :, :4] += 0.85
    x[labels == 1, :, 4:] += 0.85
    return x, labels


def _cvae(**kwargs):
    return keras_vae.models.mlp_cvae((8, 8, 1), 2, latent_dim=2, hidden_units=(32,),
                                     seed=0, **kwargs)


def test_samples_follow_the_requested_class():
    x, labels = _halves(256)
    keras.utils.set_random_seed(0)
    model = _cvae()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(x, labels, epochs=15, batch_size=64, verbose=0)
    left = np.asarray(model.sample(50, labels=0, seed=0))
    right = np.asarray(model.sample(50, labels=np.ones(50, "int64"), seed=0))
    assert left.shape == right.shape == (50, 8, 8, 1)
    assert left[:, :, :4].mean() > left[:, :, 4:].mean() + 0.5
    assert right[:, :, 4:].mean() > right[:, :, :4].mean() + 0.5
    # The same code decoded under the other label swaps the halves.
    z = np.asarray(model.encode(x[:8], labels[:8])[0])
    swapped = np.asarray(model.decode(z, 1 - labels[:8]))
    assert np.all((swapped[:, :, :4].mean((1, 2, 3)) > 0.5) == (labels[:8] == 1))


@pytest.fixture(scope="module")
def label_form_model():
    # One model for every label form: forms that reach the train step with
    # the same signature reuse its trace, the others trace their own.
    model = _cvae()
    model.compile(optimizer="adam")
    return model


@pytest.mark.parametrize("form", ["integer", "one_hot", "tuple", "dataset", "column"])
def test_fit_accepts_every_label_form(form, label_form_model):
    x, labels = _halves(32)
    model = label_form_model
    one_hot = np.eye(2, dtype="float32")[labels]
    if form == "integer":
        history = model.fit(x, labels, batch_size=16, verbose=0)
    elif form == "one_hot":
        history = model.fit(x, one_hot, batch_size=16, verbose=0)
    elif form == "column":
        history = model.fit(x, labels[:, None], batch_size=16, verbose=0)
    elif form == "tuple":
        history = model.fit((x, labels), batch_size=16, verbose=0)
    else:
        dataset = keras_vae.datasets.to_dataset(x, 16, y=labels)
        history = model.fit(dataset, verbose=0)
    assert np.isfinite(history.history["elbo"][0])
    logs = model.evaluate(x, labels, verbose=0, return_dict=True)
    assert logs["elbo"] == pytest.approx(
        -(logs["reconstruction_loss"] + logs["kl_loss"]), rel=1e-5)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda m, x, y: m.fit(x, verbose=0), "labels"),
        (lambda m, x, y: m.fit(x, y + 2, verbose=0), "max=3"),
        (lambda m, x, y: m.fit(x, y[:5], verbose=0), r"shape \(5,\)"),
        (lambda m, x, y: m.fit(x, np.full((len(x), 2), 0.5), verbose=0), "single 1"),
        (lambda m, x, y: m.fit(keras_vae.datasets.to_dataset(x, 8), verbose=0),
         "element_spec"),
        (lambda m, x, y: m.sample(3), "labels=None"),
        (lambda m, x, y: m.sample(3, labels=[0, 1]), r"shape \(2,\)"),
        (lambda m, x, y: m.reconstruct(x), "labels=None"),
        (lambda m, x, y: m.sample(3, labels=0.5), "min=0.5"),
    ],
)
def test_cvae_refuses_missing_or_bad_labels(call, match):
    x, labels = _halves(16)
    model = _cvae()
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match=match):
        call(model, x, labels)


def test_cvae_refuses_an_unconditional_encoder():
    plain = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(8,))
    with pytest.raises(ValueError, match="y_one_hot"):
        keras_vae.CVAE(plain.encoder, plain.decoder, num_classes=2)


def test_conv_cvae_keeps_the_image_size_and_takes_labels_as_channels():
    model = keras_vae.models.conv_cvae((9, 11, 2), num_classes=4, latent_dim=3,
                                       filters=(4, 8), decoder_block="upsample")
    assert tuple(model.decoder.output.shape) == (None, 9, 11, 2)
    first_conv = model.encoder.get_layer("encoder_body").get_layer("encoder_conv_0")
    assert first_conv.kernel.shape[2] == 2 + 4
    x = np.random.default_rng(0).uniform(size=(3, 9, 11, 2)).astype("float32")
    assert np.asarray(model.reconstruct(x, [0, 1, 3])).shape == x.shape
