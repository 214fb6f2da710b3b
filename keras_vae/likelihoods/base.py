"""Base class of the observation models p(x | z)."""

import keras


class Likelihood(keras.layers.Layer):
    """An observation model p(x | z) whose parameters the decoder emits.

    A likelihood turns the decoder output into a per-example negative
    log-likelihood (summed over all data dimensions, in nats) and into the
    mean of the distribution. It is a Keras layer so that learned parameters
    (for example a Gaussian log-scale) are tracked, trained and saved with the
    model.

    Subclasses implement `negative_log_prob(x, params)` and `mean(params)`.
    """

    def negative_log_prob(self, x, params):
        """Per-example negative log-likelihood, shape `(batch,)`, in nats."""
        raise NotImplementedError

    def mean(self, params):
        """Mean of p(x | z) given the decoder output `params`."""
        raise NotImplementedError

    def validate_data(self, x, name="x"):
        """Raise `ValueError` if numpy data `x` cannot come from this model."""

    def call(self, params):
        return self.mean(params)

    def compute_output_spec(self, params):
        return keras.KerasTensor(params.shape, dtype=self.compute_dtype)


def sum_over_data_axes(values):
    """Sum elementwise terms over every axis but the batch axis."""
    return keras.ops.sum(
        keras.ops.reshape(values, (keras.ops.shape(values)[0], -1)), axis=-1
    )
