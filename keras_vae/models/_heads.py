"""Pieces shared by the encoder/decoder builders."""

import keras


def gaussian_posterior_heads(features, latent_dim):
    """Two Dense heads giving `z_mean` and `z_log_var`."""
    z_mean = keras.layers.Dense(latent_dim, name="z_mean")(features)
    z_log_var = keras.layers.Dense(latent_dim, name="z_log_var")(features)
    return z_mean, z_log_var


def check_shape(input_shape, rank, what):
    """Return `input_shape` as a tuple of ints of the given rank."""
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise ValueError(
            f"Expected `input_shape` to be a tuple of {rank} positive ints "
            f"for {what}. Received: input_shape={input_shape!r}"
        ) from None
    if len(shape) != rank or min(shape) <= 0:
        raise ValueError(
            f"Expected `input_shape` to be a tuple of {rank} positive ints "
            f"for {what}. Received: input_shape={input_shape!r}"
        )
    return shape


def check_latent_dim(latent_dim):
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim <= 0:
        raise ValueError(
            f"Expected `latent_dim` to be a positive int. "
            f"Received: latent_dim={latent_dim!r}"
        )
    return latent_dim


def label_input(num_classes):
    return keras.Input(shape=(num_classes,), name="y")


def check_any_shape(input_shape):
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if not shape or min(shape) <= 0:
        raise ValueError(
            "Expected `input_shape` to be a non-empty tuple of positive ints, "
            f"e.g. (28, 28, 1). Received: input_shape={input_shape!r}"
        )
    return shape
