"""Bernoulli likelihood with logits (or probabilities) from the decoder."""

import keras
import numpy as np

from keras_vae.likelihoods.base import Likelihood, sum_over_data_axes

# Probabilities are clipped into [MEAN_EPSILON, 1 - MEAN_EPSILON] before
# taking logs in `negative_log_prob_from_mean`.
MEAN_EPSILON = 1e-6


@keras.saving.register_keras_serializable(package="keras_vae")
class Bernoulli(Likelihood):
    """Bernoulli observation model; the decoder emits logits.

    The negative log-likelihood is the sigmoid cross-entropy computed from
    logits, `max(l, 0) - x * l + log(1 + exp(-|l|))`, which is finite for any
    finite logit. Data must lie in [0, 1] (grey levels are allowed, as in
    the usual MNIST VAE benchmarks).

    A decoder that ends in a sigmoid (as in the keras.io VAE example) emits
    probabilities instead: `from_logits=False` takes them, clipped into
    [1e-6, 1 - 1e-6] before the logs. Logits are preferred: they are exact
    where a saturated sigmoid rounds to 0 or 1 and stops the gradient.
    `keras_vae.VAE` picks `from_logits=False` by itself when the likelihood
    is given by name (`"bernoulli"`) and the decoder ends in a sigmoid.

    Args:
        from_logits: bool. True (default) when the decoder emits logits,
            False when it emits probabilities in [0, 1].

    Example:

    >>> import numpy as np, keras_vae
    >>> nll = keras_vae.likelihoods.Bernoulli().negative_log_prob(
    ...     np.zeros((1, 4), "float32"), np.zeros((1, 4), "float32"))
    >>> round(float(nll[0]), 4)  # 4 * log(2)
    2.7726
    """

    #: The values data may take, checked by `validate_data` and inside
    #: compiled steps for streaming input.
    data_bounds = (0.0, 1.0)

    def __init__(self, from_logits=True, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(from_logits, (bool, np.bool_)):
            raise ValueError(
                "Expected `from_logits` to be True (the decoder emits "
                "logits) or False (probabilities). Received: "
                f"from_logits={from_logits!r}"
            )
        self.from_logits = bool(from_logits)

    def negative_log_prob(self, x, params):
        if not self.from_logits:
            return self.negative_log_prob_from_mean(x, params)
        logits = keras.ops.cast(params, "float32")
        x = keras.ops.cast(x, "float32")
        elementwise = (
            keras.ops.relu(logits)
            - x * logits
            + keras.ops.log1p(keras.ops.exp(-keras.ops.abs(logits)))
        )
        return sum_over_data_axes(elementwise)

    def mean(self, params):
        if not self.from_logits:
            return params
        return keras.ops.sigmoid(params)

    def matched_to_decoder(self, activation, adapt=False):
        """Check (or adapt to) a decoder whose last activation is `activation`.

        A softmax makes the values of an example compete, which no Bernoulli
        model of independent values describes: refused. A sigmoid emits
        probabilities: with `from_logits=True` that is refused, or, with
        `adapt=True` (the likelihood was chosen by name), answered with a
        `Bernoulli(from_logits=False)`.
        """
        if activation == "softmax":
            raise ValueError(
                "The decoder ends in a softmax, which makes the values of "
                "one example sum to 1; the Bernoulli likelihood needs an "
                "independent probability per value. End the decoder with a "
                "linear layer (logits, recommended) or a sigmoid. Received: "
                "decoder with final activation='softmax'"
            )
        if activation == "sigmoid" and self.from_logits:
            if adapt:
                return Bernoulli(from_logits=False, name=self.name)
            raise ValueError(
                "The decoder ends in a sigmoid, so it emits probabilities, "
                "but this Bernoulli likelihood takes logits "
                "(from_logits=True). Remove the final sigmoid (recommended: "
                "logits are exact where a sigmoid saturates) or pass "
                "`likelihood=keras_vae.likelihoods.Bernoulli(from_logits="
                "False)` (or `likelihood='bernoulli'`, which adapts). "
                "Received: decoder with final activation='sigmoid', "
                "likelihood=Bernoulli(from_logits=True)"
            )
        return self

    def negative_log_prob_from_mean(self, x, mean):
        """Cross-entropy of `x` from probabilities clipped to [eps, 1 - eps].

        `eps` is `MEAN_EPSILON` (1e-6): an int8 probability of exactly 0 or
        1 then costs a large but finite amount.
        """
        p = keras.ops.clip(
            keras.ops.cast(mean, "float32"), MEAN_EPSILON, 1.0 - MEAN_EPSILON
        )
        x = keras.ops.cast(x, "float32")
        elementwise = -(x * keras.ops.log(p) + (1.0 - x) * keras.ops.log1p(-p))
        return sum_over_data_axes(elementwise)

    def get_config(self):
        config = super().get_config()
        config["from_logits"] = self.from_logits
        return config

    def validate_data(self, x, name="x"):
        low, high = float(np.min(x)), float(np.max(x))
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"The Bernoulli likelihood needs `{name}` in [0, 1]. Scale the "
                f"data (8-bit images: divide by 255) or use "
                f"likelihood='gaussian'. Received: {name} with min={low:g}, "
                f"max={high:g}"
            )
