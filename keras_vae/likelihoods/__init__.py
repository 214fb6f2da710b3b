"""Observation models p(x | z), resolvable by name with `get`."""

import keras

from keras_vae.likelihoods.base import Likelihood
from keras_vae.likelihoods.bernoulli import Bernoulli
from keras_vae.likelihoods.context import (
    ContextBernoulli,
    ContextDiscretizedLogistic,
    ContextLikelihood,
)
from keras_vae.likelihoods.discretized_logistic import DiscretizedLogistic
from keras_vae.likelihoods.gaussian import Gaussian

ALL_LIKELIHOODS = {
    "bernoulli": lambda: Bernoulli(),
    "context_bernoulli": lambda: ContextBernoulli(),
    "context_discretized_logistic": lambda: ContextDiscretizedLogistic(),
    "discretized_logistic": lambda: DiscretizedLogistic(),
    "gaussian": lambda: Gaussian(log_scale="fixed"),
    "gaussian_global": lambda: Gaussian(log_scale="global"),
    "gaussian_per_pixel": lambda: Gaussian(log_scale="per_pixel"),
}


def get(identifier):
    """Resolve a likelihood from a name, a config dict or an instance.

    Args:
        identifier: str, dict or `Likelihood`. One of `"bernoulli"`,
            `"context_bernoulli"` (binary images, each pixel also sees its
            already-seen neighbours), `"context_discretized_logistic"`
            (8-bit images, likewise),
            `"discretized_logistic"` (8-bit pixels k / 255),
            `"gaussian"` (unit scale), `"gaussian_global"` (learned global
            log-scale), `"gaussian_per_pixel"` (learned per-dimension
            log-scale), a serialized likelihood, or an instance.

    Example:

    >>> import keras_vae
    >>> keras_vae.likelihoods.get("bernoulli")
    <Bernoulli name=bernoulli, built=False>
    """
    if isinstance(identifier, Likelihood):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    if isinstance(identifier, str) and identifier.lower() in ALL_LIKELIHOODS:
        return ALL_LIKELIHOODS[identifier.lower()]()
    raise ValueError(
        "Unknown likelihood. Expected one of "
        f"{sorted(ALL_LIKELIHOODS)} or a `keras_vae.likelihoods.Likelihood` "
        f"instance. Received: likelihood={identifier!r}"
    )


__all__ = ["Likelihood", "Bernoulli", "ContextBernoulli",
           "ContextDiscretizedLogistic", "ContextLikelihood", "DiscretizedLogistic", "Gaussian", "get"]
