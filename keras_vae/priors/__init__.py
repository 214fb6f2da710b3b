"""Latent priors p(z), resolvable by name with `get`."""

import keras

from keras_vae.priors.base import Prior, gaussian_log_density
from keras_vae.priors.mixture import MixtureOfGaussians
from keras_vae.priors.standard_normal import StandardNormal

ALL_PRIORS = {
    "standard_normal": StandardNormal,
    "normal": StandardNormal,
    "mixture": MixtureOfGaussians,
    "mixture_of_gaussians": MixtureOfGaussians,
}

_CLASSES = {cls.__name__: cls for cls in (StandardNormal, MixtureOfGaussians)}


def get(identifier):
    """Resolve a prior from a name, a config dict or an instance.

    Args:
        identifier: str, dict or `Prior`. `"standard_normal"`,
            `"mixture"`, a serialized prior (`{"class_name":
            "MixtureOfGaussians", "config": {"num_components": 5}}`), or an
            instance.
    """
    if isinstance(identifier, Prior):
        return identifier
    if identifier is None:
        return StandardNormal()
    if isinstance(identifier, dict):
        # A short config names the class without its package prefix.
        cls = _CLASSES.get(identifier.get("class_name"))
        if cls is not None:
            return cls.from_config(identifier.get("config") or {})
        return keras.saving.deserialize_keras_object(identifier)
    if isinstance(identifier, str) and identifier.lower() in ALL_PRIORS:
        return ALL_PRIORS[identifier.lower()]()
    raise ValueError(
        f"Unknown prior. Expected one of {sorted(ALL_PRIORS)} or a "
        f"`keras_vae.priors.Prior` instance. Received: prior={identifier!r}"
    )


__all__ = ["MixtureOfGaussians", "Prior", "StandardNormal", "gaussian_log_density", "get"]
