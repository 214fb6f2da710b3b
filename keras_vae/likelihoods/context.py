"""Likelihoods whose pixels also see their already-coded neighbours.

Autoregressive observation models with a one-layer, PixelCNN-style head:
each pixel's distribution depends on z (through the decoder) and on the
pixels before it in raster order, within a small causal neighbourhood.
"""

import keras
import numpy as np
from keras import ops

from keras_vae.likelihoods.base import Likelihood, sum_over_data_axes
from keras_vae.likelihoods.bernoulli import Bernoulli
from keras_vae.likelihoods.discretized_logistic import (
    LOC_RANGE,
    LOG_SCALE_BOUNDS,
    DiscretizedLogistic,
)


def causal_offsets(radius):
    """`(dy, dx)` of the causal neighbourhood of a pixel, in raster order.

    The pixels of the `radius` rows above within `radius` columns, then the
    `radius` pixels to the left in the same row: all of them come before the
    pixel when an image is read row by row. Radius 2 gives 12 neighbours.

    Args:
        radius: int >= 1.

    Returns:
        list of `(dy, dx)` int pairs.

    Example:

    >>> from keras_vae.likelihoods.context import causal_offsets
    >>> causal_offsets(1)
    [(-1, -1), (-1, 0), (-1, 1), (0, -1)]
    """
    offsets = [(dy, dx) for dy in range(-radius, 0)
               for dx in range(-radius, radius + 1)]
    return offsets + [(0, dx) for dx in range(-radius, 0)]


class ContextLikelihood(Likelihood):
    """Base of the likelihoods whose pixels see their causal neighbours.

    The decoder emits `features` values per pixel and channel; the first
    `num_params` are the base likelihood's raw parameters. A head adds to
    them a function of the pixel's neighbours (`causal_offsets(radius)`,
    zero outside the image; each channel sees its own) and of the
    decoder's features:

        h = relu(context @ context_kernel + features @ feature_kernel + bias)
        params = features[:num_params] + h @ output_kernel

    The product of the pixels' distributions is an exact distribution over
    images, so its negative log-likelihood is a code length that
    `keras_vae.codec` attains with bits-back coding, decoding the pixels of
    an image one position at a time (the codec runs the head in numpy from
    `head_weights`). Training costs about what the base likelihood costs:
    every pixel's parameters come from the data at once.

    `mean` has no closed form; it is a plug-in estimate for previews and
    lossy reconstructions (see each subclass). Data are images
    `(height, width, channels)`.

    Args:
        radius: int >= 1. Size of the causal neighbourhood.
        hidden_units: int >= 1. Width of the head's hidden layer.
        features: int >= `num_params`. Decoder outputs per pixel.
    """

    #: Raw parameters of the base likelihood per pixel (subclasses).
    num_params = 1

    def __init__(self, radius=2, hidden_units=16, features=4, **kwargs):
        super().__init__(**kwargs)
        for name, value, low in (("radius", radius, 1),
                                 ("hidden_units", hidden_units, 1),
                                 ("features", features, self.num_params)):
            if (isinstance(value, bool)
                    or not isinstance(value, (int, np.integer)) or value < low):
                raise ValueError(
                    f"Expected `{name}` to be an int >= {low}. Received: "
                    f"{name}={value!r}"
                )
        self.radius = int(radius)
        self.hidden_units = int(hidden_units)
        self.features = int(features)
        self.offsets = causal_offsets(self.radius)
        self.context_kernel = self.add_weight(
            shape=(len(self.offsets), self.hidden_units),
            name="context_kernel",
            initializer=keras.initializers.GlorotUniform(seed=0))
        self.feature_kernel = self.add_weight(
            shape=(self.features, self.hidden_units), name="feature_kernel",
            initializer=keras.initializers.GlorotUniform(seed=1))
        self.bias = self.add_weight(shape=(self.hidden_units,), name="bias",
                                    initializer="zeros")
        # Zero at the start: the model begins as its base likelihood.
        self.output_kernel = self.add_weight(
            shape=(self.hidden_units, self.num_params), name="output_kernel",
            initializer="zeros")

    def params_shape(self, data_shape):
        data_shape = tuple(data_shape)
        if len(data_shape) != 3:
            raise ValueError(
                f"{type(self).__name__} models images (height, width, "
                "channels): a pixel's context is its neighbours. Use a "
                "likelihood without context for other data. Received: "
                f"data_shape={data_shape}"
            )
        return data_shape[:-1] + (data_shape[-1] * self.features,)

    def _split(self, params):
        """Decoder output `(b, h, w, c * F)` as `(b, h, w, c, F)`."""
        params = ops.cast(params, "float32")
        shape = ops.shape(params)
        channels = params.shape[-1] // self.features
        return ops.reshape(params, (shape[0], shape[1], shape[2], channels,
                                    self.features))

    def context(self, x):
        """Neighbour values of every pixel, `(b, h, w, c, len(offsets))`."""
        x = ops.cast(x, "float32")
        r = self.radius
        height, width = x.shape[1], x.shape[2]
        padded = ops.pad(x, ((0, 0), (r, 0), (r, r), (0, 0)))
        shifted = [padded[:, r + dy:r + dy + height, r + dx:r + dx + width, :]
                   for dy, dx in self.offsets]
        return ops.stack(shifted, axis=-1)

    def raw_params(self, x, params, elementwise=False):
        """The base likelihood's raw parameters `(b, h, w, c, num_params)`.

        Args:
            x: tensor. The data, or a guess of it (see `mean`).
            params: tensor. Decoder output.
            elementwise: bool. Multiply-and-add instead of matrix products:
                the same numbers, in the ops an int8 file quantizes (`mean`
                runs in the exported signatures).
        """
        features = self._split(params)

        def product(values, kernel):
            if not elementwise:
                return ops.matmul(values, kernel)
            return ops.sum(ops.expand_dims(values, -1) * kernel, axis=-2)

        # float32 like the data: inside a mixed-precision model's call the
        # variables are read in the compute dtype (bfloat16).
        context_kernel, feature_kernel, bias, output_kernel = (
            ops.cast(variable, "float32") for variable in (
                self.context_kernel, self.feature_kernel, self.bias,
                self.output_kernel))
        hidden = ops.relu(product(self.context(x), context_kernel)
                          + product(features, feature_kernel) + bias)
        return (features[..., :self.num_params]
                + product(hidden, output_kernel))

    def _context_free(self, params):
        """Raw base parameters without the head, `(b, h, w, c, num_params)`."""
        return self._split(params)[..., :self.num_params]

    def export_outputs(self, params):
        """`x_mean` and the decoder's `features`, which the codec needs."""
        return {"x_mean": self.mean(params),
                "features": ops.cast(params, "float32")}

    def head_weights(self):
        """The head as float64 numpy arrays (the codec computes it in numpy).

        Returns:
            dict with `offsets` (list of `[dy, dx]`), `context_kernel`,
            `feature_kernel`, `bias`, `output_kernel` and the settings of
            the base likelihood.
        """
        weights = {name: np.asarray(ops.convert_to_numpy(getattr(self, name)),
                                    np.float64)
                   for name in ("context_kernel", "feature_kernel", "bias",
                                "output_kernel")}
        weights["offsets"] = [list(offset) for offset in self.offsets]
        return weights

    def export_metadata(self):
        """JSON-ready head weights, stored in exported `.tflite` files."""
        return {name: (value.tolist() if isinstance(value, np.ndarray)
                       else value)
                for name, value in self.head_weights().items()}

    def get_config(self):
        config = super().get_config()
        config.update(radius=self.radius, hidden_units=self.hidden_units,
                      features=self.features)
        return config


@keras.saving.register_keras_serializable(package="keras_vae")
class ContextBernoulli(ContextLikelihood):
    """Binary pixels: a Bernoulli per pixel given z and its causal context.

    The head adds to each pixel's logit a function of its already-seen
    neighbours (see `ContextLikelihood`). Local context is what standard
    binary-image codecs (JBIG2, JPEG-XL) model; the latent code adds the
    shape of the whole image, so on binarised digits this codes well below
    both a plain Bernoulli VAE and those codecs.

    Args:
        radius: int >= 1. Size of the causal neighbourhood (2: 12 pixels).
        hidden_units: int >= 1. Width of the head's hidden layer.
        features: int >= 1. Decoder outputs per pixel (one logit, then
            `features - 1` extra features for the head).

    Example:

    >>> import keras_vae
    >>> model = keras_vae.models.mlp_vae(
    ...     (8, 8, 1), latent_dim=2, hidden_units=(16,),
    ...     likelihood="context_bernoulli")
    >>> tuple(model.decoder.output.shape)
    (None, 8, 8, 4)
    """

    data_bounds = Bernoulli.data_bounds
    num_params = 1

    def logits(self, x, params):
        """Logits of every pixel `(b, h, w, c)` given the data `x`."""
        return self.raw_params(x, params)[..., 0]

    def negative_log_prob(self, x, params):
        logits = self.logits(x, params)
        x = ops.reshape(ops.cast(x, "float32"), ops.shape(logits))
        elementwise = (ops.relu(logits) - x * logits
                       + ops.log1p(ops.exp(-ops.abs(logits))))
        return sum_over_data_axes(elementwise)

    def mean(self, params):
        guess = ops.sigmoid(self._context_free(params)[..., 0])
        return ops.sigmoid(self.raw_params(guess, params, True)[..., 0])

    def negative_log_prob_from_mean(self, x, mean):
        """Cross-entropy of `x` from the plug-in probabilities of `mean`."""
        return Bernoulli().negative_log_prob_from_mean(x, mean)

    def validate_data(self, x, name="x"):
        Bernoulli().validate_data(x, name)


@keras.saving.register_keras_serializable(package="keras_vae")
class ContextDiscretizedLogistic(ContextLikelihood):
    """8-bit pixels: a discretised logistic given z and the causal context.

    The head shifts each pixel's raw location and log-scale by a function
    of its already-seen neighbours' levels (see `ContextLikelihood`), then
    `DiscretizedLogistic` turns them into probabilities of the
    `num_levels` levels: a one-layer PixelCNN++-style model on top of the
    VAE. Data are levels k / (num_levels - 1) in [0, 1].

    Args:
        num_levels: int >= 2. Number of integer levels (256 for 8 bits).
        min_log_scale: float. Smallest log-scale in data units.
        radius: int >= 1. Size of the causal neighbourhood.
        hidden_units: int >= 1. Width of the head's hidden layer.
        features: int >= 2. Decoder outputs per pixel (raw location,
            raw log-scale, then extra features for the head).
        uniform_mass: float in [0, 1). Probability spread evenly over all
            levels (see `DiscretizedLogistic`): bounds the cost of a pixel
            the model places far in a tail.

    Example:

    >>> import keras_vae
    >>> model = keras_vae.models.mlp_vae(
    ...     (8, 8, 1), latent_dim=2, hidden_units=(16,),
    ...     likelihood="context_discretized_logistic")
    >>> tuple(model.decoder.output.shape)
    (None, 8, 8, 4)
    """

    data_bounds = DiscretizedLogistic.data_bounds
    num_params = 2

    def __init__(self, num_levels=256, min_log_scale=LOG_SCALE_BOUNDS[0],
                 radius=2, hidden_units=16, features=4, uniform_mass=0.0,
                 **kwargs):
        super().__init__(radius, hidden_units, features, **kwargs)
        self.levels = DiscretizedLogistic(num_levels, min_log_scale,
                                          uniform_mass)
        self.num_levels = self.levels.num_levels
        self.min_log_scale = self.levels.min_log_scale
        self.uniform_mass = self.levels.uniform_mass

    def build(self, input_shape=None):
        # The discretised logistic inside has no weights of its own.
        self.levels.build(input_shape)
        self.built = True

    def _as_levels_params(self, raw):
        """`(b, h, w, c, 2)` raw parameters in DiscretizedLogistic's layout."""
        return ops.concatenate([raw[..., 0], raw[..., 1]], axis=-1)

    def negative_log_prob(self, x, params):
        raw = self.raw_params(x, params)
        return self.levels.negative_log_prob(
            x, self._as_levels_params(raw))

    def mean(self, params):
        """The context-free location clipped to [0, 1] (a plug-in mean).

        Unlike `ContextBernoulli`, the head is left out: feeding the
        clipped locations back through it does not convert to a clean
        int8 file, and the head's correction to an 8-bit level is small
        next to the location itself. Lossless coding never uses `mean`.
        """
        return self.levels.mean(self._as_levels_params(
            self._context_free(params)))

    def validate_data(self, x, name="x"):
        self.levels.validate_data(x, name)

    def head_weights(self):
        weights = super().head_weights()
        weights.update(num_levels=self.num_levels,
                       min_log_scale=self.min_log_scale,
                       max_log_scale=LOG_SCALE_BOUNDS[1],
                       loc_range=list(LOC_RANGE),
                       uniform_mass=self.uniform_mass)
        return weights

    def get_config(self):
        config = super().get_config()
        config.update(num_levels=self.num_levels,
                      min_log_scale=self.min_log_scale,
                      uniform_mass=self.uniform_mass)
        return config
