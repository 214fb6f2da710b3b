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

    def negative_log_prob_from_mean(self, x, mean):
        """Per-example negative log-likelihood from the mean of p(x | z).

        Exported files (`keras_vae.export`) return the mean of p(x | z),
        e.g. pixel probabilities, not the decoder's raw parameters; this
        scores `x` from that mean, in nats, shape `(batch,)`.

        Args:
            x: array or tensor `(batch, ...)`.
            mean: array or tensor of the same shape, as returned by `mean`.
        """
        raise NotImplementedError(
            f"{type(self).__name__} cannot score data from the mean of "
            "p(x | z); implement `negative_log_prob_from_mean`."
        )

    #: `(low, high)` or None: the values data may take. Inputs that cannot
    #: be checked before training (`tf.data`, generators) are checked
    #: against it inside the compiled step.
    data_bounds = None

    def validate_data(self, x, name="x"):
        """Raise `ValueError` if numpy data `x` cannot come from this model."""

    def matched_to_decoder(self, activation, adapt=False):
        """This likelihood, checked against the decoder's last activation.

        Args:
            activation: str or None. Name of the decoder's final activation
                (`"sigmoid"`, `"softmax"`, `"linear"`, ...).
            adapt: bool. Whether the likelihood was chosen by name and may
                be replaced by a variant that fits the decoder.

        Returns:
            A `Likelihood`: `self`, or an adapted one. Raises `ValueError`
            when the decoder cannot feed this likelihood.
        """
        return self

    def params_shape(self, data_shape):
        """Per-example shape of the decoder output for data of `data_shape`.

        One parameter per data dimension by default; a likelihood with more
        (e.g. a location and a scale per pixel) stacks them on the last
        axis. The model builders size the decoder's output with it.

        Args:
            data_shape: tuple of ints. Per-example data shape.
        """
        return tuple(data_shape)

    def export_outputs(self, params):
        """Named tensors that describe p(x | z) outside Keras.

        The exported `decode` signature returns them, and the codec
        (`keras_vae.codec`) codes data with them, in Keras and in the
        TensorFlow-free runtime alike. `x_mean` is always there; a
        likelihood whose mean does not determine it adds its parameters.

        Args:
            params: tensor. Decoder output.
        """
        return {"x_mean": self.mean(params)}

    def export_metadata(self):
        """JSON-ready values an exported file must carry, or None.

        `keras_vae.export.to_tflite` stores them in the file's metadata
        (`likelihood_head`) for runtimes that need more than the decoder's
        outputs, e.g. the context head of `ContextBernoulli`.
        """
        return None

    def call(self, params):
        return self.mean(params)

    def compute_output_spec(self, params):
        return keras.KerasTensor(params.shape, dtype=self.compute_dtype)


def sum_over_data_axes(values):
    """Sum elementwise terms over every axis but the batch axis."""
    return keras.ops.sum(
        keras.ops.reshape(values, (keras.ops.shape(values)[0], -1)), axis=-1
    )
