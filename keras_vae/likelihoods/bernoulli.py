"""Bernoulli likelihood with logits from the decoder."""

import keras
import numpy as np

from keras_vae.likelihoods.base import Likelihood, sum_over_data_axes


@keras.saving.register_keras_serializable(package="keras_vae")
class Bernoulli(Likelihood):
    """Bernoulli observation model; the decoder emits logits.

    The negative log-likelihood is the sigmoid cross-entropy computed from
    logits, `max(l, 0) - x * l + log(1 + exp(-|l|))`, which is finite for any
    finite logit. Data must lie in [0, 1] (grey levels are allowed, as in
    the usual MNIST VAE benchmarks).

    Example:

    >>> import numpy as np, keras_vae
    >>> nll = keras_vae.likelihoods.Bernoulli().negative_log_prob(
    ...     np.zeros((1, 4), "float32"), np.zeros((1, 4), "float32"))
    >>> round(float(nll[0]), 4)  # 4 * log(2)
    2.7726
    """

    def negative_log_prob(self, x, params):
        logits = keras.ops.cast(params, "float32")
        x = keras.ops.cast(x, "float32")
        elementwise = (
            keras.ops.relu(logits)
            - x * logits
            + keras.ops.log1p(keras.ops.exp(-keras.ops.abs(logits)))
        )
        return sum_over_data_axes(elementwise)

    def mean(self, params):
        return keras.ops.sigmoid(params)

    def validate_data(self, x, name="x"):
        low, high = float(np.min(x)), float(np.max(x))
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"The Bernoulli likelihood needs `{name}` in [0, 1]. Scale the "
                f"data (8-bit images: divide by 255) or use "
                f"likelihood='gaussian'. Received: {name} with min={low:g}, "
                f"max={high:g}"
            )
