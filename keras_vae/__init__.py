"""keras-vae: variational autoencoders for Keras 3, fast to train and deploy."""

from keras_vae import (
    callbacks,
    codec,
    datasets,
    export,
    files,
    likelihoods,
    metrics,
    models,
    plotting,
    priors,
    sample_quality,
    transfer,
)
from keras_vae.cvae import CVAE
from keras_vae.vae import VAE

__version__ = "0.1.0"

__all__ = [
    "CVAE",
    "VAE",
    "callbacks",
    "codec",
    "datasets",
    "export",
    "files",
    "likelihoods",
    "metrics",
    "models",
    "plotting",
    "priors",
    "sample_quality",
    "search",
    "transfer",
]


def __getattr__(name):
    # `search` imports KerasTuner (about a second), so it loads on first use.
    if name == "search":
        import importlib

        return importlib.import_module("keras_vae.search")
    raise AttributeError(f"module 'keras_vae' has no attribute {name!r}")
