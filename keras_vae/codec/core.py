"""The keras-vae codec on numpy arrays: stream format, bits-back and latent codes.

This module imports numpy, `constriction` and the standard library only,
never Keras or TensorFlow: `keras_vae.codec` runs it with a Keras model and
the TensorFlow-free runtime `export/litert_vae.py` runs the same file with a
`.tflite` model. A model is reached through a small "network" object:

- `posterior(x)` -> `(z_mean, z_log_var)`, float32 arrays `(n, latent_dim)`,
  one encoder call for the whole batch `x` (float32, the network's scale);
- `decode(z)` -> dict of float32 arrays from one decoder call: `x_mean`
  and, for likelihoods whose mean does not determine them, their parameters
  (`loc`, `log_scale` for the discretised logistic, `features` for the
  context Bernoulli, whose pixels are then coded one position at a time);
- attributes `kind` (`"keras-tensorflow"`, `"keras-jax"` or `"litert"`),
  `fingerprint` (bytes, a hash of the architecture and weights or of the
  file), `likelihood` (lower-case class name), `num_levels` (levels of a
  discretised likelihood, else None), `data_shape`, `latent_dim` and
  `standard_normal_prior` (bool); a `contextbernoulli` network also has
  `context_head` (see `context_model`).

Lossless mode is bits-back coding with asymmetric numeral systems (BB-ANS,
Townsend, Bird and Barber, ICLR 2019) on `constriction`'s ANS stack. The
latent space is cut into `2**precision` buckets of equal mass under the
N(0, I) prior; for each batch of images the sender pops bucket indices
under q(z | x) (borrowing bits from the stack), pushes the images under
p(x | z) at the bucket centres and pushes the indices under the uniform
prior over buckets. The receiver runs the same steps backwards, batch by
batch from the last one, and pushes the indices back under q(z | x) of
the images it decoded, which returns the borrowed bits. Both sides must
compute bit-identical network outputs for the same batches (same model,
same backend or LiteRT build, same library versions): the stream stores
the model's fingerprint, the kind of runtime and a digest of the data,
so a mismatch raises `ValueError` rather than returning wrong data.

Lossy mode quantises the posterior means on a grid of step `step`, codes
the integers under a factorised Gaussian entropy model (the prior, or one
scale per latent dimension fitted to the stream and stored in the header)
and decodes with the decoder's mean. For 8-bit data (the discretised
logistic) it can also refine every pixel (`pixel_step` q): the level is
rounded to the grid 0, q, 2q, ..., 255 and the grid index is coded under
p(x | z) at the decoded latent code, each bin's probability the sum of the
probabilities of the levels that round to it; the receiver restores the
grid level, so each pixel lands within q / 2 of the original (exact for
q = 1). Like lossless streams, refined streams need
bit-identical network outputs on both sides (checked by a data digest).
"""

import functools
import hashlib
import math
import statistics
import struct
import zlib

import numpy as np

MAGIC = b"KVZ\x89"
# Version 2 added the lossy `pixel_step` field. A stream is written in the
# oldest version that holds it (version 1 unless its pixels are refined),
# so older readers still decode every stream they could before.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MODES = ("lossless", "lossy")
ENTROPY_MODELS = ("adaptive", "prior")
# Likelihoods whose code lengths are exact: lossless mode codes with them.
LOSSLESS_LIKELIHOODS = ("bernoulli", "discretizedlogistic", "contextbernoulli",
                        "contextdiscretizedlogistic")
# Likelihoods of binary data (symbols 0 and 1).
BINARY_LIKELIHOODS = ("bernoulli", "contextbernoulli")
# Likelihoods whose pixels see their neighbours: coded position by position.
CONTEXT_LIKELIHOODS = ("contextbernoulli", "contextdiscretizedlogistic")
_LIKELIHOOD_CODES = {"bernoulli": 0, "discretizedlogistic": 1,
                     "contextbernoulli": 2, "contextdiscretizedlogistic": 3,
                     "other": 255}
_KIND_CODES = {"keras-tensorflow": 0, "keras-jax": 1, "litert": 2, "other": 255}
# dtypes a stream can hold, by code (the restored array has the same dtype).
_DTYPES = ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32",
           "int64", "float16", "float32", "float64")
FINGERPRINT_BYTES = 16
DIGEST_BYTES = 8

DEFAULT_PRECISION = 10
DEFAULT_BATCH_SIZE = 128
DEFAULT_STEP = 0.25
# The first batches grow with the stream (each at most RAMP times the
# images already coded), so early pops borrow few bits: see `_schedule`.
DEFAULT_RAMP_PERCENT = 25
# Largest |z| a lossy code holds, in prior standard deviations.
LATENT_RANGE = 8.0
# Lossy adaptive scales: sigma = 2 ** ((code - _SCALE_OFFSET) / 16).
_SCALE_OFFSET = 160
# Probability tables are built this many entries at a time (16 MB of float64).
_TABLE_ENTRIES = 2**21
# Bits a single symbol can cost at most (constriction's 24-bit precision).
_MAX_BITS_PER_SYMBOL = 24
_INITIAL_WORDS_LABEL = b"keras-vae bits-back initial words"

_FIXED = struct.Struct("<4sBBBB16sBB")  # magic .. ndim
_TAIL = struct.Struct("<8sII")  # data digest, payload length, payload CRC32
_CRC = struct.Struct("<I")


class StreamError(ValueError):
    """A stream that cannot be decoded as asked: the message says why."""


def _constriction():
    try:
        import constriction
    except ImportError:  # pragma: no cover - a dependency of keras-vae
        raise ImportError(
            "The keras-vae codec codes with constriction: "
            "`pip install constriction`"
        ) from None
    return constriction


def _progress(total, verbose, description):
    """A tqdm bar over `total` batches, or a silent stand-in."""
    if verbose and total > 1:
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc=description, unit="batch")
        except ImportError:
            pass

    class _Silent:
        def update(self, _count=1):
            pass

        def close(self):
            pass

    return _Silent()


# ----------------------------------------------------------------- header
def _check_name(value, allowed, name):
    if value not in allowed:
        raise ValueError(
            f"Expected `{name}` to be one of {allowed}. Received: "
            f"{name}={value!r}"
        )
    return value


def _code_of(table, name):
    return table.get(name, table["other"])


def _name_of(table, code):
    for name, value in table.items():
        if value == code:
            return name
    return "other"


def pack_stream(header, payload):
    """Bytes of a stream: header fields, CRC32 of the header, payload.

    Args:
        header: dict. As returned by `read_header`, without the sizes.
        payload: bytes. The coded data.
    """
    shape = tuple(int(d) for d in header["shape"])
    pixel_step = int(header.get("pixel_step") or 0)
    version = 2 if pixel_step else 1
    parts = [
        _FIXED.pack(
            MAGIC, version, MODES.index(header["mode"]),
            _code_of(_LIKELIHOOD_CODES, header["likelihood"]),
            _code_of(_KIND_CODES, header["kind"]),
            header["fingerprint"], _DTYPES.index(header["dtype"]), len(shape),
        ),
        struct.pack(f"<{len(shape)}IH", *shape, header["batch_size"]),
    ]
    if header["mode"] == "lossless":
        parts.append(struct.pack(
            "<BBHII", header["precision"], header["ramp_percent"],
            header["num_levels"], header["initial_words"],
            header["kept_words"],
        ))
    else:
        codes = bytes(header["scale_codes"])
        parts.append(struct.pack(
            "<fBH", header["step"],
            ENTROPY_MODELS.index(header["entropy_model"]), len(codes),
        ) + codes)
        if version >= 2:
            parts.append(struct.pack("<B", pixel_step))
    parts.append(_TAIL.pack(header["data_digest"], len(payload),
                            zlib.crc32(payload)))
    head = b"".join(parts)
    return head + _CRC.pack(zlib.crc32(head)) + payload


def _reader(data):
    """A function `take(fmt)` that unpacks the next fields of `data`."""
    position = [0]

    def take(fmt):
        size = struct.calcsize(fmt)
        if position[0] + size > len(data):
            raise StreamError(
                "The stream is truncated inside its header: it is not a "
                "complete keras-vae stream. Received: "
                f"{len(data)} bytes"
            )
        values = struct.unpack_from(fmt, data, position[0])
        position[0] += size
        return values

    return take, position


def read_header(data):
    """The header of a stream as a dict, after checking its integrity.

    Checks the magic bytes, the format version, the header's CRC32, and the
    payload's length and CRC32, so a truncated or corrupted stream fails
    here with `ValueError` before any decoding.

    Args:
        data: bytes. A stream from `compress`.

    Returns:
        dict with `mode`, `likelihood`, `kind`, `fingerprint`, `dtype`,
        `shape`, `batch_size`, the mode's parameters, `header_bytes`,
        `payload_bytes` and `payload` (bytes).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(
            "Expected the stream as bytes (e.g. `open(path, 'rb').read()`). "
            f"Received: data of type {type(data).__name__}"
        )
    data = bytes(data)
    take, position = _reader(data)
    if len(data) < len(MAGIC) or data[:len(MAGIC)] != MAGIC:
        raise StreamError(
            "This is not a keras-vae stream (its first bytes are not "
            f"{MAGIC!r}). Received: first bytes {data[:4]!r}"
        )
    (_, version, mode, likelihood, kind, fingerprint, dtype,
     ndim) = take(_FIXED.format)
    if version not in READABLE_VERSIONS:
        raise StreamError(
            f"This stream has format version {version}; this keras-vae reads "
            f"versions {READABLE_VERSIONS}. Decode it with the keras-vae "
            f"release that wrote it. Received: version={version}"
        )
    if mode >= len(MODES) or dtype >= len(_DTYPES) or not 1 <= ndim <= 8:
        raise StreamError(
            "The stream's header is corrupted (unknown mode, dtype or rank). "
            f"Received: mode={mode}, dtype={dtype}, ndim={ndim}"
        )
    *shape, batch_size = take(f"<{ndim}IH")
    header = {
        "version": version,
        "mode": MODES[mode],
        "likelihood": _name_of(_LIKELIHOOD_CODES, likelihood),
        "kind": _name_of(_KIND_CODES, kind),
        "fingerprint": fingerprint,
        "dtype": _DTYPES[dtype],
        "shape": tuple(shape),
        "batch_size": batch_size,
    }
    if header["mode"] == "lossless":
        (header["precision"], header["ramp_percent"], header["num_levels"],
         header["initial_words"], header["kept_words"]) = take("<BBHII")
    else:
        step, entropy_model, count = take("<fBH")
        header["step"] = step
        header["entropy_model"] = ENTROPY_MODELS[min(entropy_model, 1)]
        header["scale_codes"] = bytes(take(f"<{count}B"))
        # Version 1 streams have no refined pixels.
        header["pixel_step"] = take("<B")[0] if version >= 2 else 0
    header["data_digest"], payload_length, payload_crc = take(_TAIL.format)
    end_of_fields = position[0]
    (header_crc,) = take("<I")
    if zlib.crc32(data[:end_of_fields]) != header_crc:
        raise StreamError(
            "The stream's header is corrupted (its CRC32 does not match). "
            f"Received: {len(data)} bytes"
        )
    payload = data[position[0]:]
    if len(payload) != payload_length:
        raise StreamError(
            f"The stream is truncated or has extra bytes: its header "
            f"announces a payload of {payload_length} bytes. Received: "
            f"payload of {len(payload)} bytes"
        )
    if zlib.crc32(payload) != payload_crc:
        raise StreamError(
            "The stream's payload is corrupted (its CRC32 does not match "
            f"the header's). Received: {len(data)} bytes"
        )
    header["header_bytes"] = position[0]
    header["payload_bytes"] = len(payload)
    header["payload"] = payload
    return header


# ------------------------------------------------------------------- data
def _top_symbol(likelihood, num_levels):
    """The largest symbol: 1 for binary data, else the top level."""
    return 1 if likelihood in BINARY_LIKELIHOODS else num_levels - 1


def to_symbols(x, likelihood, num_levels):
    """Check data for lossless coding; return `(symbols, network_input)`.

    Integer and bool arrays hold the likelihood's symbols (0/1 for the
    Bernoulli, levels 0..num_levels-1 for a discretised likelihood); float
    arrays are on the network's scale ({0, 1} or k / (num_levels - 1)) and
    must be exactly so, which makes the round trip bit for bit.

    Returns:
        `symbols` as int32 of the data's shape and the float32 array the
        network takes.
    """
    x = np.asarray(x)
    if likelihood not in LOSSLESS_LIKELIHOODS:
        raise ValueError(
            "Lossless coding needs a likelihood with exact code lengths for "
            "discrete data: Bernoulli (binary data) or DiscretizedLogistic "
            "(8-bit data). Use mode='lossy' for this model. Received: "
            f"likelihood={likelihood!r}"
        )
    top = _top_symbol(likelihood, num_levels)
    if x.dtype.kind in "biu":
        symbols = x.astype(np.int64)
    elif x.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            symbols = np.rint(x.astype(np.float64) * top)
        if not np.isfinite(symbols).all():
            raise ValueError(
                "Lossless coding needs finite data. Received: x with NaN or "
                "inf values"
            )
        symbols = symbols.astype(np.int64)
    else:
        raise ValueError(
            "Expected numeric data (bool, integer or float). Received: x "
            f"with dtype={x.dtype}"
        )
    low, high = int(symbols.min()), int(symbols.max())
    what = ("binary data, 0 or 1 (binarise first, e.g. x > 0.5)"
            if likelihood in BINARY_LIKELIHOODS else
            f"integer levels 0..{top} (or floats k / {top})")
    if low < 0 or high > top:
        raise ValueError(
            f"This model codes {what}. Received: x with values in "
            f"[{x.min()}, {x.max()}]"
        )
    if from_symbols(symbols, x.dtype, likelihood, num_levels).tobytes() != (
            np.ascontiguousarray(x).tobytes()):
        raise ValueError(
            f"This model codes {what}, exactly: some values of x lie between "
            f"levels, so they would not round-trip bit for bit. Round them "
            f"first (e.g. np.round(x * {top}) / {top}). Received: x with "
            f"dtype={x.dtype}"
        )
    network_input = (symbols / float(top)).astype(np.float32)
    return symbols.astype(np.int32), network_input


def from_symbols(symbols, dtype, likelihood, num_levels):
    """The data array of `dtype` that `symbols` stand for (see `to_symbols`)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        top = _top_symbol(likelihood, num_levels)
        return (symbols.astype(np.float64) / top).astype(dtype)
    return symbols.astype(dtype)


def data_digest(symbols):
    """First bytes of the SHA-256 of the symbols and their shape."""
    symbols = np.ascontiguousarray(symbols, dtype="<i4")
    digest = hashlib.sha256(repr(symbols.shape).encode())
    digest.update(symbols.tobytes())
    return digest.digest()[:DIGEST_BYTES]


def network_input(x, likelihood, num_levels):
    """float32 network input for lossy coding (integers are symbols)."""
    x = np.asarray(x)
    if x.dtype.kind in "biu":
        if likelihood not in BINARY_LIKELIHOODS:
            return (x.astype(np.float64) / (num_levels - 1)).astype(np.float32)
        if likelihood in BINARY_LIKELIHOODS and x.size and int(x.max()) <= 1:
            return x.astype(np.float32)
        raise ValueError(
            "Integer data is coded as the likelihood's symbols: 0/1 for a "
            "Bernoulli model, levels for a DiscretizedLogistic one. Pass "
            "floats on the network's scale (8-bit images: x / 255). "
            f"Received: x with dtype={x.dtype}, values up to {x.max()}"
        )
    if x.dtype.kind != "f":
        raise ValueError(
            f"Expected numeric data. Received: x with dtype={x.dtype}"
        )
    values = x.astype(np.float32)
    if not np.isfinite(values).all():
        raise ValueError("Expected finite data. Received: x with NaN or inf")
    return values


def reconstruction(outputs, likelihood, num_levels):
    """The mean of p(x | z) on the network's scale, float64.

    A discretised logistic's exact mean comes from its `loc` and
    `log_scale` (the exported `x_mean` is its median); any other likelihood
    gives `x_mean`.
    """
    if likelihood != "discretizedlogistic":
        return np.asarray(outputs["x_mean"], np.float64)
    loc = np.asarray(outputs["loc"], np.float64)
    scale = np.exp(np.asarray(outputs["log_scale"], np.float64))
    # E[clip(X, 0, 1)] = clip(loc) + s softplus(-|loc|/s) - s softplus(-|1-loc|/s)
    def tail(distance):
        return scale * np.logaddexp(0.0, -np.abs(distance) / scale)

    mean = np.clip(loc, 0.0, 1.0) + tail(loc) - tail(1.0 - loc)
    return np.clip(mean, 0.0, 1.0)


def restore_lossy(mean, dtype, likelihood, num_levels):
    """Reconstructions `mean` (network scale) as an array of `dtype`."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return mean > 0.5
    if dtype.kind in "iu":
        top = num_levels - 1 if likelihood == "discretizedlogistic" else 1
        return np.rint(np.clip(mean, 0.0, 1.0) * top).astype(dtype)
    return mean.astype(dtype)


# ------------------------------------------------------ bits-back coding
@functools.lru_cache(maxsize=8)
def bucket_centres(precision):
    """Centres of the `2**precision` equal-mass buckets of N(0, 1).

    The centre of bucket i is the prior quantile (i + 1/2) / 2**precision,
    so the prior gives every bucket the same probability.
    """
    count = 1 << precision
    normal = statistics.NormalDist()
    centres = np.array(
        [normal.inv_cdf((i + 0.5) / count) for i in range(count)], np.float64
    )
    centres.setflags(write=False)
    return centres


def _bucket_probabilities(z_mean, z_log_var, centres):
    """Unnormalised q(bucket | x), rows (n * latent_dim, buckets).

    q's mass over a bucket is its density at the centre times the bucket's
    width, and the width of an equal-mass bucket is 1 / (count p(centre)):
    the weights are q(c) / p(c). In log space that is a quadratic in c,
    `a c^2 + b c`, whose largest value over the centres is known in closed
    form, so one exponential per entry gives weights in (0, 1].
    """
    mean = np.asarray(z_mean, np.float64).reshape(-1, 1)
    precision = np.exp(-np.asarray(z_log_var, np.float64)).reshape(-1, 1)
    quadratic = 0.5 * (1.0 - precision)
    linear = mean * precision
    low, high = centres[0], centres[-1]
    # The quadratic's maximum over [low, high]: its vertex when it is
    # concave and inside, else the better end.
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = np.where(quadratic < 0, -linear / (2.0 * quadratic), high)
    vertex = np.clip(vertex, low, high)
    candidates = np.concatenate([vertex, np.full_like(vertex, low),
                                 np.full_like(vertex, high)], axis=1)
    peak = np.max(quadratic * candidates ** 2 + linear * candidates, axis=1,
                  keepdims=True)
    log_weights = quadratic * centres[None, :] ** 2
    log_weights += linear * centres[None, :]
    log_weights -= peak
    return np.exp(log_weights, out=log_weights)

def _row_chunks(rows, width):
    step = max(1, _TABLE_ENTRIES // max(1, width))
    return [slice(start, min(start + step, rows))
            for start in range(0, rows, step)]


def _pop_latents(coder, z_mean, z_log_var, centres):
    """Pop one bucket index per latent dimension under q(z | x)."""
    c = _constriction()
    family = c.stream.model.Categorical(perfect=False)
    z_mean = np.asarray(z_mean).reshape(-1)
    z_log_var = np.asarray(z_log_var).reshape(-1)
    indices = np.empty(z_mean.shape[0], np.int32)
    for chunk in _row_chunks(len(indices), len(centres)):
        indices[chunk] = coder.decode(family, _bucket_probabilities(
            z_mean[chunk], z_log_var[chunk], centres))
    return indices


def _push_latents(coder, indices, z_mean, z_log_var, centres):
    """Push bucket indices under q(z | x): the inverse of `_pop_latents`."""
    c = _constriction()
    family = c.stream.model.Categorical(perfect=False)
    z_mean = np.asarray(z_mean).reshape(-1)
    z_log_var = np.asarray(z_log_var).reshape(-1)
    for chunk in reversed(_row_chunks(len(indices), len(centres))):
        coder.encode_reverse(indices[chunk], family, _bucket_probabilities(
            z_mean[chunk], z_log_var[chunk], centres))


def _level_probabilities(loc, log_scale, num_levels, uniform_mass=0.0):
    """Rows of the discretised logistic's probabilities of every level.

    With `uniform_mass` > 0, that much probability is spread evenly over
    the levels and the logistic keeps the rest (as
    `DiscretizedLogistic(uniform_mass=...)` trains).
    """
    loc = np.asarray(loc, np.float64).reshape(-1, 1)
    inverse_scale = np.exp(-np.asarray(log_scale, np.float64)).reshape(-1, 1)
    edges = (np.arange(num_levels - 1, dtype=np.float64) + 0.5) / (num_levels - 1)
    # sigmoid(t) = (1 + tanh(t / 2)) / 2: no overflow for any t.
    cdf = 0.5 + 0.5 * np.tanh(0.5 * (edges[None, :] - loc) * inverse_scale)
    ones = np.ones((cdf.shape[0], 1))
    cdf = np.concatenate([np.zeros_like(ones), cdf, ones], axis=1)
    probabilities = np.maximum(np.diff(cdf, axis=1), 0.0)
    if uniform_mass:
        probabilities *= 1.0 - uniform_mass
        probabilities += uniform_mass / num_levels
    return probabilities


def _pixel_coding(outputs, likelihood, num_levels, uniform_mass=0.0):
    """`(family, chunks, arguments(chunk))` to code pixels with constriction.

    `uniform_mass` is the discretised logistic's mixture weight of the
    uniform distribution over the levels (`network_uniform_mass`).
    """
    c = _constriction()
    if likelihood == "bernoulli":
        probabilities = np.clip(
            np.asarray(outputs["x_mean"], np.float64).reshape(-1), 0.0, 1.0)
        family = c.stream.model.Bernoulli(perfect=False)
        return family, [slice(0, probabilities.size)], (
            lambda chunk: (probabilities[chunk],))
    loc = np.asarray(outputs["loc"]).reshape(-1)
    log_scale = np.asarray(outputs["log_scale"]).reshape(-1)
    family = c.stream.model.Categorical(perfect=False)
    return family, _row_chunks(loc.size, num_levels), (
        lambda chunk: (_level_probabilities(
            loc[chunk], log_scale[chunk], num_levels, uniform_mass),))


def network_uniform_mass(network):
    """The uniform mixture weight a network's discretised logistic trains with.

    Keras networks and `.tflite` files expose it as `uniform_mass` (0 for
    files exported before it existed, and for other likelihoods).
    """
    return float(getattr(network, "uniform_mass", 0.0) or 0.0)


def _push_pixels(coder, symbols, outputs, likelihood, num_levels,
                 context=None, uniform_mass=0.0):
    if context is not None:
        return _push_context_pixels(coder, symbols, outputs, context)
    family, chunks, arguments = _pixel_coding(outputs, likelihood, num_levels,
                                              uniform_mass)
    symbols = symbols.reshape(-1)
    for chunk in reversed(chunks):
        coder.encode_reverse(symbols[chunk], family, *arguments(chunk))


def _pop_pixels(coder, count, outputs, likelihood, num_levels, context=None,
                uniform_mass=0.0):
    if context is not None:
        return _pop_context_pixels(coder, count, outputs, context)
    family, chunks, arguments = _pixel_coding(outputs, likelihood, num_levels,
                                              uniform_mass)
    symbols = np.empty(count, np.int32)
    for chunk in chunks:
        symbols[chunk] = coder.decode(family, *arguments(chunk))
    return symbols


# ------------------------------------- pixels that see their neighbours
def context_model(network, shape):
    """The context head of `network` for images of `shape`, or None.

    A network with a context likelihood gives `context_head`: a dict of the
    causal neighbourhood `offsets` (`[dy, dx]` pairs), the head's weights
    `context_kernel` (K, H), `feature_kernel` (F, H), `bias` (H,) and
    `output_kernel` (H, P) and, for 8-bit data, `num_levels`,
    `min_log_scale`, `max_log_scale`, `loc_range` and `uniform_mass`
    (absent in older files: 0), as
    `keras_vae.likelihoods.ContextLikelihood.head_weights` returns them.
    """
    if network.likelihood not in CONTEXT_LIKELIHOODS:
        return None
    head = getattr(network, "context_head", None)
    if not head:
        raise ValueError(
            "A context likelihood codes each pixel after its neighbours, "
            "with the weights of its context head; this network gives none "
            "(an exported file needs them in its metadata: export it again "
            "with this keras-vae). Received: context_head=None"
        )
    model = {name: np.asarray(head[name], np.float64)
             for name in ("context_kernel", "feature_kernel", "bias",
                          "output_kernel")}
    model["output_kernel"] = model["output_kernel"].reshape(
        len(model["bias"]), -1)
    model["offsets"] = np.asarray(head["offsets"], np.int64).reshape(-1, 2)
    model["shape"] = tuple(int(d) for d in shape)
    model["radius"] = int(np.max(np.abs(model["offsets"])))
    model["binary"] = network.likelihood in BINARY_LIKELIHOODS
    if not model["binary"]:
        model["num_levels"] = int(head["num_levels"])
        model["log_scale_range"] = (float(head["min_log_scale"]),
                                    float(head["max_log_scale"]))
        model["loc_range"] = tuple(float(v) for v in head["loc_range"])
        model["uniform_mass"] = float(head.get("uniform_mass", 0.0))
    return model


def _context_params(features, neighbours, model):
    """The base likelihood's raw parameters `(..., P)` of some pixels.

    Only elementwise operations in a fixed order: the sender (all pixels
    known) and the receiver (one pixel position at a time) get the same
    numbers bit for bit.

    Args:
        features: float64 `(..., F)`, the decoder's outputs of the pixels.
        neighbours: float64 `(..., K)`, the values at `model["offsets"]`.
    """
    hidden = np.zeros(features.shape[:-1] + model["bias"].shape)
    hidden += model["bias"]
    for k, row in enumerate(model["context_kernel"]):
        hidden += neighbours[..., k:k + 1] * row
    for f, row in enumerate(model["feature_kernel"]):
        hidden += features[..., f:f + 1] * row
    np.maximum(hidden, 0.0, out=hidden)
    params = features[..., :model["output_kernel"].shape[1]].copy()
    for j, row in enumerate(model["output_kernel"]):
        params += hidden[..., j:j + 1] * row
    return params


def _context_distribution(features, neighbours, model):
    """`(family, probabilities)` of the pixels at one position."""
    c = _constriction()
    params = _context_params(features, neighbours, model)
    if model["binary"]:
        # sigmoid(t) = (1 + tanh(t / 2)) / 2: no overflow for any t.
        return (c.stream.model.Bernoulli(perfect=False),
                (0.5 + 0.5 * np.tanh(0.5 * params[..., 0])).reshape(-1))
    low, high = model["loc_range"]
    loc = low + (high - low) * (0.5 + 0.5 * np.tanh(0.5 * params[..., 0]))
    log_scale = np.clip(params[..., 1], *model["log_scale_range"])
    return (c.stream.model.Categorical(perfect=False),
            _level_probabilities(loc, log_scale, model["num_levels"],
                                 model["uniform_mass"]))


def _context_grid(count, model, values=None):
    """Images on a zero-padded grid (the neighbours outside are zero)."""
    height, width, channels = model["shape"]
    r = model["radius"]
    grid = np.zeros((count, height + r, width + 2 * r, channels), np.float64)
    if values is not None:
        grid[:, r:, r:r + width] = values
    return grid


def _context_positions(model):
    """Pixel positions in coding order with their neighbours' grid indices."""
    height, width, _ = model["shape"]
    r = model["radius"]
    return [(i, j, r + i + model["offsets"][:, 0], r + j + model["offsets"][:, 1])
            for i in range(height) for j in range(width)]


def _context_features(outputs, model, count):
    height, width, channels = model["shape"]
    return np.asarray(outputs["features"], np.float64).reshape(
        count, height, width, channels, -1)


def _context_scale(model):
    return 1.0 if model["binary"] else float(model["num_levels"] - 1)


def _push_context_pixels(coder, symbols, outputs, model):
    height, width, channels = model["shape"]
    count = symbols.size // (height * width * channels)
    images = symbols.reshape(count, height, width, channels)
    features = _context_features(outputs, model, count)
    grid = _context_grid(count, model, images / _context_scale(model))
    # The receiver decodes position 0 first: it goes on the stack last.
    for i, j, rows, columns in reversed(_context_positions(model)):
        neighbours = grid[:, rows, columns, :].transpose(0, 2, 1)
        family, probabilities = _context_distribution(
            features[:, i, j], neighbours, model)
        coder.encode_reverse(images[:, i, j].reshape(-1).astype(np.int32),
                             family, probabilities)


def _pop_context_pixels(coder, count, outputs, model):
    height, width, channels = model["shape"]
    r = model["radius"]
    count //= height * width * channels
    features = _context_features(outputs, model, count)
    grid = _context_grid(count, model)
    symbols = np.empty((count, height, width, channels), np.int32)
    scale = _context_scale(model)
    for i, j, rows, columns in _context_positions(model):
        neighbours = grid[:, rows, columns, :].transpose(0, 2, 1)
        family, probabilities = _context_distribution(
            features[:, i, j], neighbours, model)
        symbols[:, i, j] = coder.decode(family, probabilities).reshape(
            count, channels)
        grid[:, r + i, r + j] = symbols[:, i, j] / scale
    return symbols.reshape(-1)


def schedule(num_images, batch_size, ramp_percent=DEFAULT_RAMP_PERCENT):
    """Batch sizes of a stream: a ramp up to `batch_size`, then full batches.

    A batch pops about `latent_dim * precision` bits per image before it
    pushes anything, so the first batches stay small (each at most
    `ramp_percent`% of the images already coded, at least one): the bits
    they borrow come from the images before them, not from the start-up
    bits. The receiver derives the same list from the header.
    """
    sizes, done = [], 0
    while done < num_images:
        size = max(1, done * ramp_percent // 100)
        size = min(size, batch_size, num_images - done)
        sizes.append(size)
        done += size
    return sizes


def initial_words(count):
    """`count` fixed pseudo-random 32-bit words the ANS stack starts with.

    Derived from SHA-256 in counter mode, so every platform and version
    makes the same words; the last word is odd, because an ANS stack never
    ends in a zero word.
    """
    blocks = b"".join(
        hashlib.sha256(_INITIAL_WORDS_LABEL + i.to_bytes(8, "little")).digest()
        for i in range(-(-count // 8))
    )
    words = np.frombuffer(blocks, "<u4")[:count].astype(np.uint32)
    words[-1] |= 1
    return words


def _padded(function, values, batch_size):
    """`function(values)` on a batch padded with zeros to `batch_size` rows.

    Every network call of a stream then has the same shape on both sides
    (one compiled shape on JAX, no resize in LiteRT), and the padding rows
    are dropped from the outputs.
    """
    count = len(values)
    if count < batch_size:
        padding = np.zeros((batch_size - count, *values.shape[1:]), values.dtype)
        values = np.concatenate([values, padding])
    outputs = function(values)
    if isinstance(outputs, dict):
        return {name: np.asarray(value)[:count] for name, value in outputs.items()}
    return tuple(np.asarray(value)[:count] for value in outputs)


def _check_network(network, shape, mode):
    expected = tuple(int(d) for d in network.data_shape)
    if tuple(shape[1:]) != expected:
        raise ValueError(
            f"Expected data of shape (n, {', '.join(map(str, expected))}) for "
            f"this model. Received: x with shape {tuple(shape)}"
        )
    if mode == "lossless" and not network.standard_normal_prior:
        raise ValueError(
            "Lossless bits-back coding discretises the latent space into "
            "equal-mass buckets of the standard normal prior; this model has "
            "another prior. Use mode='lossy' or a model with "
            "prior='standard_normal'. Received: a non-standard-normal prior"
        )


def _check_positive_int(value, name, upper=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
            value < 1 or (upper is not None and value > upper)):
        bound = f" and <= {upper}" if upper is not None else ""
        raise ValueError(
            f"Expected `{name}` to be an int >= 1{bound}. Received: "
            f"{name}={value!r}"
        )
    return int(value)


def _bits_back_pass(network, symbols, inputs, sizes, batch_size, centres,
                    start, verbose):
    """Code every batch onto a stack that starts with `start`.

    Returns the coder and whether a pop ran the stack dry (then the pass
    must be repeated with more start-up words).
    """
    c = _constriction()
    coder = c.stream.stack.AnsCoder(start.copy())
    latent_dim = int(network.latent_dim)
    context = context_model(network, network.data_shape)
    bar = _progress(len(sizes), verbose, "compress")
    drained = False
    done = 0
    for size in sizes:
        batch = slice(done, done + size)
        z_mean, z_log_var = _padded(network.posterior, inputs[batch],
                                    batch_size)
        indices = _pop_latents(coder, z_mean, z_log_var, centres)
        # An empty stack pops without error but gives no real bits.
        drained |= coder.num_valid_bits() < 64
        outputs = _padded(network.decode, centres[indices].reshape(
            size, latent_dim).astype(np.float32), batch_size)
        _push_pixels(coder, symbols[batch], outputs, network.likelihood,
                     network.num_levels, context,
                     network_uniform_mass(network))
        coder.encode_reverse(indices, c.stream.model.Uniform(len(centres)))
        done += size
        bar.update()
    bar.close()
    return coder, drained


def _untouched_words(stack, start):
    """How many bottom words of `stack` are still the start-up words."""
    limit = min(len(stack), len(start))
    mismatch = np.nonzero(stack[:limit] != start[:limit])[0]
    return int(mismatch[0]) if mismatch.size else limit


def _encode_lossless(network, x, batch_size, precision, ramp_percent, verbose):
    symbols, inputs = to_symbols(x, network.likelihood, network.num_levels)
    centres = bucket_centres(precision)
    sizes = schedule(len(inputs), batch_size, ramp_percent)
    # Start-up words: enough for the largest batch's pop at the worst cost
    # per symbol; the receiver regenerates them, so only those the pops
    # consumed end up in the stream.
    words = max(sizes) * int(network.latent_dim) * _MAX_BITS_PER_SYMBOL // 32 + 64
    while True:
        start = initial_words(words)
        coder, drained = _bits_back_pass(network, symbols, inputs, sizes,
                                         batch_size, centres, start, verbose)
        if not drained:
            break
        words *= 4
    stack = np.asarray(coder.get_compressed(), np.uint32)
    kept = _untouched_words(stack, start)
    header = {
        "precision": precision, "ramp_percent": ramp_percent,
        "num_levels": network.num_levels or 0, "initial_words": words,
        "kept_words": kept, "data_digest": data_digest(symbols),
    }
    return header, stack[kept:].astype("<u4").tobytes()


def _coder_failure(error):
    """True for errors of the entropy coder on a stream it cannot decode."""
    return (isinstance(error, (ValueError, RuntimeError, OverflowError))
            or type(error).__name__ == "PanicException")  # Rust panics


def _decode_lossless(network, header, verbose):
    c = _constriction()
    shape = header["shape"]
    precision = header["precision"]
    centres = bucket_centres(precision)
    num_levels = header["num_levels"] or None
    sizes = schedule(shape[0], header["batch_size"], header["ramp_percent"])
    start = initial_words(header["initial_words"])
    stored = np.frombuffer(header["payload"], "<u4").astype(np.uint32)
    stack = np.concatenate([start[:header["kept_words"]], stored])
    per_image = math.prod(shape[1:])
    latent_dim = int(network.latent_dim)
    top = _top_symbol(network.likelihood, num_levels)
    context = context_model(network, shape[1:])
    symbols = np.empty((shape[0], per_image), np.int32)
    try:
        coder = c.stream.stack.AnsCoder(stack)
        bar = _progress(len(sizes), verbose, "decompress")
        done = shape[0]
        for size in reversed(sizes):
            batch = slice(done - size, done)
            indices = coder.decode(c.stream.model.Uniform(len(centres)),
                                   size * latent_dim).astype(np.int32)
            outputs = _padded(network.decode, centres[indices].reshape(
                size, latent_dim).astype(np.float32), header["batch_size"])
            symbols[batch] = _pop_pixels(
                coder, size * per_image, outputs, network.likelihood,
                num_levels, context,
                network_uniform_mass(network)).reshape(size, per_image)
            inputs = (symbols[batch] / float(top)).astype(np.float32)
            z_mean, z_log_var = _padded(
                network.posterior, inputs.reshape(size, *shape[1:]),
                header["batch_size"])
            _push_latents(coder, indices, z_mean, z_log_var, centres)
            done -= size
            bar.update()
        bar.close()
        remaining = np.asarray(coder.get_compressed(), np.uint32)
    except BaseException as error:
        if not _coder_failure(error):
            raise
        raise StreamError(
            f"The bits-back stream could not be decoded ({error}). The "
            "receiver must compute the sender's network outputs bit for bit: "
            "same model file, same backend or LiteRT build, same library "
            f"versions. Received: stream written by {header['kind']!r}"
        ) from None
    symbols = symbols.reshape(shape)
    if not np.array_equal(remaining, start) or (
            data_digest(symbols) != header["data_digest"]):
        raise StreamError(
            "Decoding finished but the data does not match the stream's "
            "digest: the receiver's network outputs differ from the "
            "sender's (same model file, same backend or LiteRT build, same "
            "CPU kind for int8 files and the same library versions are "
            "needed). No data is returned. Received: stream written by "
            f"{header['kind']!r}, decoded by {network.kind!r}"
        )
    return from_symbols(symbols, header["dtype"], network.likelihood,
                        num_levels)


# ---------------------------------------------------------- lossy coding
def _grid_limit(step):
    return int(math.ceil(LATENT_RANGE / step))


def scale_codes(latents):
    """One byte per latent dimension: the RMS of the quantised codes.

    sigma = 2 ** ((code - 160) / 16), from about 1e-3 to 60, in steps of
    4.4%; the entropy model of dimension d is N(0, sigma_d) on the grid.
    """
    rms = np.sqrt(np.mean(np.square(np.asarray(latents, np.float64)), axis=0))
    codes = np.rint(16.0 * np.log2(np.maximum(rms, 1e-6))) + _SCALE_OFFSET
    return np.clip(codes, 0, 255).astype(np.uint8)


def _entropy_stds(header, count):
    """Per-symbol standard deviations of the lossy entropy model, grid units."""
    step = header["step"]
    latent_dim = header["latent_dim"]
    if header["entropy_model"] == "prior":
        sigma = np.ones(latent_dim)
    else:
        codes = np.frombuffer(header["scale_codes"], np.uint8).astype(np.float64)
        sigma = 2.0 ** ((codes - _SCALE_OFFSET) / 16.0)
    # A tenth of a grid step at least: constriction needs a positive scale.
    stds = np.maximum(sigma / step, 0.1)
    return np.tile(stds, count)


def _latent_values(grid, step, count):
    """The decoder's input for the grid integers: both sides compute it alike."""
    return (np.asarray(grid).reshape(count, -1) * step).astype(np.float32)


def _decoder_outputs(network, z, batch_size, verbose, description):
    """`network.decode` over `z` in padded batches, outputs concatenated."""
    parts = []
    bar = _progress(-(-len(z) // batch_size), verbose, description)
    for start in range(0, len(z), batch_size):
        parts.append(_padded(network.decode, z[start:start + batch_size],
                             batch_size))
        bar.update()
    bar.close()
    return {name: np.concatenate([part[name] for part in parts])
            for name in parts[0]}


# ------------------------------------------------- refined 8-bit pixels
def pixel_steps(num_levels):
    """The pixel grid steps of `num_levels`-level data: divisors of the top level.

    A step q puts the grid levels 0, q, 2q, ..., num_levels - 1 (the top
    level is on the grid, so the darkest and brightest pixels stay exact).
    For 8-bit data: (1, 3, 5, 15, 17, 51, 85, 255).
    """
    top = int(num_levels) - 1
    return tuple(q for q in range(1, top + 1) if top % q == 0)


def _bin_starts(num_levels, pixel_step):
    """The first level of each pixel bin: level l goes to bin round(l / q).

    Halves round up (they only occur for an even q), so bin k holds the
    levels within q / 2 of its grid level k * q.
    """
    count = (num_levels - 1) // pixel_step + 1
    starts = np.arange(count) * pixel_step - pixel_step // 2
    starts[0] = 0
    return starts


def pixel_bins(symbols, pixel_step):
    """The grid index of each level, `round(level / pixel_step)`, int32."""
    symbols = np.asarray(symbols, np.int64)
    return ((symbols + pixel_step // 2) // pixel_step).astype(np.int32)


def _bin_coding(outputs, num_levels, pixel_step, uniform_mass=0.0):
    """`(family, chunks, probabilities(chunk))` of the pixel bins.

    A bin's probability is the sum of the probabilities of its levels, from
    the very table lossless coding codes the levels with (`_pixel_coding`).
    """
    family, chunks, arguments = _pixel_coding(outputs, "discretizedlogistic",
                                              num_levels, uniform_mass)
    starts = _bin_starts(num_levels, pixel_step)
    return family, chunks, (lambda chunk: np.add.reduceat(
        arguments(chunk)[0], starts, axis=1))


def _push_bins(coder, bins, outputs, num_levels, pixel_step,
               uniform_mass=0.0):
    """Code the pixel bins under p(x | z) of the decoder `outputs`."""
    family, chunks, probabilities = _bin_coding(outputs, num_levels,
                                                pixel_step, uniform_mass)
    bins = np.asarray(bins, np.int32).reshape(-1)
    # The receiver decodes the first chunk first: it goes on the stack last.
    for chunk in reversed(chunks):
        coder.encode_reverse(bins[chunk], family, probabilities(chunk))


def _pop_bins(coder, outputs, num_levels, pixel_step, uniform_mass=0.0):
    """Decode the pixel bins that `_push_bins` coded, int32 `(pixels,)`."""
    family, chunks, probabilities = _bin_coding(outputs, num_levels,
                                                pixel_step, uniform_mass)
    bins = np.empty(np.asarray(outputs["loc"]).size, np.int32)
    for chunk in chunks:
        bins[chunk] = coder.decode(family, probabilities(chunk))
    return bins


def _bin_levels(bins, pixel_step):
    """The level each pixel is restored to: its bin's grid level, k * q."""
    return (np.asarray(bins, np.int32) * pixel_step).astype(np.int32)


def _check_pixel_step(pixel_step, network, mode):
    """`pixel_step` as an int, or None; `ValueError` if it cannot refine."""
    if pixel_step is None:
        return None
    if mode != "lossy":
        raise ValueError(
            "`pixel_step` refines the pixels of a lossy stream; a lossless "
            "stream already restores every pixel. Use mode='lossy' or leave "
            f"pixel_step=None. Received: pixel_step={pixel_step!r}"
        )
    if network.likelihood != "discretizedlogistic" or not network.num_levels:
        raise ValueError(
            "`pixel_step` codes pixel levels under the discretised logistic "
            "likelihood (8-bit data, likelihood='discretized_logistic'); "
            f"this model's likelihood is {network.likelihood!r}. Leave "
            f"pixel_step=None for it. Received: pixel_step={pixel_step!r}"
        )
    allowed = pixel_steps(network.num_levels)
    if isinstance(pixel_step, bool) or not isinstance(
            pixel_step, (int, np.integer)) or int(pixel_step) not in allowed:
        raise ValueError(
            "Expected `pixel_step` to be an int that divides "
            f"{network.num_levels - 1} (the grid 0, q, 2q, ... must end on "
            f"the top level), one of {allowed}. Received: "
            f"pixel_step={pixel_step!r}"
        )
    return int(pixel_step)


# --------------------------------------------------------- lossy streams
def _encode_lossy(network, x, batch_size, step, entropy_model, pixel_step,
                  verbose):
    if pixel_step:
        # Refined pixels are coded as levels: x must hold exact levels.
        symbols, inputs = to_symbols(x, network.likelihood, network.num_levels)
    else:
        inputs = network_input(x, network.likelihood, network.num_levels)
    limit = _grid_limit(step)
    means = []
    bar = _progress(-(-len(inputs) // batch_size), verbose, "compress")
    for start in range(0, len(inputs), batch_size):
        z_mean, _ = _padded(network.posterior,
                            inputs[start:start + batch_size], batch_size)
        means.append(np.asarray(z_mean, np.float64))
        bar.update()
    bar.close()
    grid = np.clip(np.rint(np.concatenate(means) / step), -limit, limit)
    grid = grid.astype(np.int32)
    codes = scale_codes(grid * step) if entropy_model == "adaptive" else b""
    header = {
        "step": float(np.float32(step)), "entropy_model": entropy_model,
        "scale_codes": bytes(codes), "data_digest": bytes(DIGEST_BYTES),
        "pixel_step": pixel_step or 0,
    }
    stds = _entropy_stds(dict(header, latent_dim=grid.shape[1]), len(grid))
    c = _constriction()
    coder = c.stream.stack.AnsCoder()
    if pixel_step:
        # The pixels go under the latent codes: the receiver decodes the
        # codes first, then the pixels under p(x | z) at those codes.
        outputs = _decoder_outputs(
            network, _latent_values(grid, header["step"], len(grid)),
            batch_size, verbose, "compress pixels")
        bins = pixel_bins(symbols, pixel_step)
        _push_bins(coder, bins, outputs, network.num_levels, pixel_step,
                   network_uniform_mass(network))
        header["data_digest"] = data_digest(_bin_levels(bins, pixel_step))
    family = c.stream.model.QuantizedGaussian(-limit, limit)
    coder.encode_reverse(grid.reshape(-1), family, np.zeros_like(stds), stds)
    return header, np.asarray(coder.get_compressed(), "<u4").tobytes()


def _decode_lossy(network, header, verbose):
    c = _constriction()
    shape = header["shape"]
    latent_dim = int(network.latent_dim)
    pixel_step = header["pixel_step"]
    if header["entropy_model"] == "adaptive" and (
            len(header["scale_codes"]) != latent_dim):
        raise StreamError(
            "The stream's entropy model has "
            f"{len(header['scale_codes'])} latent dimensions; this model has "
            f"{latent_dim}. Received: a stream for another model"
        )
    if pixel_step and (network.likelihood != "discretizedlogistic"
                       or pixel_step not in pixel_steps(network.num_levels)):
        raise StreamError(
            "The stream refines pixels on a grid this model cannot code "
            "(refined streams need a discretised logistic model). Received: "
            f"pixel_step={pixel_step}"
        )
    limit = _grid_limit(header["step"])
    stds = _entropy_stds(dict(header, latent_dim=latent_dim), shape[0])
    words = np.frombuffer(header["payload"], "<u4").astype(np.uint32)
    try:
        coder = c.stream.stack.AnsCoder(words)
        family = c.stream.model.QuantizedGaussian(-limit, limit)
        grid = coder.decode(family, np.zeros_like(stds), stds)
    except BaseException as error:
        if not _coder_failure(error):
            raise
        raise StreamError(
            f"The latent codes could not be decoded ({error}). Received: a "
            "corrupted stream"
        ) from None
    z = _latent_values(grid, header["step"], shape[0])
    outputs = _decoder_outputs(network, z, header["batch_size"], verbose,
                               "decompress")
    if not pixel_step:
        mean = reconstruction(outputs, network.likelihood, network.num_levels)
        return restore_lossy(mean.reshape(shape), header["dtype"],
                             network.likelihood, network.num_levels)
    try:
        bins = _pop_bins(coder, outputs, network.num_levels, pixel_step,
                         network_uniform_mass(network))
        finished = coder.is_empty()
    except BaseException as error:
        if not _coder_failure(error):
            raise
        finished = False
    levels = _bin_levels(bins, pixel_step).reshape(shape) if finished else None
    if not finished or data_digest(levels) != header["data_digest"]:
        raise StreamError(
            "The refined pixels do not match the stream's digest: they are "
            "coded under p(x | z), and the receiver's network outputs "
            "differ from the sender's (same model file, same backend or "
            "LiteRT build, same CPU kind for int8 files and the same "
            "library versions are needed). No data is returned. Received: "
            "stream "
            f"written by {header['kind']!r}, decoded by {network.kind!r}"
        )
    return from_symbols(levels, header["dtype"], network.likelihood,
                        network.num_levels)


# ------------------------------------------------------------------ API
def compress(network, x, mode="lossless", batch_size=DEFAULT_BATCH_SIZE,
             precision=DEFAULT_PRECISION, step=DEFAULT_STEP,
             entropy_model="adaptive", pixel_step=None, verbose=1):
    """Compress a batch of examples into one stream (bytes).

    Args:
        network: a network object (see the module docstring).
        x: array `(n, *data_shape)`.
        mode: str. `"lossless"` (bits-back) or `"lossy"` (latent codes).
        batch_size: int. Images per encoder/decoder call; the receiver uses
            the same batches.
        precision: int in [4, 16]. Lossless: the latent space has
            `2**precision` buckets per dimension.
        step: float > 0. Lossy: grid step of the latent codes, in prior
            standard deviations.
        entropy_model: str. Lossy: `"adaptive"` (one scale per latent
            dimension, fitted to this stream, one header byte each) or
            `"prior"` (the N(0, 1) prior, no side information).
        pixel_step: int or None. Lossy, 8-bit data (discretised logistic):
            also code each pixel on the grid 0, q, 2q, ..., 255 (q a
            divisor of 255) under p(x | z) at the latent code, so it is
            restored within q / 2 (exactly for 1). None: latent code only.
        verbose: int. 0 hides the progress bar.

    Returns:
        bytes.
    """
    _check_name(mode, MODES, "mode")
    batch_size = _check_positive_int(batch_size, "batch_size", 65535)
    x = np.asarray(x)
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(
            "Expected a batch of examples, shape (n, ...) with n >= 1. "
            f"Received: x with shape {x.shape}"
        )
    if x.dtype.name not in _DTYPES:
        raise ValueError(
            f"Expected x with one of the dtypes {_DTYPES}. Received: x with "
            f"dtype={x.dtype}"
        )
    _check_network(network, x.shape, mode)
    pixel_step = _check_pixel_step(pixel_step, network, mode)
    # Calls are padded to the batch size: no larger than the data.
    batch_size = min(batch_size, len(x))
    if mode == "lossless":
        precision = _check_positive_int(precision, "precision", 16)
        if precision < 4:
            raise ValueError(
                f"Expected `precision` in [4, 16]. Received: precision={precision}"
            )
        header, payload = _encode_lossless(
            network, x, batch_size, precision, DEFAULT_RAMP_PERCENT, verbose)
    else:
        try:
            step_ok = math.isfinite(float(step)) and float(step) > 0
        except (TypeError, ValueError):
            step_ok = False
        if not step_ok:
            raise ValueError(f"Expected `step` > 0. Received: step={step!r}")
        _check_name(entropy_model, ENTROPY_MODELS, "entropy_model")
        if entropy_model == "prior" and not network.standard_normal_prior:
            raise ValueError(
                "entropy_model='prior' codes under N(0, I); this model has "
                "another prior. Use entropy_model='adaptive'. Received: "
                "entropy_model='prior'"
            )
        header, payload = _encode_lossy(network, x, batch_size, float(step),
                                        entropy_model, pixel_step, verbose)
    header.update(
        mode=mode, likelihood=network.likelihood, kind=network.kind,
        fingerprint=network.fingerprint[:FINGERPRINT_BYTES],
        dtype=x.dtype.name, shape=x.shape, batch_size=batch_size,
    )
    return pack_stream(header, payload)


def decompress(network, data, verbose=1):
    """Decode a stream from `compress` with the same model.

    Raises `ValueError` for a truncated or corrupted stream, a stream of
    another model (fingerprint), or a lossless or refined lossy stream that
    this runtime cannot reproduce bit for bit; it never returns wrong data
    for those.

    Args:
        network: a network object (see the module docstring).
        data: bytes.
        verbose: int. 0 hides the progress bar.

    Returns:
        numpy array with the shape and dtype given to `compress`.
    """
    header = read_header(data)
    if header["fingerprint"] != network.fingerprint[:FINGERPRINT_BYTES]:
        raise StreamError(
            "This stream was written with another model: its fingerprint "
            f"{header['fingerprint'].hex()} differs from this model's "
            f"{network.fingerprint[:FINGERPRINT_BYTES].hex()}. Decode it "
            "with the model file that compressed it. Received: fingerprint="
            f"{header['fingerprint'].hex()}"
        )
    _check_network(network, header["shape"], header["mode"])
    refined = header["mode"] == "lossy" and header["pixel_step"]
    if (header["mode"] == "lossless" or refined) and (
            header["kind"] != network.kind):
        what = ("lossless stream" if header["mode"] == "lossless" else
                "lossy stream with refined pixels")
        raise StreamError(
            f"This {what} was written by {header['kind']!r}; its pixels "
            "are coded under the network's outputs, which the receiver must "
            f"compute bit for bit, so decode it with {header['kind']!r} "
            f"too. Received: a {network.kind!r} model"
        )
    if header["mode"] == "lossy":
        return _decode_lossy(network, header, verbose)
    return _decode_lossless(network, header, verbose)


def describe(data):
    """The header of a stream as a printable dict (no decoding)."""
    header = read_header(data)
    header.pop("payload")
    header["fingerprint"] = header["fingerprint"].hex()
    header["data_digest"] = header["data_digest"].hex()
    if "scale_codes" in header:
        header["scale_codes"] = list(header["scale_codes"])
    header["total_bytes"] = header["header_bytes"] + header["payload_bytes"]
    if header["mode"] == "lossless":
        # Start-up words the first pops consumed: bits borrowed once per
        # stream and stored in the payload (see `_encode_lossless`).
        header["startup_bits"] = 32 * (header["initial_words"]
                                       - header["kept_words"])
    header["shape"] = list(header["shape"])
    return header
