"""Shared checks that every model of the family must pass.

Each model's test calls `check_model(build_fn, x)` and only adds what is
special about it.
"""

import os

import keras
import numpy as np


def check_config_round_trip(model):
    config = model.get_config()
    clone = model.__class__.from_config(config)
    assert clone.get_config() == config
    assert clone.count_params() == model.count_params()


def check_one_fit_step_lowers_nothing_to_nan(model, x):
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(x, epochs=1, batch_size=len(x), verbose=0)
    for name in ("loss", "reconstruction_loss", "kl_loss", "elbo"):
        assert np.isfinite(history.history[name][0]), name


def check_save_load_exact(model, x, directory):
    path = os.path.join(directory, "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    expected = np.asarray(model.predict(x, verbose=0))
    actual = np.asarray(restored.predict(x, verbose=0))
    np.testing.assert_array_equal(actual, expected)
    for a, b in zip(model.get_weights(), restored.get_weights()):
        np.testing.assert_array_equal(a, b)
    return restored


def check_model(build_fn, x, directory):
    """Config round-trip, one fit step, exact `.keras` save/load."""
    model = build_fn()
    check_config_round_trip(model)
    check_one_fit_step_lowers_nothing_to_nan(model, x)
    reconstruction = np.asarray(model.reconstruct(x))
    assert reconstruction.shape == x.shape
    assert np.isfinite(reconstruction).all()
    check_save_load_exact(model, x, directory)
    return model
