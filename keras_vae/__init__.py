"""keras-vae: variational autoencoders for Keras 3, fast to train and deploy."""

from keras_vae import datasets, likelihoods, models, plotting, priors
from keras_vae.vae import VAE

__version__ = "0.1.0"

__all__ = [
    "VAE",
    "datasets",
    "likelihoods",
    "models",
    "plotting",
    "priors",
]
