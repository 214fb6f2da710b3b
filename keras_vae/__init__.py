"""keras-vae: variational autoencoders for Keras 3, fast to train and deploy."""

from keras_vae import (
    callbacks,
    datasets,
    export,
    files,
    likelihoods,
    metrics,
    models,
    plotting,
    priors,
    transfer,
)
from keras_vae.cvae import CVAE
from keras_vae.vae import VAE

__version__ = "0.1.0"

__all__ = [
    "CVAE",
    "VAE",
    "callbacks",
    "datasets",
    "export",
    "files",
    "likelihoods",
    "metrics",
    "models",
    "plotting",
    "priors",
    "transfer",
]
