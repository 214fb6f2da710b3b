"""Pieces shared by the encoder/decoder builders."""

import keras
import numpy as np


def gaussian_posterior_heads(features, latent_dim):
    """Two Dense heads giving `z_mean` and `z_log_var`."""
    z_mean = keras.layers.Dense(latent_dim, name="z_mean")(features)
    z_log_var = keras.layers.Dense(latent_dim, name="z_log_var")(features)
    return z_mean, z_log_var


def _is_int(value):
    """True for Python and numpy integers (not bools, not floats)."""
    return isinstance(value, (int, np.integer)) and not isinstance(
        value, (bool, np.bool_))


def check_shape(input_shape, rank, what):
    """Return `input_shape` as a tuple of positive ints of the given rank.

    Floats such as 8.9 are refused, not truncated; numpy integers count as
    integers.
    """
    try:
        dims = tuple(input_shape)
    except TypeError:
        dims = None
    if dims is None or len(dims) != rank or not all(
        _is_int(d) and d > 0 for d in dims
    ):
        raise ValueError(
            f"Expected `input_shape` to be a tuple of {rank} positive ints "
            f"for {what}. Received: input_shape={input_shape!r}"
        )
    return tuple(int(d) for d in dims)


def check_latent_dim(latent_dim):
    """Return `latent_dim` as an int > 0 (numpy integers are accepted)."""
    if not _is_int(latent_dim) or latent_dim <= 0:
        raise ValueError(
            f"Expected `latent_dim` to be a positive int. "
            f"Received: latent_dim={latent_dim!r}"
        )
    return int(latent_dim)


def check_units(values, name):
    """Return layer widths (`hidden_units`, `filters`) as positive ints."""
    try:
        units = tuple(values)
    except TypeError:
        units = None
    if units is None or not all(_is_int(u) and u > 0 for u in units):
        raise ValueError(
            f"Expected `{name}` to be a tuple of positive ints. "
            f"Received: {name}={values!r}"
        )
    return tuple(int(u) for u in units)


def label_input(num_classes):
    return keras.Input(shape=(num_classes,), name="y")


def check_any_shape(input_shape):
    """Return a non-empty `input_shape` as a tuple of positive ints."""
    try:
        dims = tuple(input_shape)
    except TypeError:
        dims = ()
    if not dims or not all(_is_int(d) and d > 0 for d in dims):
        raise ValueError(
            "Expected `input_shape` to be a non-empty tuple of positive ints, "
            f"e.g. (28, 28, 1). Received: input_shape={input_shape!r}"
        )
    return tuple(int(d) for d in dims)
