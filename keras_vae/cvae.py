"""Conditional VAE: encoder and decoder both see a class label."""

import keras

from keras_vae import _validation
from keras_vae.vae import VAE


@keras.saving.register_keras_serializable(package="keras_vae")
class CVAE(VAE):
    """Conditional VAE with q(z | x, y) and p(x | z, y) for a class label y.

    `keras_vae.VAE` feeds labels to its encoder and decoder whenever the
    model is conditional; a `CVAE` only says how many classes there are and
    how inputs and labels are split. Everything else is the VAE's own: the
    ELBO, `compile`/`fit`/`evaluate`/`predict` with their execution
    defaults (the fused TensorFlow path included), input checks, metrics
    and saving. The encoder takes `[x, y_one_hot]` and the decoder
    `[z, y_one_hot]`.

    Labels are integer class ids `(batch,)` or one-hot `(batch,
    num_classes)`. Train with `fit(x, y)`, `fit((x, y))` or a `tf.data`
    dataset of `(x, y)`; without labels `fit` raises a `ValueError`.
    `class_weight` weighs examples by class. The reported `elbo` bounds the
    conditional log-likelihood log p(x | y). `predict` takes the pair
    `[x, labels]`; `encode`, `decode`, `reconstruct` and `sample` take
    `labels`.

    Args:
        encoder: `keras.Model`. Maps `[x, y_one_hot]` to
            `[z_mean, z_log_var]` (or the other forms `keras_vae.VAE`
            accepts).
        decoder: `keras.Model`. Maps `[z, y_one_hot]` to the likelihood
            parameters.
        num_classes: int > 0. Number of classes.
        **kwargs: `likelihood`, `beta`, `free_bits`, `prior`, `seed`, `name`
            as in `keras_vae.VAE`.

    Example:

    >>> import numpy as np, keras_vae
    >>> model = keras_vae.models.mlp_cvae((8, 8, 1), num_classes=10,
    ...                                   latent_dim=2, hidden_units=(16,))
    >>> model.compile(optimizer="adam")
    >>> x = np.random.default_rng(0).uniform(size=(20, 8, 8, 1)).astype("float32")
    >>> _ = model.fit(x, np.arange(20) % 10, epochs=1, verbose=0)
    >>> tuple(model.sample(3, labels=7, seed=0).shape)
    (3, 8, 8, 1)
    """

    def __init__(self, encoder, decoder, num_classes, **kwargs):
        num_classes = _validation.check_positive_int(num_classes, "num_classes")
        for name, value, first in (
            ("encoder", encoder, "x"),
            ("decoder", decoder, "z"),
        ):
            inputs = getattr(value, "inputs", None) or []
            if len(inputs) != 2 or inputs[1].shape[-1] != num_classes:
                raise ValueError(
                    f"Expected `{name}` to take two inputs, `[{first}, "
                    f"y_one_hot]`, the second of shape (batch, "
                    f"{num_classes}) for num_classes={num_classes}. "
                    f"Received: {name} with inputs="
                    f"{[tuple(t.shape) for t in inputs]}"
                )
        self.num_classes = num_classes
        super().__init__(encoder, decoder, **kwargs)

    def _split_inputs(self, inputs):
        """`call` takes the pair `(x, labels)`."""
        if not isinstance(inputs, (tuple, list)) or len(inputs) != 2:
            raise ValueError(
                "CVAE inputs are a pair `(x, y_one_hot)`. Received: "
                f"inputs of type {type(inputs).__name__}"
            )
        return inputs[0], inputs[1]

    def _unpack_data(self, data):
        """Batches are `(x, labels[, sample_weight])` or `((x, labels),)`."""
        x, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if labels is None and isinstance(x, (tuple, list)) and len(x) == 2:
            x, labels = x
        if labels is None:
            raise ValueError(
                "CVAE needs class labels: feed `(x, y)` pairs, e.g. "
                "`model.fit(x, y)` or a dataset of `(x, y)`. Received: "
                "data without labels"
            )
        return x, labels, sample_weight

    def sample(self, num_samples, labels=None, seed=None):
        """Draw `num_samples` decoded samples of the given classes.

        Args:
            num_samples: int > 0.
            labels: int (one class for all samples), integer ids
                `(num_samples,)` or one-hot `(num_samples, num_classes)`.
                Required.
            seed: int or None. The same int gives the same samples.
        """
        return super().sample(num_samples, seed=seed, labels=labels)

    def get_config(self):
        config = super().get_config()
        config["num_classes"] = self.num_classes
        return config
