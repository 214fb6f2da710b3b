"""A learned mixture-of-Gaussians prior."""

import keras
from keras import ops

from keras_vae.priors.base import Prior, as_float32, gaussian_log_density

# Same range as the posterior's log-variance: the density stays finite.
_LOG_VAR_BOUNDS = (-10.0, 5.0)


@keras.saving.register_keras_serializable(package="keras_vae")
class MixtureOfGaussians(Prior):
    """Learned mixture of diagonal Gaussians, p(z) = sum_k pi_k N(mu_k, s_k).

    The means, log-variances and mixture logits are trainable weights of the
    model, learned with the ELBO. The KL from the posterior has no closed
    form, so `kl` returns the single-sample Monte Carlo estimate
    `log q(z | x) - log p(z)` at the reparameterised sample `z`, with shape
    `(batch, 1)`. `VAE.compute_terms` uses it in both `train_step` and
    `test_step`, so the training loss and the reported ELBO share one
    estimator (unbiased for the ELBO; noisier than the closed form).

    Args:
        num_components: int > 0. Number of mixture components.
        initial_spread: float > 0. Standard deviation of the random initial
            component means; spread-out means keep components apart.
        seed: int or None. Seed of the initial means.

    Example:

    >>> import keras_vae
    >>> model = keras_vae.models.mlp_vae(
    ...     (8, 8, 1), latent_dim=2, hidden_units=(16,),
    ...     prior=keras_vae.priors.MixtureOfGaussians(num_components=5))
    >>> tuple(model.prior.means.shape)
    (5, 2)
    """

    def __init__(self, num_components=10, initial_spread=1.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if (
            isinstance(num_components, bool)
            or not isinstance(num_components, int)
            or num_components <= 0
        ):
            raise ValueError(
                "Expected `num_components` to be a positive int. "
                f"Received: num_components={num_components!r}"
            )
        try:
            spread_ok = float(initial_spread) > 0
        except (TypeError, ValueError):
            spread_ok = False
        if not spread_ok:
            raise ValueError(
                "Expected `initial_spread` > 0. "
                f"Received: initial_spread={initial_spread!r}"
            )
        self.num_components = num_components
        self.initial_spread = float(initial_spread)
        self.seed = seed
        self.means = None

    def build(self, input_shape):
        latent_dim = int(input_shape[-1])
        self.means = self.add_weight(
            shape=(self.num_components, latent_dim),
            initializer=keras.initializers.RandomNormal(
                stddev=self.initial_spread, seed=self.seed
            ),
            name="means",
        )
        self.log_vars = self.add_weight(
            shape=(self.num_components, latent_dim),
            initializer="zeros",
            name="log_vars",
        )
        self.logits = self.add_weight(
            shape=(self.num_components,), initializer="zeros", name="logits"
        )
        self.built = True

    def _parameters(self):
        means, log_vars, logits = as_float32(self.means, self.log_vars,
                                             self.logits)
        log_vars = ops.clip(log_vars, *_LOG_VAR_BOUNDS)
        return means, log_vars, ops.log_softmax(logits)

    def log_prob(self, z):
        (z,) = as_float32(z)
        means, log_vars, log_weights = self._parameters()
        # (batch, 1, d) against (K, d) -> (batch, K) log-densities.
        per_component = ops.sum(
            gaussian_log_density(z[:, None, :], means[None], log_vars[None]),
            axis=-1,
        )
        return ops.logsumexp(per_component + log_weights[None], axis=-1)

    def sample(self, num_samples, latent_dim, seed=None):
        if isinstance(seed, int):
            seed = keras.random.SeedGenerator(seed)
        means, log_vars, log_weights = self._parameters()
        components = keras.random.categorical(
            log_weights[None], num_samples, seed=seed
        )[0]
        noise = keras.random.normal((num_samples, latent_dim), seed=seed)
        return (
            ops.take(means, components, axis=0)
            + ops.exp(0.5 * ops.take(log_vars, components, axis=0)) * noise
        )

    def mixture_components(self, latent_dim=None):
        """Means, standard deviations and weights as numpy (see `Prior`)."""
        means, log_vars, log_weights = self._parameters()
        return {
            "means": ops.convert_to_numpy(means).astype("float32"),
            "scales": ops.convert_to_numpy(ops.exp(0.5 * log_vars)).astype("float32"),
            "weights": ops.convert_to_numpy(ops.exp(log_weights)).astype("float32"),
        }

    def kl(self, z_mean, z_log_var, z):
        log_q = ops.sum(gaussian_log_density(z, z_mean, z_log_var), axis=-1)
        return ops.expand_dims(log_q - self.log_prob(z), -1)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_components": self.num_components,
                "initial_spread": self.initial_spread,
                "seed": self.seed,
            }
        )
        return config

