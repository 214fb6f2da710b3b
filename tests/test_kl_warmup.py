"""KL warm-up, beta as a variable and free bits."""

import json
import os

import keras
import numpy as np
import pytest
from backend_runner import run_with_backend

import keras_vae
from keras_vae import metrics
from keras_vae.callbacks import KLWarmup


def test_linear_schedule_rises_then_stays():
    warmup = KLWarmup(warmup=4, max_beta=2.0)
    assert [warmup.beta_at(i) for i in range(6)] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0]
    shifted = KLWarmup(warmup=2, max_beta=1.0, start_beta=0.5)
    assert [shifted.beta_at(i) for i in range(3)] == [0.5, 0.75, 1.0]


def test_cyclical_schedule_restarts_every_cycle():
    warmup = KLWarmup(warmup=4, schedule="cyclical", ratio=0.5, max_beta=1.0)
    assert [warmup.beta_at(i) for i in range(9)] == [
        0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0, 0.0]


def warmup_history(unit):
    """Fit 3 full-batch epochs under a warm-up; return the logged history.

    One batch per epoch, so each epoch's logged `loss` is that of a single
    step taken at the scheduled beta. Run on TensorFlow here and on JAX in
    a subprocess.
    """
    (x, _), _ = keras_vae.datasets.load("digits")
    x = x[:64]
    keras.utils.set_random_seed(0)
    model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(8,), beta=2.0, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    callback = KLWarmup(warmup=2, unit=unit)
    history = model.fit(x, epochs=3, batch_size=64, verbose=0, callbacks=[callback])
    return {
        "history": history.history,
        "betas": callback.history,
        "final_beta": model.beta,
    }


def check_warmup_history(result):
    history = result["history"]
    assert result["betas"] == [0.0, 1.0, 2.0]
    assert result["final_beta"] == 2.0
    for epoch, beta in enumerate(result["betas"]):
        recon = history["reconstruction_loss"][epoch]
        kl = history["kl_loss"][epoch]
        # The step used the scheduled beta ...
        assert history["loss"][epoch] == pytest.approx(recon + beta * kl, rel=1e-5)
        # ... and the reported ELBO never depends on it.
        assert history["elbo"][epoch] == pytest.approx(-(recon + kl), rel=1e-5)


@pytest.mark.parametrize("unit", ["epoch", "step"])
def test_warmup_sets_the_beta_each_train_step_uses(unit):
    check_warmup_history(warmup_history(unit))


def test_warmup_sets_the_beta_each_train_step_uses_on_jax():
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    out = run_with_backend(
        f"""
        import json, sys
        sys.path.insert(0, {tests_dir!r})
        import keras
        assert keras.backend.backend() == "jax"
        from test_kl_warmup import warmup_history
        print(json.dumps([warmup_history("epoch"), warmup_history("step")]))
        """
    )
    for result in json.loads(out.strip().splitlines()[-1]):
        check_warmup_history(result)


def test_free_bits_change_the_training_loss_only(digits):
    (x, _), _ = digits
    x = x[:64]
    model = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(8,), free_bits=2.0, seed=0)
    model.compile(optimizer="adam")
    logs = model.evaluate(x, batch_size=64, verbose=0, return_dict=True)
    # An untrained encoder has a KL far below 2 nats in every dimension, so
    # the training KL is the floor: 4 dimensions x 2 nats.
    assert logs["kl_loss"] < 4.0
    assert logs["loss"] == pytest.approx(logs["reconstruction_loss"] + 8.0, rel=1e-5)
    assert logs["elbo"] == pytest.approx(-(logs["reconstruction_loss"] + logs["kl_loss"]),
                                         rel=1e-5)


def _active_units_after(x, x_test, free_bits, callbacks):
    keras.utils.set_random_seed(0)
    model = keras_vae.models.mlp_vae(
        (8, 8, 1), 8, hidden_units=(64,), beta=4.0, free_bits=free_bits, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(x, epochs=10, batch_size=64, verbose=0, callbacks=callbacks)
    return metrics.active_units(model, x_test)


def test_warmup_and_free_bits_keep_more_active_units_than_beta_4(digits):
    """beta = 4 from the start collapses more of the posterior."""
    (x, _), (x_test, _) = digits
    collapsed = _active_units_after(x, x_test, 0.0, [])
    kept = _active_units_after(
        x, x_test, 0.5, [KLWarmup(warmup=5, unit="epoch")])
    # Measured: 0 of 8 units with beta = 4, 8 of 8 with warm-up + free bits.
    assert collapsed <= 2
    assert kept >= collapsed + 4


def test_warmup_leaves_beta_at_the_model_value_for_a_second_fit(digits):
    (x, _), _ = digits
    model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(8,), beta=3.0)
    model.compile(optimizer="adam")
    callback = KLWarmup(warmup=100, unit="step")
    model.fit(x[:128], epochs=1, batch_size=64, verbose=0, callbacks=[callback])
    assert callback.history == pytest.approx([0.0, 0.03])
    # The step counter continues across fits, towards the model's beta.
    model.fit(x[:128], epochs=1, batch_size=64, verbose=0, callbacks=[callback])
    assert callback.history[2:] == pytest.approx([0.06, 0.09])
    assert model.beta == pytest.approx(0.09)
    assert callback.get_config()["max_beta"] is None
    assert KLWarmup.from_config(callback.get_config()).get_config() == callback.get_config()


def test_beta_setter_validates():
    model = keras_vae.models.mlp_vae((4,), 2, hidden_units=(4,))
    model.beta = 0.5
    assert model.beta == 0.5
    with pytest.raises(ValueError, match="beta=-1"):
        model.beta = -1


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"warmup": 0}, "warmup=0"),
        ({"warmup": 2.5}, "warmup=2.5"),
        ({"warmup": 2, "schedule": "sigmoid"}, "schedule='sigmoid'"),
        ({"warmup": 2, "unit": "batch"}, "unit='batch'"),
        ({"warmup": 2, "max_beta": -1}, "max_beta=-1"),
        ({"warmup": 2, "start_beta": "a"}, "start_beta='a'"),
        ({"warmup": 2, "ratio": 0}, "ratio=0"),
    ],
)
def test_warmup_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KLWarmup(**kwargs)


def test_warmup_refuses_a_model_without_beta():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="beta_variable"):
        model.fit(np.zeros((4, 2)), np.zeros((4, 1)), verbose=0,
                  callbacks=[KLWarmup(warmup=2)])
