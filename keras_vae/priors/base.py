"""Base class of latent priors p(z)."""

import math

import keras


def as_float32(*tensors):
    """The tensors cast to float32.

    Priors compute in float32 whatever the layers' compute dtype: under
    `mixed_bfloat16` the closed-form KL `exp(v) - 1 - v` cancels to
    negative values in bfloat16, and a float32 prior's parameters cannot
    be combined with bfloat16 codes.
    """
    return tuple(keras.ops.cast(tensor, "float32") for tensor in tensors)


def gaussian_log_density(z, mean, log_var):
    """Elementwise log N(z; mean, exp(log_var)), same shape as `z`.

    Computed in float32 (see `as_float32`).
    """
    z, mean, log_var = as_float32(z, mean, log_var)
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
    `(batch, latent_dim)` when it factorises, else `(batch, 1)`. Results
    are float32 whatever the dtype of the inputs (mixed precision).
    """

    def log_prob(self, z):
        raise NotImplementedError

    def sample(self, num_samples, latent_dim, seed=None):
        raise NotImplementedError

    def kl(self, z_mean, z_log_var, z):
        raise NotImplementedError

    def mixture_components(self, latent_dim):
        """p(z) as a mixture of diagonal Gaussians, as numpy arrays.

        Lets code outside Keras sample from the prior: `keras_vae.export`
        stores the components in the `.tflite` file, and the device runtime
        draws z from them without TensorFlow.

        Args:
            latent_dim: int. Size of z.

        Returns:
            dict with float32 arrays `"means"` `(K, latent_dim)`, `"scales"`
            (standard deviations) `(K, latent_dim)` and `"weights"` `(K,)`
            summing to 1.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not describe itself as a Gaussian "
            "mixture; implement `mixture_components` to sample from it "
            "outside Keras."
        )

    def call(self, z):
        return self.log_prob(z)
