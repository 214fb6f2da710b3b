"""A `keras_vae.VAE` as the network the codec core codes with."""

import hashlib
import json

import keras
import numpy as np


def model_fingerprint(model):
    """SHA-256 of what the codec depends on: architecture and weights.

    Hashes the configs of the encoder, decoder, likelihood and prior and
    every one of their weights (name, shape, dtype and bytes), so any change
    of architecture or of a single weight gives another fingerprint, while
    training state (optimizer, metrics, KL weight, seed) does not count.

    Args:
        model: `keras_vae.VAE`.

    Returns:
        bytes. 32 bytes.

    Example:

    >>> import keras_vae
    >>> model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(8,))
    >>> len(keras_vae.codec.model_fingerprint(model))
    32
    """
    digest = hashlib.sha256()
    for part in (model.encoder, model.decoder, model.likelihood, model.prior):
        config = keras.saving.serialize_keras_object(part)
        digest.update(json.dumps(config, sort_keys=True, default=str).encode())
        for variable in part.weights:
            value = np.ascontiguousarray(keras.ops.convert_to_numpy(variable))
            digest.update(f"{variable.path}:{value.shape}:{value.dtype}".encode())
            digest.update(value.tobytes())
    return digest.digest()


def _is_standard_normal(prior, latent_dim):
    try:
        components = prior.mixture_components(latent_dim)
    except NotImplementedError:
        return False
    return (len(components["weights"]) == 1
            and not np.any(components["means"])
            and np.all(components["scales"] == 1.0))


class KerasNetwork:
    """The network interface of `keras_vae.codec.core` for a Keras VAE.

    One encoder call per `posterior` batch and one decoder call per
    `decode` batch, through the model's public API (`posterior`,
    `decoder_params`, `likelihood.export_outputs`), so the outputs are
    those of the exported `decode` signature too.

    Args:
        model: `keras_vae.VAE`. An unconditional model.
    """

    def __init__(self, model):
        from keras_vae.vae import VAE

        if not isinstance(model, VAE):
            raise ValueError(
                "Expected a `keras_vae.VAE` (or a path to a `.keras` file in "
                f"the command line). Received: model={model!r}"
            )
        if model.is_conditional:
            raise ValueError(
                "The codec codes images without labels; a conditional model "
                "(keras_vae.CVAE) also needs the label of every image. Use an "
                f"unconditional model. Received: model of class "
                f"{type(model).__name__}"
            )
        self.model = model
        self.kind = f"keras-{keras.backend.backend()}"
        self.likelihood = type(model.likelihood).__name__.lower()
        levels = model.likelihood.get_config().get("num_levels")
        self.num_levels = int(levels) if levels else None
        # The discretised logistic's uniform mixture weight (0 if none).
        self.uniform_mass = float(
            getattr(model.likelihood, "uniform_mass", 0.0) or 0.0)
        self.data_shape = tuple(model.input_spec_shape)
        self.latent_dim = model.latent_dim
        self.standard_normal_prior = _is_standard_normal(
            model.prior, model.latent_dim)
        self.fingerprint = model_fingerprint(model)
        # A likelihood whose pixels see their neighbours: the codec runs
        # its head in numpy, the same on every runtime.
        head_weights = getattr(model.likelihood, "head_weights", None)
        self.context_head = head_weights() if callable(head_weights) else None

    def posterior(self, x):
        z_mean, z_log_var = self.model.posterior(np.asarray(x, np.float32))
        return (keras.ops.convert_to_numpy(z_mean).astype(np.float32),
                keras.ops.convert_to_numpy(z_log_var).astype(np.float32))

    def decode(self, z):
        params = self.model.decoder_params(np.asarray(z, np.float32))
        outputs = self.model.likelihood.export_outputs(params)
        return {name: keras.ops.convert_to_numpy(value).astype(np.float32)
                for name, value in outputs.items()}
