"""Discretised logistic likelihood for integer pixel values (8-bit images)."""

import math

import keras
import numpy as np
from keras import ops

from keras_vae.likelihoods.base import Likelihood, sum_over_data_axes

# Default bounds of the log-scale in data units (x in [0, 1]): exp(-7) is a
# quarter of an 8-bit grey level (98% of the mass in one bin), exp(2) is
# flat. A lower floor lets a model overfit into near-certain levels whose
# misses then cost tens of bits on test data.
LOG_SCALE_BOUNDS = (-7.0, 2.0)
# Range of the location in data units: a quarter of the range beyond each
# edge, where the edge level already takes almost all the mass.
LOC_RANGE = (-0.25, 1.25)
# Data further than this fraction of a bin from a level is not integer data.
_LEVEL_TOLERANCE = 1e-3


@keras.saving.register_keras_serializable(package="keras_vae")
class DiscretizedLogistic(Likelihood):
    """Logistic distribution discretised to `num_levels` integer levels.

    For 8-bit images: a pixel value k in {0, ..., 255} is fed to the network
    as x = k / 255 (the usual scaling, as `keras_vae.datasets` returns it),
    and p(x | z) puts on each level the mass of a logistic with location
    `loc` and scale `s` over the level's bin `[x - h, x + h]`, h = 1/510;
    the first and last bins take the tails, so the probabilities of the 256
    levels sum to one (PixelCNN++'s likelihood with one component). The
    negative log-likelihood is an exact code length in nats: what
    `keras_vae.codec` pays per image, up to the bits-back overhead.

    The decoder emits two values per data dimension, stacked on the last
    axis: the locations, then the raw log-scales (clipped to
    [`min_log_scale`, 2]); `params_shape` tells the builders. `mean` returns
    the median (the location clipped to [0, 1]), which an int8 file keeps
    precisely; `export_outputs` adds `loc` and `log_scale`.

    With `uniform_mass` > 0 the distribution is a mixture: that much
    probability spread evenly over the levels, the rest the discretised
    logistic. No level then costs more than `log(num_levels /
    uniform_mass)` nats, so a pixel the model places far in a tail (an
    unusual stroke in test data) has a bounded cost, and training sees
    the same bounded cost as coding does; the price is `-log(1 -
    uniform_mass)` nats on every pixel. `keras_vae.codec` codes the same
    mixture, from the Keras model and from exported `.tflite` files (their
    metadata carries `uniform_mass`).

    Args:
        num_levels: int >= 2. Number of integer levels (256 for 8 bits).
        min_log_scale: float. Smallest log-scale in data units (default
            -7: a quarter of a level for 8 bits), the model's most
            confident prediction.
        uniform_mass: float in [0, 1). Probability spread evenly over all
            levels (0: the plain discretised logistic).

    Example:

    >>> import keras_vae
    >>> model = keras_vae.models.mlp_vae(
    ...     (8, 8, 1), latent_dim=2, hidden_units=(16,),
    ...     likelihood="discretized_logistic")
    >>> tuple(model.decoder.output.shape)
    (None, 8, 8, 2)
    """

    def __init__(self, num_levels=256, min_log_scale=LOG_SCALE_BOUNDS[0],
                 uniform_mass=0.0, **kwargs):
        super().__init__(**kwargs)
        if (isinstance(num_levels, bool) or not isinstance(num_levels, int)
                or not 2 <= num_levels <= 2**16):
            raise ValueError(
                "Expected `num_levels` to be an int in [2, 65536] (256 for "
                f"8-bit data). Received: num_levels={num_levels!r}"
            )
        self.num_levels = num_levels
        try:
            bound_ok = float(min_log_scale) < LOG_SCALE_BOUNDS[1]
        except (TypeError, ValueError):
            bound_ok = False
        if not bound_ok:
            raise ValueError(
                f"Expected `min_log_scale` < {LOG_SCALE_BOUNDS[1]}. Received: "
                f"min_log_scale={min_log_scale!r}"
            )
        self.min_log_scale = float(min_log_scale)
        try:
            mass_ok = 0.0 <= float(uniform_mass) < 1.0
        except (TypeError, ValueError):
            mass_ok = False
        if isinstance(uniform_mass, bool) or not mass_ok:
            raise ValueError(
                "Expected `uniform_mass` to be a float in [0, 1) (e.g. 1e-3: "
                "a probability floor of 1e-3 / num_levels per level). "
                f"Received: uniform_mass={uniform_mass!r}"
            )
        self.uniform_mass = float(uniform_mass)

    @property
    def bin_width(self):
        """float. Distance between two levels in data units, 1/(levels-1)."""
        return 1.0 / (self.num_levels - 1)

    def params_shape(self, data_shape):
        data_shape = tuple(data_shape)
        return (*data_shape[:-1], 2 * data_shape[-1])

    def split_params(self, params):
        """`(loc, log_scale)` from the decoder output.

        The location is squashed into `LOC_RANGE` (a bounded tensor keeps
        its precision in an int8 file; beyond the edges the first or last
        level already holds all the mass) and the log-scale is clipped to
        `[min_log_scale, LOG_SCALE_BOUNDS[1]]`.
        """
        params = ops.cast(params, "float32")
        channels = params.shape[-1]
        if channels is None or channels % 2:
            raise ValueError(
                "DiscretizedLogistic needs decoder outputs with an even last "
                "axis (locations, then log-scales): build the decoder with "
                "`likelihood.params_shape(data_shape)`. Received: params "
                f"with shape {tuple(params.shape)}"
            )
        half = channels // 2
        low, high = LOC_RANGE
        loc = low + (high - low) * ops.sigmoid(params[..., :half])
        log_scale = ops.clip(params[..., half:], self.min_log_scale,
                             LOG_SCALE_BOUNDS[1])
        return loc, log_scale

    def negative_log_prob(self, x, params):
        loc, log_scale = self.split_params(params)
        x = ops.cast(x, "float32")
        half = 0.5 * self.bin_width
        inverse_scale = ops.exp(-log_scale)
        upper = (x + half - loc) * inverse_scale
        lower = (x - half - loc) * inverse_scale
        # log(sigmoid(upper) - sigmoid(lower)) without cancellation:
        # log(1 - exp(-(upper - lower))) - softplus(-upper) - softplus(lower);
        # the first level drops the lower term, the last the upper one.
        first = x < half
        last = x > 1.0 - half
        log_width = ops.log(-ops.expm1(-self.bin_width * inverse_scale))
        zeros = ops.zeros_like(upper)
        log_prob = (
            ops.where(first | last, zeros, log_width)
            - ops.where(last, zeros, ops.softplus(-upper))
            - ops.where(first, zeros, ops.softplus(lower))
        )
        if self.uniform_mass:
            log_prob = ops.logaddexp(
                log_prob + math.log1p(-self.uniform_mass),
                ops.full_like(log_prob, math.log(self.uniform_mass
                                                 / self.num_levels)))
        return -sum_over_data_axes(log_prob)

    def mean(self, params):
        """The location clipped to [0, 1]: the median of p(x | z).

        It equals the mean up to the mass beyond the edges (at most
        `s log 2`); the exact mean needs the scale, which spans four
        orders of magnitude and loses its precision in an int8 file, so the
        exported `x_mean` is this robust version. `keras_vae.codec` computes
        the exact mean from `loc` and `log_scale` where it needs one.
        """
        loc, _ = self.split_params(params)
        return ops.clip(loc, 0.0, 1.0)

    def export_outputs(self, params):
        loc, log_scale = self.split_params(params)
        return {"x_mean": self.mean(params), "loc": loc,
                "log_scale": log_scale}

    def validate_data(self, x, name="x"):
        low, high = float(np.min(x)), float(np.max(x))
        levels = np.asarray(x, np.float64) * (self.num_levels - 1)
        off_level = float(np.max(np.abs(levels - np.round(levels))))
        if low < 0.0 or high > 1.0 or off_level > _LEVEL_TOLERANCE:
            raise ValueError(
                f"The DiscretizedLogistic likelihood needs `{name}` = k / "
                f"{self.num_levels - 1} for integers k in [0, "
                f"{self.num_levels - 1}] (8-bit images: divide the uint8 "
                f"pixels by 255). Received: {name} with min={low:g}, "
                f"max={high:g}, largest distance to a level "
                f"{off_level:.3g} levels"
            )

    def get_config(self):
        config = super().get_config()
        config.update({"num_levels": self.num_levels,
                       "min_log_scale": self.min_log_scale,
                       "uniform_mass": self.uniform_mass})
        return config

