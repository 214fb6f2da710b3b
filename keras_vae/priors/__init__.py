"""Latent priors p(z), resolvable by name with `get`."""

import keras

from keras_vae.priors.base import Prior, gaussian_log_density
from keras_vae.priors.standard_normal import StandardNormal

ALL_PRIORS = {
    "standard_normal": StandardNormal,
    "normal": StandardNormal,
}


def get(identifier):
    """Resolve a prior from a name, a config dict or an instance.

    Args:
        identifier: str, dict or `Prior`. `"standard_normal"`, a serialized
            prior, or an instance.
    """
    if isinstance(identifier, Prior):
        return identifier
    if identifier is None:
        return StandardNormal()
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    if isinstance(identifier, str) and identifier.lower() in ALL_PRIORS:
        return ALL_PRIORS[identifier.lower()]()
    raise ValueError(
        f"Unknown prior. Expected one of {sorted(ALL_PRIORS)} or a "
        f"`keras_vae.priors.Prior` instance. Received: prior={identifier!r}"
    )


__all__ = ["Prior", "StandardNormal", "gaussian_log_density", "get"]
