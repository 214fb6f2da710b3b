"""Tiny trained models and data shared by the codec tests (`test_codec*.py`).

Each model is trained once per test process (a few seconds); the tests
only read them.
"""

import functools

import keras
import numpy as np

import keras_vae

#: Training data of each likelihood, from the 8x8 digits (pixels k / 16).
LIKELIHOODS = ("bernoulli", "discretized_logistic")


@functools.cache
def digits():
    """Binarised and 8-bit versions of the 8x8 digits, train and test."""
    (x, _), (x_test, _) = keras_vae.datasets.load("digits")
    return {
        "bernoulli": ((x > 0.5).astype("float32"), x_test > 0.5),
        "discretized_logistic": (
            (np.round(x * 255) / 255).astype("float32"),
            np.round(x_test * 255).astype(np.uint8),
        ),
    }


#: The data each likelihood codes (context likelihoods: their base's data).
DATA_OF = {"bernoulli": "bernoulli", "context_bernoulli": "bernoulli",
           "discretized_logistic": "discretized_logistic",
           "context_discretized_logistic": "discretized_logistic"}


@functools.cache
def trained(likelihood, seed=0, epochs=3):
    """An MLP VAE (8x8x1, latent 4, 32 hidden units) trained on the digits."""
    keras.utils.set_random_seed(seed)
    model = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(32,),
                                     likelihood=likelihood, seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(digits()[DATA_OF[likelihood]][0], epochs=epochs, batch_size=64,
              verbose=0)
    return model
