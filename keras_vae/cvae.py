"""Conditional VAE: encoder and decoder both see a class label."""

import keras
import numpy as np
from keras import ops

from keras_vae import _validation
from keras_vae.vae import LOG_VAR_BOUNDS, VAE


def _is_array_like(value):
    return isinstance(value, (np.ndarray, list)) or hasattr(value, "__array__")


@keras.saving.register_keras_serializable(package="keras_vae")
class CVAE(VAE):
    """Conditional VAE with q(z | x, y) and p(x | z, y) for a class label y.

    Everything but the conditioning is inherited from `keras_vae.VAE`: the
    ELBO terms (likelihood, prior KL, free bits, `beta_variable`), the
    per-backend `train_step`/`test_step`, metrics and saving. The encoder
    takes `[x, y_one_hot]` and the decoder `[z, y_one_hot]`.

    Labels are integer class ids `(batch,)` or one-hot `(batch,
    num_classes)`. Train with `fit(x, y)`, `fit((x, y))` or a `tf.data`
    dataset of `(x, y)`; without labels `fit` raises a `ValueError`. The
    reported `elbo` bounds the conditional log-likelihood log p(x | y).

    Args:
        encoder: `keras.Model`. Maps `[x, y_one_hot]` to
            `[z_mean, z_log_var]`.
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

    # ---------------------------------------------------------- labels
    def _one_hot(self, labels):
        """Integer ids `(batch,)`/`(batch, 1)` or one-hot -> float one-hot."""
        labels = ops.convert_to_tensor(labels)
        if len(labels.shape) == 2 and labels.shape[-1] == self.num_classes and (
            self.num_classes > 1
        ):
            return ops.cast(labels, "float32")
        if len(labels.shape) == 2:
            labels = ops.squeeze(labels, axis=-1)
        return ops.one_hot(ops.cast(labels, "int32"), self.num_classes)

    def _check_labels(self, labels, num_examples, name="labels"):
        """Validate numpy labels and return them one-hot, float32."""
        if labels is None:
            raise ValueError(
                f"CVAE needs class labels: pass `{name}` (integer ids in "
                f"[0, {self.num_classes}) or one-hot of width "
                f"{self.num_classes}), e.g. `model.fit(x, y)`. "
                f"Received: {name}=None"
            )
        array = np.asarray(labels)
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
            raise ValueError(
                f"Expected `{name}` to hold class ids or one-hot numbers. "
                f"Received: {name} with dtype={array.dtype}"
            )
        if array.ndim == 0:
            array = np.full((num_examples,), array)
        one_hot_shape = (num_examples, self.num_classes)
        if array.ndim == 2 and array.shape == one_hot_shape and self.num_classes > 1:
            if not np.all((array == 0) | (array == 1)) or not np.all(
                array.sum(-1) == 1
            ):
                raise ValueError(
                    f"One-hot `{name}` must hold a single 1 per row. "
                    f"Received: {name} with row sums in "
                    f"[{array.sum(-1).min()}, {array.sum(-1).max()}]"
                )
            return array.astype("float32")
        if array.ndim == 2 and array.shape[-1] == 1:
            array = array[:, 0]
        if array.ndim != 1 or len(array) != num_examples:
            raise ValueError(
                f"Expected `{name}` of shape ({num_examples},) with integer "
                f"ids or ({num_examples}, {self.num_classes}) one-hot. "
                f"Received: {name} of shape {array.shape}"
            )
        if not np.all(np.mod(array, 1) == 0) or array.min() < 0 or (
            array.max() >= self.num_classes
        ):
            raise ValueError(
                f"Expected integer `{name}` in [0, {self.num_classes}). "
                f"Received: {name} with min={array.min()}, max={array.max()}"
            )
        return np.eye(self.num_classes, dtype="float32")[array.astype("int64")]

    def _unpack_x(self, data):
        x, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        if labels is None and isinstance(x, (tuple, list)) and len(x) == 2:
            x, labels = x
        if labels is None:
            raise ValueError(
                "CVAE needs class labels: feed `(x, y)` pairs, e.g. "
                "`model.fit(x, y)` or a dataset of `(x, y)`. Received: "
                "data without labels"
            )
        return (x, self._one_hot(labels))

    def _split(self, inputs):
        if not isinstance(inputs, (tuple, list)) or len(inputs) != 2:
            raise ValueError(
                "CVAE inputs are a pair `(x, y_one_hot)`. Received: "
                f"inputs of type {type(inputs).__name__}"
            )
        x, labels = inputs
        return ops.convert_to_tensor(x), self._one_hot(labels)

    def prepare_labels(self, labels, num_examples, name="labels"):
        """Validated float32 one-hot labels for `num_examples` examples.

        Args:
            labels: int (one class for all), integer ids `(n,)` or `(n, 1)`,
                or one-hot `(n, num_classes)`. Required.
            num_examples: int. Number of examples the labels go with.
            name: str. Argument name used in error messages.
        """
        return self._check_labels(labels, num_examples, name)

    # ------------------------------------------------------ the model
    def posterior(self, x, labels=None, training=False):
        """Parameters `(z_mean, z_log_var)` of q(z | x, y) as tensors.

        Args:
            x: tensor `(batch, *input_shape)`.
            labels: one-hot labels `(batch, num_classes)` (see
                `prepare_labels`) or integer ids `(batch,)`.
            training: bool. Training mode of the encoder's layers.
        """
        if labels is None:
            self._check_labels(None, 0)
        return self._conditional_posterior(
            x, self._one_hot(labels), training=training
        )

    def decoder_params(self, z, labels=None, training=False):
        """Parameters of p(x | z, y) as a tensor.

        Args:
            z: tensor `(batch, latent_dim)`.
            labels: one-hot labels `(batch, num_classes)` or integer ids.
            training: bool. Training mode of the decoder's layers.
        """
        if labels is None:
            self._check_labels(None, 0)
        return self._conditional_decoder(
            z, self._one_hot(labels), training=training
        )

    def _conditional_posterior(self, x, labels, training=False):
        x, labels = ops.convert_to_tensor(x), ops.convert_to_tensor(labels)
        z_mean, z_log_var = self.encoder([x, labels], training=training)
        return z_mean, ops.clip(z_log_var, *LOG_VAR_BOUNDS)

    def _conditional_decoder(self, z, labels, training=False):
        z, labels = ops.convert_to_tensor(z), ops.convert_to_tensor(labels)
        return self.decoder([z, labels], training=training)

    def _numpy_pair(self, x, labels):
        x = self._maybe_validate(x)
        return x, self._check_labels(labels, int(x.shape[0]))

    def encode(self, x, labels=None):
        """Posterior parameters `(z_mean, z_log_var)` of q(z | x, y).

        Args:
            x: array `(batch, *input_shape)`.
            labels: integer ids `(batch,)` or one-hot `(batch, num_classes)`.
        """
        x, labels = self._numpy_pair(x, labels)
        return self._conditional_posterior(x, labels)

    def decode(self, z, labels=None):
        """Mean of p(x | z, y).

        Args:
            z: array `(batch, latent_dim)`.
            labels: integer ids, one id for all, or one-hot labels.
        """
        if isinstance(z, (np.ndarray, list)):
            z = _validation.as_float_array(z, "z", (self.latent_dim,))
        labels = self._check_labels(labels, int(z.shape[0]))
        return self.likelihood.mean(self._conditional_decoder(z, labels))

    def reconstruct(self, x, labels=None):
        """Reconstruction of `x` through the posterior mean given `labels`."""
        x, labels = self._numpy_pair(x, labels)
        z_mean, _ = self._conditional_posterior(x, labels)
        return self.likelihood.mean(self._conditional_decoder(z_mean, labels))

    def sample(self, num_samples, labels=None, seed=None):
        """Draw `num_samples` decoded samples of the given classes.

        Args:
            num_samples: int > 0.
            labels: int (one class for all samples), integer ids
                `(num_samples,)` or one-hot `(num_samples, num_classes)`.
                Required.
            seed: int or None. The same int gives the same samples.
        """
        num_samples = _validation.check_positive_int(num_samples, "num_samples")
        labels = self._check_labels(labels, num_samples)
        noise_seed = self.seed_generator if seed is None else seed
        z = self.prior.sample(num_samples, self.latent_dim, seed=noise_seed)
        return self.likelihood.mean(self._conditional_decoder(z, labels))

    def call(self, inputs, training=False):
        x, labels = self._split(inputs)
        z_mean, _ = self._conditional_posterior(x, labels, training=training)
        return self.likelihood.mean(
            self._conditional_decoder(z_mean, labels, training=training)
        )

    def compute_output_spec(self, inputs, training=False):
        return keras.KerasTensor(
            (inputs[0].shape[0], *self.decoder.outputs[0].shape[1:]),
            dtype=self.compute_dtype,
        )

    def compute_terms(self, x, training=False, seed=None):
        """Per-example ELBO terms of log p(x | y) with one sample.

        Args:
            x: pair `(x, labels)`. Same returned dict as
                `keras_vae.VAE.compute_terms`.
        """
        data, labels = self._split(x)
        z_mean, z_log_var = self._conditional_posterior(data, labels, training)
        return self._elbo_terms(
            data, z_mean, z_log_var,
            lambda z: self._conditional_decoder(z, labels, training=training),
            seed,
        )

    # ------------------------------------------ validated entry points
    def _pair_from_arguments(self, x, y, name):
        if y is None and isinstance(x, (tuple, list)) and len(x) == 2 and all(
            _is_array_like(part) for part in x
        ):
            x, y = x
        if _is_array_like(x):
            x = self._validate_fit_data(np.asarray(x), name)
            y = self._check_labels(y, len(x), "y")
            return x, y
        try:
            import tensorflow as tf
        except ImportError:  # pragma: no cover - tensorflow is a dependency
            return x, y
        if isinstance(x, tf.data.Dataset):
            spec = x.element_spec
            if not isinstance(spec, (tuple, list)) or len(spec) < 2:
                raise ValueError(
                    "CVAE needs class labels: the dataset must yield "
                    "`(x, y)` pairs, e.g. `keras_vae.datasets.to_dataset(x, "
                    f"y=labels)`. Received: {name} with element_spec={spec}"
                )
        return x, y

    def fit(self, x=None, y=None, *args, validation_data=None, **kwargs):
        self._check_batch_size(args, kwargs)
        x, y = self._pair_from_arguments(x, y, "x")
        if isinstance(validation_data, (tuple, list)) and len(validation_data) == 2:
            validation_data = self._pair_from_arguments(
                validation_data[0], validation_data[1], "validation_data"
            )
        # VAE.fit would re-check x; the pair is already validated here.
        return keras.Model.fit(
            self, x, y, *args, validation_data=validation_data, **kwargs
        )

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self._check_batch_size(args, kwargs)
        x, y = self._pair_from_arguments(x, y, "x")
        return keras.Model.evaluate(self, x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        """Reconstructions of `[x, labels]` (a list or tuple of two arrays)."""
        if isinstance(x, (tuple, list)) and len(x) == 2:
            data, labels = self._pair_from_arguments(x[0], x[1], "x")
            x = [data, labels]
        return keras.Model.predict(self, x, *args, **kwargs)

    def get_config(self):
        config = super().get_config()
        config["num_classes"] = self.num_classes
        return config
