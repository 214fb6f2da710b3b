"""The VAE as a data compressor: lossless bits-back and lossy latent codes.

`compress(model, x)` turns a batch of images into bytes and
`decompress(model, data)` gives them back: bit for bit in
`mode="lossless"` (bits-back coding with ANS, BB-ANS), or the decoder's
reconstructions of quantised latent codes in `mode="lossy"` (for 8-bit
data optionally refined: `pixel_step` codes every pixel to within half a
grid step under the model's p(x | z)). A stream has a
small versioned header (model fingerprint, shape, dtype, mode, parameters
and CRC32 checksums), so the wrong model or a corrupted or truncated stream
raises `ValueError`. The numpy-only core (`keras_vae.codec.core`) is the
same file the TensorFlow-free runtime `export/litert_vae.py` uses with an
int8 `.tflite` model.

Example:

>>> import numpy as np, keras_vae
>>> (x, _), _ = keras_vae.datasets.load("digits")
>>> model = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(16,))
>>> data = keras_vae.codec.compress(model, x[:10] > 0.5, verbose=0)
>>> restored = keras_vae.codec.decompress(model, data, verbose=0)
>>> bool(np.array_equal(restored, x[:10] > 0.5))
True
"""

from keras_vae.codec import core
from keras_vae.codec.core import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_PRECISION,
    DEFAULT_STEP,
    StreamError,
)
from keras_vae.codec.keras_network import KerasNetwork, model_fingerprint


def compress(model, x, mode="lossless", batch_size=DEFAULT_BATCH_SIZE,
             precision=DEFAULT_PRECISION, step=DEFAULT_STEP,
             entropy_model="adaptive", pixel_step=None, verbose=1):
    """Compress a batch of images with a VAE; returns the stream as bytes.

    `mode="lossless"` codes the data exactly with bits-back ANS: the rate
    approaches the model's negative ELBO per image, plus a one-off start-up
    cost of about `latent_dim * precision` bits. It needs a Bernoulli model
    for binary data ({0, 1}, bool or integers) or a DiscretizedLogistic
    model for 8-bit data (uint8 levels, or floats k / 255). The receiver
    must compute the same network outputs bit for bit: same model, same
    backend, same `batch_size` (stored in the stream) and library versions.

    `mode="lossy"` quantises the posterior means on a grid of `step` and
    codes them under a factorised Gaussian entropy model;
    `decompress` returns the decoder's mean for those codes, in the dtype
    of `x`. For 8-bit data, `pixel_step=q` also codes every pixel rounded
    to the grid 0, q, 2q, ..., 255 under p(x | z) at the decoded latent
    code, and `decompress` returns those grid levels: every pixel within
    q / 2 of the original (exact for q = 1), at the price of more bits.
    Like lossless streams, these need the receiver to compute the
    sender's network outputs bit for bit (same runtime kind, batch size
    and versions); a mismatch raises `ValueError`.

    Args:
        model: `keras_vae.VAE`. Unconditional, standard normal prior for
            lossless mode.
        x: array `(n, *model.input_spec_shape)`.
        mode: str. `"lossless"` or `"lossy"`.
        batch_size: int. Images per network call.
        precision: int in [4, 16]. Lossless: `2**precision` latent buckets
            per dimension.
        step: float > 0. Lossy: grid step in prior standard deviations
            (smaller: more bits, better reconstructions).
        entropy_model: str. Lossy: `"adaptive"` (one scale byte per latent
            dimension in the header) or `"prior"`.
        pixel_step: int or None. Lossy, `discretized_logistic` models
            only: the pixel grid step q, a divisor of 255 (1, 3, 5, 15, 17,
            51, 85 or 255); None codes the latent code alone.
        verbose: int. 0 hides the progress bar.

    Returns:
        bytes.

    Example:

    >>> data = keras_vae.codec.compress(model, x_test > 0.5)  # doctest: +SKIP
    >>> near = keras_vae.codec.compress(levels_model, uint8_images,
    ...                                 mode="lossy", step=1.0,
    ...                                 pixel_step=5)  # doctest: +SKIP
    """
    return core.compress(KerasNetwork(model), x, mode=mode,
                         batch_size=batch_size, precision=precision,
                         step=step, entropy_model=entropy_model,
                         pixel_step=pixel_step, verbose=verbose)


def decompress(model, data, verbose=1):
    """Decode a stream from `compress` with the model that wrote it.

    Args:
        model: `keras_vae.VAE`. The same model (same weights) as the sender.
        data: bytes.
        verbose: int. 0 hides the progress bar.

    Returns:
        numpy array with the shape and dtype given to `compress`.

    Example:

    >>> x = keras_vae.codec.decompress(model, data)  # doctest: +SKIP
    """
    return core.decompress(KerasNetwork(model), data, verbose=verbose)


def describe(data):
    """The header of a stream as a dict: mode, shape, sizes, parameters.

    Checks the stream's integrity (magic, version, checksums) without
    decoding it.

    Args:
        data: bytes. A stream from `compress`.
    """
    return core.describe(data)


__all__ = [
    "KerasNetwork",
    "StreamError",
    "compress",
    "decompress",
    "describe",
    "model_fingerprint",
]
