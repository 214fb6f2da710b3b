"""Multilayer-perceptron VAE builder."""

import math

import keras

from keras_vae import _validation, likelihoods
from keras_vae.cvae import CVAE
from keras_vae.models._heads import (
    check_any_shape,
    check_latent_dim,
    check_units,
    gaussian_posterior_heads,
    label_input,
)
from keras_vae.vae import VAE


def mlp_encoder(input_shape, latent_dim, hidden_units=(512, 256), activation="relu", name="encoder"):
    """Functional MLP encoder: x -> `[z_mean, z_log_var]`.

    Any input shape is flattened first, so images and flat feature vectors
    both work.
    """
    inputs = keras.Input(shape=tuple(input_shape), name="x")
    hidden = keras.layers.Flatten(name="flatten")(inputs)
    for index, units in enumerate(hidden_units):
        hidden = keras.layers.Dense(
            units, activation=activation, name=f"encoder_dense_{index}"
        )(hidden)
    z_mean, z_log_var = gaussian_posterior_heads(hidden, latent_dim)
    return keras.Model(inputs, [z_mean, z_log_var], name=name)


def mlp_decoder(output_shape, latent_dim, hidden_units=(256, 512), activation="relu", name="decoder"):
    """Functional MLP decoder: z -> likelihood parameters of `output_shape`."""
    inputs = keras.Input(shape=(latent_dim,), name="z")
    hidden = inputs
    for index, units in enumerate(hidden_units):
        hidden = keras.layers.Dense(
            units, activation=activation, name=f"decoder_dense_{index}"
        )(hidden)
    flat = keras.layers.Dense(math.prod(output_shape), name="decoder_output")(hidden)
    params = keras.layers.Reshape(tuple(output_shape), name="params")(flat)
    return keras.Model(inputs, params, name=name)


def mlp_vae(
    input_shape,
    latent_dim=16,
    hidden_units=(512, 256),
    likelihood="bernoulli",
    activation="relu",
    **vae_kwargs,
):
    """Build an MLP VAE; the decoder mirrors the encoder's hidden units.

    Args:
        input_shape: tuple of ints. Per-example data shape, e.g.
            `(28, 28, 1)` or `(30,)`.
        latent_dim: int. Size of the latent code.
        hidden_units: tuple of ints. Encoder hidden layer widths; the
            decoder uses them in reverse order.
        likelihood: str or `Likelihood`. See `keras_vae.VAE`.
        activation: str. Hidden activation.
        **vae_kwargs: passed to `keras_vae.VAE` (`beta`, `free_bits`,
            `prior`, `seed`, `name`).

    Example:

    >>> import keras_vae
    >>> model = keras_vae.models.mlp_vae((28, 28, 1), latent_dim=16)
    >>> model.latent_dim
    16
    """
    input_shape = check_any_shape(input_shape)
    latent_dim = check_latent_dim(latent_dim)
    hidden_units = check_units(hidden_units, "hidden_units")
    encoder = mlp_encoder(input_shape, latent_dim, hidden_units, activation)
    # A likelihood may need several parameters per pixel (`params_shape`).
    likelihood = likelihoods.get(likelihood)
    decoder = mlp_decoder(likelihood.params_shape(input_shape), latent_dim,
                          hidden_units[::-1], activation)
    vae_kwargs.setdefault("name", "mlp_vae")
    return VAE(encoder, decoder, likelihood=likelihood, **vae_kwargs)


def mlp_cvae(
    input_shape,
    num_classes,
    latent_dim=16,
    hidden_units=(512, 256),
    likelihood="bernoulli",
    activation="relu",
    **vae_kwargs,
):
    """Build an MLP conditional VAE; the label joins x and z by concatenation.

    Args:
        input_shape: tuple of ints. Per-example data shape.
        num_classes: int. Number of classes.
        latent_dim: int. Size of the latent code.
        hidden_units: tuple of ints. Encoder widths (decoder reversed).
        likelihood: str or `Likelihood`. See `keras_vae.VAE`.
        activation: str. Hidden activation.
        **vae_kwargs: passed to `keras_vae.CVAE`.

    Example:

    >>> import keras_vae
    >>> model = keras_vae.models.mlp_cvae((28, 28, 1), num_classes=10)
    >>> model.num_classes
    10
    """
    input_shape = check_any_shape(input_shape)
    latent_dim = check_latent_dim(latent_dim)
    num_classes = _validation.check_positive_int(num_classes, "num_classes")
    hidden_units = check_units(hidden_units, "hidden_units")
    flat_size = math.prod(input_shape)

    x = keras.Input(shape=input_shape, name="x")
    y = label_input(num_classes)
    flat = keras.layers.Flatten(name="flatten")(x)
    joined = keras.layers.Concatenate(name="join_label")([flat, y])
    body = mlp_encoder((flat_size + num_classes,), latent_dim, hidden_units,
                       activation, name="encoder_body")
    encoder = keras.Model([x, y], body(joined), name="encoder")

    z = keras.Input(shape=(latent_dim,), name="z")
    y = label_input(num_classes)
    joined = keras.layers.Concatenate(name="join_label")([z, y])
    body = mlp_decoder(input_shape, latent_dim + num_classes, hidden_units[::-1],
                       activation, name="decoder_body")
    decoder = keras.Model([z, y], body(joined), name="decoder")
    vae_kwargs.setdefault("name", "mlp_cvae")
    return CVAE(encoder, decoder, num_classes, likelihood=likelihood, **vae_kwargs)
