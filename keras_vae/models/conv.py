"""Convolutional (2-D) VAE builder for images of any size."""

import math

import keras

from keras_vae import _validation, likelihoods
from keras_vae.cvae import CVAE
from keras_vae.models._heads import (
    check_latent_dim,
    check_shape,
    check_units,
    gaussian_posterior_heads,
    label_input,
)
from keras_vae.vae import VAE

_DECODER_BLOCKS = ("transpose", "upsample")


def downsampled_sizes(size, num_blocks):
    """Spatial sizes after each stride-2 "same" convolution."""
    sizes = [int(size)]
    for _ in range(num_blocks):
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes


def conv_encoder(input_shape, latent_dim, filters=(32, 64), kernel_size=3, activation="relu", name="encoder"):
    """Stride-2 Conv2D encoder: image -> `[z_mean, z_log_var]`."""
    inputs = keras.Input(shape=tuple(input_shape), name="x")
    hidden = inputs
    for index, width in enumerate(filters):
        hidden = keras.layers.Conv2D(
            width,
            kernel_size,
            strides=2,
            padding="same",
            activation=activation,
            name=f"encoder_conv_{index}",
        )(hidden)
    hidden = keras.layers.Flatten(name="flatten")(hidden)
    z_mean, z_log_var = gaussian_posterior_heads(hidden, latent_dim)
    return keras.Model(inputs, [z_mean, z_log_var], name=name)


def conv_decoder(
    output_shape,
    latent_dim,
    filters=(64, 32),
    kernel_size=3,
    activation="relu",
    decoder_block="transpose",
    name="decoder",
):
    """Decoder that mirrors `conv_encoder` and crops to the exact size.

    Each block doubles the spatial size (`Conv2DTranspose` with stride 2, or
    `UpSampling2D` then `Conv2D`) and crops back to the size the encoder saw
    at that depth, so odd sizes round-trip exactly.
    """
    if decoder_block not in _DECODER_BLOCKS:
        raise ValueError(
            f"Expected `decoder_block` to be one of {_DECODER_BLOCKS}. "
            f"Received: decoder_block={decoder_block!r}"
        )
    height, width, channels = output_shape
    heights = downsampled_sizes(height, len(filters))[::-1]
    widths = downsampled_sizes(width, len(filters))[::-1]
    inputs = keras.Input(shape=(latent_dim,), name="z")
    hidden = keras.layers.Dense(
        heights[0] * widths[0] * filters[0],
        activation=activation,
        name="decoder_dense",
    )(inputs)
    hidden = keras.layers.Reshape(
        (heights[0], widths[0], filters[0]), name="decoder_reshape"
    )(hidden)
    for index, width_out in enumerate(filters):
        if decoder_block == "transpose":
            hidden = keras.layers.Conv2DTranspose(
                width_out,
                kernel_size,
                strides=2,
                padding="same",
                activation=activation,
                name=f"decoder_conv_transpose_{index}",
            )(hidden)
        else:
            hidden = keras.layers.UpSampling2D(2, name=f"decoder_upsample_{index}")(hidden)
            hidden = keras.layers.Conv2D(
                width_out,
                kernel_size,
                padding="same",
                activation=activation,
                name=f"decoder_conv_{index}",
            )(hidden)
        extra_h = 2 * heights[index] - heights[index + 1]
        extra_w = 2 * widths[index] - widths[index + 1]
        if extra_h or extra_w:
            hidden = keras.layers.Cropping2D(
                ((0, extra_h), (0, extra_w)), name=f"decoder_crop_{index}"
            )(hidden)
            # TensorFlow loses the static size in the crop's slice; the
            # TFLite converter then cannot lower the next upsample+Conv2D.
            hidden = keras.layers.Reshape(
                (heights[index + 1], widths[index + 1], width_out),
                name=f"decoder_static_shape_{index}",
            )(hidden)
    params = keras.layers.Conv2D(
        channels, kernel_size, padding="same", name="params"
    )(hidden)
    return keras.Model(inputs, params, name=name)


def conv_vae(
    input_shape,
    latent_dim=16,
    filters=(32, 64),
    kernel_size=3,
    likelihood="bernoulli",
    activation="relu",
    decoder_block="transpose",
    **vae_kwargs,
):
    """Build a convolutional VAE for `(height, width, channels)` images.

    The encoder uses stride-2 `Conv2D` blocks; the decoder mirrors it with
    `Conv2DTranspose` blocks (`decoder_block="transpose"`) or upsample plus
    convolution (`"upsample"`), cropping so that any image size works
    (28x28x1, 32x32x3, 8x8x1, odd sizes) without hard-coded reshapes.

    Args:
        input_shape: tuple `(height, width, channels)`.
        latent_dim: int. Size of the latent code.
        filters: tuple of ints. Encoder filters per block (decoder reversed).
        kernel_size: int. Convolution kernel size.
        likelihood: str or `Likelihood`. See `keras_vae.VAE`.
        activation: str. Hidden activation.
        decoder_block: str. `"transpose"` or `"upsample"`.
        **vae_kwargs: passed to `keras_vae.VAE`.

    Example:

    >>> import keras_vae
    >>> model = keras_vae.models.conv_vae((27, 27, 1), latent_dim=4)
    >>> tuple(model.decoder.output.shape)
    (None, 27, 27, 1)
    """
    input_shape = check_shape(input_shape, 3, "conv_vae (height, width, channels)")
    latent_dim = check_latent_dim(latent_dim)
    filters = check_units(filters, "filters")
    if not filters:
        raise ValueError(f"Expected at least one filter count. Received: filters={filters!r}")
    encoder = conv_encoder(input_shape, latent_dim, filters, kernel_size, activation)
    likelihood = likelihoods.get(likelihood)
    decoder = conv_decoder(
        likelihood.params_shape(input_shape), latent_dim, filters[::-1], kernel_size, activation, decoder_block
    )
    vae_kwargs.setdefault("name", "conv_vae")
    return VAE(encoder, decoder, likelihood=likelihood, **vae_kwargs)


def conv_cvae(
    input_shape,
    num_classes,
    latent_dim=16,
    filters=(32, 64),
    kernel_size=3,
    likelihood="bernoulli",
    activation="relu",
    decoder_block="transpose",
    **vae_kwargs,
):
    """Build a convolutional conditional VAE for `(height, width, channels)`.

    The encoder sees the label as `num_classes` extra constant channels; the
    decoder sees `[z, y_one_hot]` concatenated. Same blocks as
    `keras_vae.models.conv_vae`.

    Args:
        input_shape: tuple `(height, width, channels)`.
        num_classes: int. Number of classes.
        latent_dim: int. Size of the latent code.
        filters: tuple of ints. Encoder filters (decoder reversed).
        kernel_size: int. Convolution kernel size.
        likelihood: str or `Likelihood`. See `keras_vae.VAE`.
        activation: str. Hidden activation.
        decoder_block: str. `"transpose"` or `"upsample"`.
        **vae_kwargs: passed to `keras_vae.CVAE`.

    Example:

    >>> import keras_vae
    >>> model = keras_vae.models.conv_cvae((28, 28, 1), num_classes=10, latent_dim=8)
    >>> model.latent_dim
    8
    """
    input_shape = check_shape(input_shape, 3, "conv_cvae (height, width, channels)")
    latent_dim = check_latent_dim(latent_dim)
    num_classes = _validation.check_positive_int(num_classes, "num_classes")
    filters = check_units(filters, "filters")
    if not filters:
        raise ValueError(
            f"Expected at least one filter count. Received: filters={filters!r}"
        )
    height, width, channels = input_shape

    x = keras.Input(shape=input_shape, name="x")
    y = label_input(num_classes)
    label_map = keras.layers.Reshape((1, 1, num_classes), name="label_pixel")(y)
    label_map = keras.layers.UpSampling2D((height, width), name="label_map")(label_map)
    joined = keras.layers.Concatenate(axis=-1, name="join_label")([x, label_map])
    body = conv_encoder((height, width, channels + num_classes), latent_dim,
                        filters, kernel_size, activation, name="encoder_body")
    encoder = keras.Model([x, y], body(joined), name="encoder")

    z = keras.Input(shape=(latent_dim,), name="z")
    y = label_input(num_classes)
    joined = keras.layers.Concatenate(name="join_label")([z, y])
    body = conv_decoder(input_shape, latent_dim + num_classes, filters[::-1],
                        kernel_size, activation, decoder_block, name="decoder_body")
    decoder = keras.Model([z, y], body(joined), name="decoder")
    vae_kwargs.setdefault("name", "conv_cvae")
    return CVAE(encoder, decoder, num_classes, likelihood=likelihood, **vae_kwargs)
