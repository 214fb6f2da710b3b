"""The variational autoencoder model."""

import copy

import keras
import numpy as np
from keras import ops

from keras_vae import _validation, likelihoods, priors

# exp(log_var) stays a normal float32 number inside this range, whatever the
# encoder outputs, so no input can produce inf or NaN in the KL term.
LOG_VAR_BOUNDS = (-20.0, 10.0)
_SUPPORTED_BACKENDS = ("tensorflow", "jax")


@keras.saving.register_keras_serializable(package="keras_vae")
class VAE(keras.Model):
    """Variational autoencoder trained with `fit` on the negative ELBO.

    Wraps a functional `encoder` (x -> `[z_mean, z_log_var]`) and a
    functional `decoder` (z -> parameters of p(x | z), e.g. Bernoulli
    logits). `train_step` minimises `mean(reconstruction + beta * kl)` with a
    single reparameterised sample per example; `test_step` reports the same
    terms. Tracked metrics are `loss`, `reconstruction_loss`, `kl_loss` and
    `elbo`, the evidence lower bound with beta = 1 in nats per example
    (higher is better; `-elbo` is the negative ELBO usually quoted for
    MNIST), so runs with different beta compare honestly.

    `call(x)` returns the reconstruction through the posterior mean, so
    `predict` and export work on the model as a whole.

    Args:
        encoder: `keras.Model`. Maps x to `[z_mean, z_log_var]`.
        decoder: `keras.Model`. Maps z to the likelihood parameters.
        likelihood: str or `keras_vae.likelihoods.Likelihood`.
            `"bernoulli"` (default), `"gaussian"`, `"gaussian_global"`,
            `"gaussian_per_pixel"` or an instance.
        beta: float >= 0. Weight of the KL term in the training loss. Kept
            in the non-trainable variable `model.beta_variable` so callbacks
            (KL warm-up) can change it during `fit`.
        free_bits: float >= 0. Free bits in nats per latent dimension: the
            training KL of each dimension, averaged over the batch, is not
            pushed below this value. Changes the training loss only.
        prior: str or `keras_vae.priors.Prior`. Defaults to the standard
            normal.
        seed: int or None. Seed of the sampling noise.

    Example:

    >>> import keras, numpy as np, keras_vae
    >>> model = keras_vae.models.mlp_vae((8, 8, 1), latent_dim=2,
    ...                                  hidden_units=(16,))
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> x = np.random.default_rng(0).uniform(size=(32, 8, 8, 1))
    >>> history = model.fit(x.astype("float32"), epochs=1, verbose=0)
    >>> sorted(history.history)
    ['elbo', 'kl_loss', 'loss', 'reconstruction_loss']
    """

    def __init__(
        self,
        encoder,
        decoder,
        likelihood="bernoulli",
        beta=1.0,
        free_bits=0.0,
        prior="standard_normal",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if keras.backend.backend() not in _SUPPORTED_BACKENDS:
            raise ValueError(
                "keras_vae trains on the TensorFlow and JAX backends. Set "
                "KERAS_BACKEND=tensorflow or KERAS_BACKEND=jax before "
                f"importing keras. Received: backend={keras.backend.backend()!r}"
            )
        for name, value in (("encoder", encoder), ("decoder", decoder)):
            if not isinstance(value, keras.Model):
                raise ValueError(
                    f"Expected `{name}` to be a `keras.Model`. Build one with "
                    "the functional API or use `keras_vae.models.mlp_vae`. "
                    f"Received: {name}={value!r}"
                )
        if len(encoder.outputs or []) != 2:
            raise ValueError(
                "Expected `encoder` to have two outputs, `[z_mean, z_log_var]`. "
                f"Received: encoder with outputs={encoder.outputs}"
            )
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihoods.get(likelihood)
        self.prior = priors.get(prior)
        self._initial_beta = _validation.check_non_negative(beta, "beta")
        self.free_bits = _validation.check_non_negative(free_bits, "free_bits")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.beta_variable = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self._initial_beta),
            trainable=False,
            name="beta",
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_loss_tracker = keras.metrics.Mean(
            name="reconstruction_loss"
        )
        self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")
        self.elbo_tracker = keras.metrics.Mean(name="elbo")
        self.build(self.encoder.inputs[0].shape)

    # ------------------------------------------------------------------ shape
    @property
    def input_spec_shape(self):
        """Per-example input shape `(h, w, c)`, `(features,)`, ..."""
        return tuple(self.encoder.inputs[0].shape[1:])

    @property
    def latent_dim(self):
        """int. Size of the latent code."""
        return int(self.encoder.outputs[0].shape[-1])

    @property
    def beta(self):
        """float. Current KL weight (read from `beta_variable`)."""
        return float(ops.convert_to_numpy(self.beta_variable))

    @beta.setter
    def beta(self, value):
        value = _validation.check_non_negative(value, "beta")
        if keras.backend.backend() == "jax" and getattr(
            self, "_jax_state", None
        ):
            self.jax_state_sync()
        self.beta_variable.assign(value)

    def build(self, input_shape=None):
        if self.built:
            return
        params_shape = self.decoder.outputs[0].shape
        if not self.likelihood.built:
            self.likelihood.build(params_shape)
        if not self.prior.built:
            self.prior.build((None, self.latent_dim))
        self.built = True

    # ----------------------------------------------------------- the model
    def _posterior(self, x, training=False):
        z_mean, z_log_var = self.encoder(x, training=training)
        z_log_var = ops.clip(z_log_var, *LOG_VAR_BOUNDS)
        return z_mean, z_log_var

    def encode(self, x):
        """Posterior parameters `(z_mean, z_log_var)` of q(z | x).

        Args:
            x: array or tensor of shape `(batch, *input_shape)`.
        """
        x = self._maybe_validate(x)
        return self._posterior(x)

    def decode(self, z):
        """Mean of p(x | z), e.g. pixel probabilities for Bernoulli."""
        if isinstance(z, (np.ndarray, list)):
            z = _validation.as_float_array(z, "z", (self.latent_dim,))
        return self.likelihood.mean(self.decoder(z))

    def reconstruct(self, x):
        """Reconstruction of `x` through the posterior mean."""
        x = self._maybe_validate(x)
        z_mean, _ = self._posterior(x)
        return self.likelihood.mean(self.decoder(z_mean))

    def sample(self, num_samples, seed=None):
        """Draw `num_samples` decoded samples from the prior.

        Args:
            num_samples: int > 0.
            seed: int or None. The same int gives the same samples; None
                draws from the model's own `SeedGenerator`.
        """
        num_samples = _validation.check_positive_int(num_samples, "num_samples")
        noise_seed = self.seed_generator if seed is None else seed
        z = self.prior.sample(num_samples, self.latent_dim, seed=noise_seed)
        return self.decode(z)

    def call(self, inputs, training=False):
        z_mean, _ = self._posterior(inputs, training=training)
        return self.likelihood.mean(self.decoder(z_mean, training=training))

    def compute_output_spec(self, inputs, training=False):
        return keras.KerasTensor(
            (inputs.shape[0], *self.decoder.outputs[0].shape[1:]),
            dtype=self.compute_dtype,
        )

    # ------------------------------------------------------------ the ELBO
    def compute_terms(self, x, training=False, seed=None):
        """Per-example ELBO terms with one reparameterised sample.

        Returns a dict of tensors: `reconstruction` (batch,) the negative
        log-likelihood summed over data dimensions, `kl` (batch,) the KL to
        the prior, `kl_per_dim` (batch, latent or 1), `z_mean`,
        `z_log_var` and `z`.
        """
        z_mean, z_log_var = self._posterior(x, training=training)
        noise = keras.random.normal(
            ops.shape(z_mean),
            seed=self.seed_generator if seed is None else seed,
        )
        z = z_mean + ops.exp(0.5 * z_log_var) * noise
        params = self.decoder(z, training=training)
        reconstruction = self.likelihood.negative_log_prob(x, params)
        kl_per_dim = ops.cast(self.prior.kl(z_mean, z_log_var, z), "float32")
        return {
            "reconstruction": reconstruction,
            "kl": ops.sum(kl_per_dim, axis=-1),
            "kl_per_dim": kl_per_dim,
            "z_mean": z_mean,
            "z_log_var": z_log_var,
            "z": z,
        }

    def _training_loss(self, terms, x, training):
        reconstruction = ops.mean(terms["reconstruction"])
        if self.free_bits > 0.0:
            kl_per_dim = ops.mean(terms["kl_per_dim"], axis=0)
            kl = ops.sum(ops.maximum(kl_per_dim, self.free_bits))
        else:
            kl = ops.mean(terms["kl"])
        loss = reconstruction + ops.cast(self.beta_variable, "float32") * kl
        if training and self.losses:
            loss = loss + ops.cast(ops.sum(self.losses), "float32")
        return loss

    def _logged_values(self, loss, terms):
        reconstruction = terms["reconstruction"]
        kl = terms["kl"]
        return {
            "loss": loss,
            "reconstruction_loss": ops.mean(reconstruction),
            "kl_loss": ops.mean(kl),
            "elbo": -ops.mean(reconstruction + kl),
        }

    @property
    def metrics(self):
        return [
            self.loss_tracker,
            self.reconstruction_loss_tracker,
            self.kl_loss_tracker,
            self.elbo_tracker,
        ]

    def _unpack_x(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return x

    # ----------------------------------------------- train/test per backend
    def train_step(self, *args):
        if keras.backend.backend() == "jax":
            return self._jax_train_step(*args)
        return self._tf_train_step(*args)

    def test_step(self, *args):
        if keras.backend.backend() == "jax":
            return self._jax_test_step(*args)
        return self._tf_test_step(*args)

    def _update_metrics(self, values):
        for tracker in self.metrics:
            tracker.update_state(values[tracker.name])
        return {tracker.name: tracker.result() for tracker in self.metrics}

    def _tf_train_step(self, data):
        import tensorflow as tf

        x = self._unpack_x(data)
        with tf.GradientTape() as tape:
            terms = self.compute_terms(x, training=True)
            loss = self._training_loss(terms, x, training=True)
            scaled_loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        return self._update_metrics(self._logged_values(loss, terms))

    def _tf_test_step(self, data):
        x = self._unpack_x(data)
        terms = self.compute_terms(x, training=False)
        loss = self._training_loss(terms, x, training=False)
        return self._update_metrics(self._logged_values(loss, terms))

    def _stateless_terms(self, trainable, non_trainable, x, training):
        mapping = list(zip(self.trainable_variables, trainable)) + list(
            zip(self.non_trainable_variables, non_trainable)
        )
        with keras.StatelessScope(state_mapping=mapping) as scope:
            terms = self.compute_terms(x, training=training)
            loss = self._training_loss(terms, x, training=training)
        non_trainable = [
            scope.get_current_value(v) for v in self.non_trainable_variables
        ]
        return loss, (self._logged_values(loss, terms), non_trainable)

    def _stateless_update_metrics(self, metrics_variables, values):
        new_variables = []
        logs = {}
        start = 0
        for tracker in self.metrics:
            count = len(tracker.variables)
            tracker_variables = metrics_variables[start : start + count]
            start += count
            tracker_variables = tracker.stateless_update_state(
                tracker_variables, values[tracker.name]
            )
            logs[tracker.name] = tracker.stateless_result(tracker_variables)
            new_variables.extend(tracker_variables)
        return logs, new_variables

    def _jax_train_step(self, state, data):
        import jax

        (
            trainable,
            non_trainable,
            optimizer_variables,
            metrics_variables,
        ) = state
        x = self._unpack_x(data)
        gradient_fn = jax.value_and_grad(self._stateless_terms, has_aux=True)
        (_, (values, non_trainable)), gradients = gradient_fn(
            trainable, non_trainable, x, True
        )
        trainable, optimizer_variables = self.optimizer.stateless_apply(
            optimizer_variables, gradients, trainable
        )
        logs, metrics_variables = self._stateless_update_metrics(
            metrics_variables, values
        )
        return logs, (
            trainable,
            non_trainable,
            optimizer_variables,
            metrics_variables,
        )

    def _jax_test_step(self, state, data):
        trainable, non_trainable, metrics_variables = state
        x = self._unpack_x(data)
        _, (values, non_trainable) = self._stateless_terms(
            trainable, non_trainable, x, False
        )
        logs, metrics_variables = self._stateless_update_metrics(
            metrics_variables, values
        )
        return logs, (trainable, non_trainable, metrics_variables)

    # ------------------------------------------------- validated entry points
    def _maybe_validate(self, x, name="x"):
        if isinstance(x, (np.ndarray, list, tuple)) or np.isscalar(x):
            return _validation.as_float_array(
                x, name, self.input_spec_shape, self.likelihood
            )
        return x

    def _validate_fit_data(self, x, name):
        """Check numpy inputs fully and a dataset's spec and first batch."""
        if isinstance(x, (np.ndarray, list)):
            return _validation.as_float_array(
                x, name, self.input_spec_shape, self.likelihood
            )
        try:
            import tensorflow as tf
        except ImportError:  # pragma: no cover - tensorflow is a dependency
            return x
        if isinstance(x, tf.data.Dataset):
            for batch in x.take(1):
                first = self._unpack_x(batch)
                if isinstance(first, (tuple, list, dict)):
                    break
                _validation.as_float_array(
                    np.asarray(first), f"{name} (first batch)",
                    self.input_spec_shape, self.likelihood,
                )
        return x

    def fit(self, x=None, y=None, *args, validation_data=None, **kwargs):
        x = self._validate_fit_data(x, "x")
        if isinstance(validation_data, np.ndarray):
            validation_data = self._validate_fit_data(
                validation_data, "validation_data"
            )
        return super().fit(
            x, y, *args, validation_data=validation_data, **kwargs
        )

    def evaluate(self, x=None, y=None, *args, **kwargs):
        x = self._validate_fit_data(x, "x")
        return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        x = self._validate_fit_data(x, "x")
        return super().predict(x, *args, **kwargs)

    # --------------------------------------------------------------- config
    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "encoder": keras.saving.serialize_keras_object(self.encoder),
                "decoder": keras.saving.serialize_keras_object(self.decoder),
                "likelihood": keras.saving.serialize_keras_object(
                    self.likelihood
                ),
                "beta": self._initial_beta,
                "free_bits": self.free_bits,
                "prior": keras.saving.serialize_keras_object(self.prior),
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        # Deserializing a functional model consumes its config dict in place.
        config = copy.deepcopy(config)
        for key in ("encoder", "decoder", "likelihood", "prior"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
