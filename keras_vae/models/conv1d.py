"""1-D convolutional VAE builder for sequences and signals `(steps, channels)`."""

import keras

from keras_vae.models._heads import (
    check_latent_dim,
    check_shape,
    check_units,
    gaussian_posterior_heads,
)
from keras_vae.models.conv import downsampled_sizes
from keras_vae.vae import VAE

_DECODER_BLOCKS = ("transpose", "upsample")


def conv1d_encoder(input_shape, latent_dim, filters=(32, 64), kernel_size=5, activation="relu", name="encoder"):
    """Stride-2 Conv1D encoder: `(steps, channels)` -> `[z_mean, z_log_var]`."""
    inputs = keras.Input(shape=tuple(input_shape), name="x")
    hidden = inputs
    for index, width in enumerate(filters):
        hidden = keras.layers.Conv1D(
            width,
            kernel_size,
            strides=2,
            padding="same",
            activation=activation,
            name=f"encoder_conv1d_{index}",
        )(hidden)
    hidden = keras.layers.Flatten(name="flatten")(hidden)
    z_mean, z_log_var = gaussian_posterior_heads(hidden, latent_dim)
    return keras.Model(inputs, [z_mean, z_log_var], name=name)


def conv1d_decoder(
    output_shape,
    latent_dim,
    filters=(64, 32),
    kernel_size=5,
    activation="relu",
    decoder_block="transpose",
    name="decoder",
):
    """Decoder mirroring `conv1d_encoder`, cropped to the exact length.

    Each block doubles the length (`Conv1DTranspose` with stride 2, or
    `UpSampling1D` then `Conv1D`) and crops back to the length the encoder
    saw at that depth, so odd lengths round-trip exactly.
    """
    if decoder_block not in _DECODER_BLOCKS:
        raise ValueError(
            f"Expected `decoder_block` to be one of {_DECODER_BLOCKS}. "
            f"Received: decoder_block={decoder_block!r}"
        )
    steps, channels = output_shape
    lengths = downsampled_sizes(steps, len(filters))[::-1]
    inputs = keras.Input(shape=(latent_dim,), name="z")
    hidden = keras.layers.Dense(
        lengths[0] * filters[0], activation=activation, name="decoder_dense"
    )(inputs)
    hidden = keras.layers.Reshape((lengths[0], filters[0]), name="decoder_reshape")(hidden)
    for index, width in enumerate(filters):
        if decoder_block == "transpose":
            hidden = keras.layers.Conv1DTranspose(
                width,
                kernel_size,
                strides=2,
                padding="same",
                activation=activation,
                name=f"decoder_conv1d_transpose_{index}",
            )(hidden)
        else:
            hidden = keras.layers.UpSampling1D(2, name=f"decoder_upsample_{index}")(hidden)
            hidden = keras.layers.Conv1D(
                width,
                kernel_size,
                padding="same",
                activation=activation,
                name=f"decoder_conv1d_{index}",
            )(hidden)
        extra = 2 * lengths[index] - lengths[index + 1]
        if extra:
            hidden = keras.layers.Cropping1D((0, extra), name=f"decoder_crop_{index}")(hidden)
            # Keep the length static for the TFLite converter (see conv.py).
            hidden = keras.layers.Reshape(
                (lengths[index + 1], width), name=f"decoder_static_shape_{index}"
            )(hidden)
    params = keras.layers.Conv1D(channels, kernel_size, padding="same", name="params")(hidden)
    return keras.Model(inputs, params, name=name)


def conv1d_vae(
    input_shape,
    latent_dim=16,
    filters=(32, 64),
    kernel_size=5,
    likelihood="gaussian",
    activation="relu",
    decoder_block="transpose",
    **vae_kwargs,
):
    """Build a 1-D convolutional VAE for `(steps, channels)` sequences.

    The compact 1D-CNN representation of signals: stride-2 `Conv1D` blocks
    in the encoder, mirrored by `Conv1DTranspose` blocks
    (`decoder_block="transpose"`) or upsample plus `Conv1D` (`"upsample"`)
    in the decoder, cropped so that any length works (odd lengths
    included).

    Args:
        input_shape: tuple `(steps, channels)`. A flat signal of 100 steps
            is `(100, 1)`.
        latent_dim: int. Size of the latent code.
        filters: tuple of ints. Encoder filters per block (decoder reversed).
        kernel_size: int. Convolution kernel size.
        likelihood: str or `Likelihood`. Defaults to `"gaussian"` (unit
            scale), the usual choice for real-valued signals; use
            `"bernoulli"` for data in [0, 1]. See `keras_vae.VAE`.
        activation: str. Hidden activation.
        decoder_block: str. `"transpose"` or `"upsample"`.
        **vae_kwargs: passed to `keras_vae.VAE`.

    Example:

    >>> import keras_vae
    >>> model = keras_vae.models.conv1d_vae((37, 3), latent_dim=4)
    >>> tuple(model.decoder.output.shape)
    (None, 37, 3)
    """
    input_shape = check_shape(input_shape, 2, "conv1d_vae (steps, channels)")
    latent_dim = check_latent_dim(latent_dim)
    filters = check_units(filters, "filters")
    if not filters or min(filters) <= 0:
        raise ValueError(
            "Expected `filters` to be a non-empty tuple of positive ints. "
            f"Received: filters={filters!r}"
        )
    encoder = conv1d_encoder(input_shape, latent_dim, filters, kernel_size, activation)
    decoder = conv1d_decoder(
        input_shape, latent_dim, filters[::-1], kernel_size, activation, decoder_block
    )
    vae_kwargs.setdefault("name", "conv1d_vae")
    return VAE(encoder, decoder, likelihood=likelihood, **vae_kwargs)
