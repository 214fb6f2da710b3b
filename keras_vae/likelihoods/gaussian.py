"""Gaussian likelihood with a fixed or learned scale."""

import math

import keras

from keras_vae.likelihoods.base import Likelihood, sum_over_data_axes

_LOG_SCALE_MODES = ("fixed", "global", "per_pixel")
# A log-scale outside this range makes the density overflow in float32.
_LOG_SCALE_BOUNDS = (-7.0, 7.0)


@keras.saving.register_keras_serializable(package="keras_vae")
class Gaussian(Likelihood):
    """Gaussian observation model; the decoder emits the mean.

    Args:
        log_scale: str. `"fixed"` keeps the standard deviation at
            `exp(initial_log_scale)` (unit scale by default), `"global"`
            learns one log standard deviation shared by every dimension and
            `"per_pixel"` learns one per data dimension.
        initial_log_scale: float. Starting log standard deviation.

    Example:

    >>> import keras_vae
    >>> likelihood = keras_vae.likelihoods.Gaussian(log_scale="global")
    """

    def __init__(self, log_scale="fixed", initial_log_scale=0.0, **kwargs):
        super().__init__(**kwargs)
        if log_scale not in _LOG_SCALE_MODES:
            raise ValueError(
                f"Expected `log_scale` to be one of {_LOG_SCALE_MODES}. "
                f"Received: log_scale={log_scale!r}"
            )
        self.log_scale_mode = log_scale
        self.initial_log_scale = float(initial_log_scale)
        self.log_scale = None

    def build(self, input_shape):
        if self.log_scale_mode == "fixed":
            self.built = True
            return
        shape = () if self.log_scale_mode == "global" else tuple(input_shape[1:])
        self.log_scale = self.add_weight(
            shape=shape,
            initializer=keras.initializers.Constant(self.initial_log_scale),
            name="log_scale",
        )
        self.built = True

    def current_log_scale(self):
        if self.log_scale is None:
            return keras.ops.convert_to_tensor(self.initial_log_scale)
        return keras.ops.clip(self.log_scale, *_LOG_SCALE_BOUNDS)

    def negative_log_prob(self, x, params):
        mean = keras.ops.cast(params, "float32")
        x = keras.ops.cast(x, "float32")
        log_scale = keras.ops.cast(self.current_log_scale(), "float32")
        standardized = (x - mean) * keras.ops.exp(-log_scale)
        elementwise = (
            0.5 * math.log(2.0 * math.pi)
            + log_scale
            + 0.5 * keras.ops.square(standardized)
        )
        return sum_over_data_axes(elementwise)

    def mean(self, params):
        return params

    def negative_log_prob_from_mean(self, x, mean):
        """The Gaussian's parameter is its mean: same as `negative_log_prob`."""
        return self.negative_log_prob(x, mean)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "log_scale": self.log_scale_mode,
                "initial_log_scale": self.initial_log_scale,
            }
        )
        return config
