"""Test configuration: TensorFlow is the reference backend of the main process.

JAX runs in subprocesses (`run_with_backend`), because Keras picks its
backend once, at import.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import pytest


@pytest.fixture(scope="session")
def mnist5k():
    import keras_vae

    return keras_vae.datasets.load("mnist5k")


@pytest.fixture(scope="session")
def digits():
    import keras_vae

    return keras_vae.datasets.load("digits")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
