"""Every keras_vae object keeps the Keras contract.

The shared test base (`contract_checks.py`) runs the same checks on every
public class, as keras-hub's `TestCase` does for its layers and models:

- configs: every registered layer, likelihood, prior, callback and model
  goes through `get_config` -> JSON -> `from_config` unchanged and the
  clone behaves like the original;
- `.keras` files: one tiny VAE per likelihood, a CVAE with the mixture
  prior and a `Distiller` load back with the same predictions, weights
  and ELBO terms;
- mixed precision: the same models train a few steps with finite metrics
  under `mixed_bfloat16` on TensorFlow and on JAX (one subprocess), and
  under `mixed_float16` with a `LossScaleOptimizer` the weights move as
  far as in float32 (the loss is scaled) on both backends.

Two meta-tests keep the list whole: a registered class needs a factory
here or a case in `test_compression_contract.py` (the schedules, hooks,
quantizer layers and callbacks of `keras_vae.compression`), and a public
Keras layer, callback, metric or schedule class must be registered unless
`NOT_SERIALIZABLE` says why not. No new class skips the contract.
"""

import importlib
import inspect
import json
import os
import pkgutil

import contract_checks as checks
import keras
import numpy as np
import pytest
from backend_runner import run_with_backend
from test_compression_contract import CASES as COMPRESSION_CASES

import keras_vae
from keras_vae import callbacks, likelihoods, priors
from keras_vae.compression import Distiller, PruningSchedule

TESTS = os.path.dirname(os.path.abspath(__file__))
_RNG = np.random.default_rng(0)
_X = checks.tiny_data(4)[0]
_Z = _RNG.normal(size=(4, checks.LATENT)).astype("float32")


def _built(layer, shape):
    if not layer.built:
        layer.build(shape)
    return layer


def _nll(likelihood, params_shape=checks.SHAPE):
    params = np.random.default_rng(1).normal(size=(4, *params_shape))
    params = params.astype("float32")
    if getattr(likelihood, "from_logits", True) is False:  # probabilities
        params = 1.0 / (1.0 + np.exp(-params))
    _built(likelihood, (None, *params_shape))
    return likelihood.negative_log_prob(_X, params)


def _model_summary(model):
    return [model.count_params(), model.latent_dim, model.beta,
            model.free_bits, model.num_classes,
            type(model.likelihood).__name__, type(model.prior).__name__]


# One small instance per registered class, away from the defaults so that
# a dropped argument shows, and a probe of its behaviour that the clone
# must reproduce exactly.
FACTORIES = {
    "Bernoulli": (lambda: likelihoods.Bernoulli(from_logits=False), _nll),
    "Gaussian": (
        lambda: likelihoods.Gaussian("per_pixel", initial_log_scale=-1.0),
        _nll),
    "ContextBernoulli": (
        lambda: likelihoods.ContextBernoulli(radius=1, hidden_units=4,
                                             features=2),
        lambda obj: _nll(obj, (*checks.SHAPE[:-1], 2))),
    "ContextDiscretizedLogistic": (
        lambda: likelihoods.ContextDiscretizedLogistic(
            num_levels=16, radius=1, hidden_units=4, features=3),
        lambda obj: _nll(obj, (*checks.SHAPE[:-1], 3))),
    "DiscretizedLogistic": (
        lambda: likelihoods.DiscretizedLogistic(num_levels=16),
        lambda obj: _nll(obj, (*checks.SHAPE[:-1], 2))),
    "StandardNormal": (
        priors.StandardNormal,
        lambda obj: obj.log_prob(_Z)),
    "MixtureOfGaussians": (
        lambda: priors.MixtureOfGaussians(3, initial_spread=0.5, seed=1),
        lambda obj: _built(obj, (None, checks.LATENT)).log_prob(_Z)),
    "KLWarmup": (
        lambda: callbacks.KLWarmup(4, schedule="cyclical", unit="epoch",
                                   max_beta=2.0, start_beta=0.1, ratio=0.5),
        lambda obj: [obj.beta_at(step) for step in range(9)]),
    "StopOnNonFinite": (
        lambda: callbacks.StopOnNonFinite(restore_optimizer=False,
                                          every_step=False),
        lambda obj: [obj.restore_optimizer, obj.every_step,
                     obj.needs_every_batch]),
    "AtomicBackupAndRestore": (
        lambda: callbacks.AtomicBackupAndRestore(
            "backup_folder", save_freq=3, delete_checkpoint=False),
        lambda obj: [obj.backup_dir, obj.save_freq, obj.delete_checkpoint]),
    "VAE": (
        lambda: keras_vae.models.mlp_vae(
            checks.SHAPE, checks.LATENT, hidden_units=checks.HIDDEN, seed=3,
            beta=0.5, free_bits=0.1, likelihood="gaussian_global",
            prior="mixture"),
        _model_summary),
    "CVAE": (
        lambda: keras_vae.models.mlp_cvae(
            checks.SHAPE, checks.NUM_CLASSES, checks.LATENT,
            hidden_units=checks.HIDDEN, seed=3, beta=2.0),
        _model_summary),
    "Distiller": (
        lambda: Distiller(
            keras_vae.models.mlp_vae(checks.SHAPE, 4, hidden_units=(16,),
                                     name="teacher"),
            keras_vae.models.mlp_vae(checks.SHAPE, checks.LATENT,
                                     hidden_units=checks.HIDDEN,
                                     name="student"),
            posterior_weight=0.5, output_weight=2.0, elbo_weight=0.9,
            temperature=1.5, generated_fraction=0.25,
            output_code="reconstruction", seed=4),
        lambda obj: [obj.count_params(), obj.teacher.trainable,
                     obj.student.latent_dim, len(obj.posterior_map)]),
}

#: Public classes that are deliberately not serializable, and why.
NOT_SERIALIZABLE = {
    # Holds the evaluation arrays and the model it evaluates: a run-time
    # recorder, like Keras' own `History`, not something to save.
    "LearningCurve",
}


# ----------------------------------------------------------- completeness
def test_every_registered_class_has_a_contract_check():
    registered = checks.registered_classes()
    covered = set(FACTORIES) | set(COMPRESSION_CASES)
    missing = sorted(set(registered) - covered)
    assert not missing, (
        f"Registered keras_vae classes without a contract check: {missing}. "
        "Add a factory to FACTORIES in tests/test_contract.py (or to CASES "
        "in tests/test_compression_contract.py for keras_vae.compression).")
    unknown = sorted(covered - set(registered))
    assert not unknown, f"Factories for classes not registered: {unknown}"


def _public_modules():
    yield keras_vae
    for info in pkgutil.walk_packages(keras_vae.__path__, "keras_vae."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            yield importlib.import_module(info.name)


def test_every_public_keras_class_is_registered():
    kinds = (keras.layers.Layer, keras.callbacks.Callback, PruningSchedule,
             keras.metrics.Metric)
    registered = set(checks.registered_classes().values())
    seen, unregistered = set(), set()
    for module in _public_modules():
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if (cls.__module__ != module.__name__ or name.startswith("_")
                    or not issubclass(cls, kinds)):
                continue
            seen.add(cls)
            # A base class (`Likelihood`, `Prior`, ...) is abstract; its
            # subclasses carry the contract.
            if cls not in registered and not cls.__subclasses__():
                unregistered.add(name)
    # The walk reached every module that defines a registered class.
    assert registered <= seen, sorted(c.__name__ for c in registered - seen)
    unregistered -= NOT_SERIALIZABLE
    assert not unregistered, (
        f"Public Keras classes that are not registered: "
        f"{sorted(unregistered)}. Decorate them with "
        "`keras.saving.register_keras_serializable(package='keras_vae')`.")


# ----------------------------------------------------------------- configs
def _same(a, b):
    a = keras.ops.convert_to_numpy(a) if keras.ops.is_tensor(a) else a
    b = keras.ops.convert_to_numpy(b) if keras.ops.is_tensor(b) else b
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_config_round_trips_through_json_and_the_clone_behaves_alike(name):
    factory, probe = FACTORIES[name]
    original = factory()
    clone, revived = checks.check_json_config_round_trip(original)
    expected = probe(original)
    _same(probe(clone), expected)
    _same(probe(revived), expected)


def test_config_round_trip_catches_a_dropped_argument():
    # The check itself can fail: a likelihood that forgets an argument in
    # its config does not come back the same.
    class Forgetful(likelihoods.DiscretizedLogistic):
        def get_config(self):
            config = super().get_config()
            config.pop("num_levels")
            return config

    with pytest.raises(AssertionError):
        checks.check_json_config_round_trip(Forgetful(num_levels=16))


# ------------------------------------------------------------ .keras files
@pytest.fixture(scope="module")
def data():
    return checks.tiny_data()


@pytest.mark.parametrize("name", sorted(checks.tiny_models()))
def test_keras_file_gives_back_the_same_predictions_and_elbo_terms(
        name, data, tmp_path):
    x, labels = data
    model = checks.tiny_models()[name]()
    checks.perturb_weights(model)
    inputs = checks.predict_inputs(model, x[:8], labels[:8])
    restored = checks.check_keras_file_round_trip(model, inputs, str(tmp_path))
    if isinstance(model, keras_vae.VAE):
        assert (type(restored.likelihood), type(restored.prior)) == (
            type(model.likelihood), type(model.prior))


# ------------------------------------------------------- mixed precision
@pytest.fixture
def dtype_policy():
    """Sets the global dtype policy for one test; restores it afterwards."""
    previous = keras.config.dtype_policy()
    yield keras.config.set_dtype_policy
    keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("name", sorted(checks.mixed_precision_models()))
def test_trains_under_mixed_bfloat16_with_finite_metrics(name, data,
                                                         dtype_policy):
    x, labels = data
    dtype_policy("mixed_bfloat16")
    model = checks.mixed_precision_models()[name]()
    checks.check_mixed_precision_model(model, "mixed_bfloat16")
    before = [v.numpy().copy() for v in model.trainable_variables]
    checks.train_a_few_steps(model, x, labels)
    after = [v.numpy() for v in model.trainable_variables]
    assert any(not np.array_equal(a, b) for a, b in zip(after, before))
    outputs = model(checks.predict_inputs(model, x[:4], labels[:4]))
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(
        keras.ops.cast(outputs, "float32"))))


def test_mixed_float16_with_loss_scaling_trains_like_float32(data):
    # Float16 gradients of the scaled loss, unscaled by the optimizer: the
    # weights move as far as in float32 (without the scaling in
    # `train_step` they would move 1/1024 as far).
    ratio, model = checks.float16_loss_scaling_ratio(
        checks.tiny_models()["vae_bernoulli"], *data)
    assert 0.5 < ratio < 2.0, ratio
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert float(model.optimizer.dynamic_scale.numpy()) == 2.0**10


def test_every_model_trains_under_mixed_precision_on_jax():
    # XLA's backend optimisations only speed up the compiled code; off,
    # the train steps compile about 1.5 times faster (CPU time).
    code = f"""
    import json, os, sys
    os.environ["XLA_FLAGS"] = "--xla_backend_optimization_level=0"
    sys.path.insert(0, {TESTS!r})
    import keras, numpy as np
    import contract_checks as checks

    x, labels = checks.tiny_data()
    builders = checks.mixed_precision_models()
    ratios = {{name: float(checks.float16_loss_scaling_ratio(
                   builders[name], x, labels)[0])
               for name in ("vae_bernoulli", "distiller")}}
    keras.config.set_dtype_policy("mixed_bfloat16")
    elbo = {{}}
    for name, build in sorted(builders.items()):
        model = build()
        checks.check_mixed_precision_model(model, "mixed_bfloat16")
        history = checks.train_a_few_steps(model, x, labels)
        elbo[name] = float(history["elbo"][-1])
    print("RESULT", json.dumps({{"elbo": elbo, "ratios": ratios}}))
    """
    output = run_with_backend(code, backend="jax", timeout=1800)
    line = [row for row in output.splitlines() if row.startswith("RESULT ")]
    result = json.loads(line[-1][len("RESULT "):])
    elbo = result["elbo"]
    assert sorted(elbo) == sorted(checks.mixed_precision_models())
    assert all(np.isfinite(value) for value in elbo.values()), elbo
    # mixed_float16: the JAX train steps scale the loss too.
    for name, ratio in result["ratios"].items():
        assert 0.5 < ratio < 2.0, (name, ratio)
