"""Base class of latent priors p(z)."""

import math

import keras


def gaussian_log_density(z, mean, log_var):
    """Elementwise log N(z; mean, exp(log_var)), same shape as `z`."""
    return -0.5 * (
        math.log(2.0 * math.pi)
        + log_var
        + keras.ops.square(z - mean) * keras.ops.exp(-log_var)
    )


class Prior(keras.layers.Layer):
    """A prior p(z) over the latent code.

    Subclasses implement `log_prob(z)` (per example, summed over latent
    dimensions), `sample(num_samples, latent_dim, seed)` and `kl(z_mean,
    z_log_var, z)`, the KL divergence from the diagonal Gaussian posterior
    to the prior, returned per example and per latent dimension with shape
    `(batch, latent_dim)` when it factorises, else `(batch, 1)`.
    """

    def log_prob(self, z):
        raise NotImplementedError

    def sample(self, num_samples, latent_dim, seed=None):
        raise NotImplementedError

    def kl(self, z_mean, z_log_var, z):
        raise NotImplementedError

    def call(self, z):
        return self.log_prob(z)
