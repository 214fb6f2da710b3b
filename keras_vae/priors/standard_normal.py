"""The standard normal prior N(0, I)."""

import keras
import numpy as np

from keras_vae.priors.base import Prior, as_float32, gaussian_log_density


@keras.saving.register_keras_serializable(package="keras_vae")
class StandardNormal(Prior):
    """Standard normal prior with the closed-form Gaussian KL.

    Example:

    >>> import keras_vae
    >>> prior = keras_vae.priors.StandardNormal()
    """

    def log_prob(self, z):
        (z,) = as_float32(z)
        zeros = keras.ops.zeros_like(z)
        return keras.ops.sum(gaussian_log_density(z, zeros, zeros), axis=-1)

    def sample(self, num_samples, latent_dim, seed=None):
        return keras.random.normal((num_samples, latent_dim), seed=seed)

    def mixture_components(self, latent_dim):
        """N(0, I) as a one-component mixture (see `Prior`)."""
        return {
            "means": np.zeros((1, latent_dim), "float32"),
            "scales": np.ones((1, latent_dim), "float32"),
            "weights": np.ones((1,), "float32"),
        }

    def kl(self, z_mean, z_log_var, z=None):
        z_mean, z_log_var = as_float32(z_mean, z_log_var)
        return 0.5 * (
            keras.ops.exp(z_log_var)
            + keras.ops.square(z_mean)
            - 1.0
            - z_log_var
        )
