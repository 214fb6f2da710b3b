"""The Keras contract every keras_vae object keeps, as reusable checks.

A shared test base in the manner of keras-hub's `TestCase`: one function
per promise, so `test_contract.py` (TensorFlow, in process) and its JAX
subprocess run the same code, and a new class only needs a small factory.

- `registered_classes`: every class registered under the `keras_vae`
  package, after importing the modules that register them.
- `check_json_config_round_trip`: `get_config` -> JSON -> `from_config`
  gives the same config, directly and through `keras.saving`.
- `check_keras_file_round_trip`: a `.keras` file brings back the same
  predictions, weights and ELBO terms.
- `tiny_models` / `train_a_few_steps`: tiny models covering every
  likelihood and prior, a CVAE and a `Distiller`, and a short `fit` whose
  metrics must be finite (the mixed-precision checks).
"""

import importlib
import json
import os

import keras
import numpy as np
from model_checks import check_save_load_exact

#: Modules whose import registers keras_vae classes. An optional module
#: whose third-party dependency is missing is skipped, a broken one fails.
MODULES = (
    "keras_vae",
    "keras_vae.callbacks",
    "keras_vae.compression",
    "keras_vae.compression.distillation",
    "keras_vae.codec",
    "keras_vae.sample_quality",
    "keras_vae.search",
)

SHAPE = (8, 8, 1)
LATENT = 2
HIDDEN = (8,)
NUM_CLASSES = 3
#: Metrics every VAE and the Distiller log.
ELBO_METRICS = ("loss", "reconstruction_loss", "kl_loss", "elbo")


def registered_classes():
    """`{class name: class}` of everything registered by keras_vae."""
    for module in MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if (error.name or "").startswith("keras_vae"):
                raise
    return {
        name.split(">", 1)[1]: cls
        for name, cls in keras.saving.get_custom_objects().items()
        if name.startswith("keras_vae>")
    }


def _canonical(config):
    return json.dumps(config, sort_keys=True)


def check_json_config_round_trip(obj):
    """`obj` survives `get_config` -> JSON -> `from_config` unchanged.

    Checked twice: through the class's own `from_config`, and through
    `keras.saving.serialize_keras_object` / `deserialize_keras_object`,
    which resolve the registered name as a `.keras` file does.

    Returns:
        The two clones, `(from_config clone, deserialized clone)`.
    """
    cls = type(obj)
    config = obj.get_config()
    text = _canonical(config)  # raises TypeError if not JSON-serializable
    clone = cls.from_config(json.loads(text))
    assert type(clone) is cls
    assert _canonical(clone.get_config()) == text
    serialized = json.loads(_canonical(keras.saving.serialize_keras_object(obj)))
    assert serialized["registered_name"] == f"keras_vae>{cls.__name__}"
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is cls
    assert _canonical(revived.get_config()) == text
    return clone, revived


def _numpy(tree):
    return {key: keras.ops.convert_to_numpy(value) for key, value in tree.items()}


def check_keras_file_round_trip(model, inputs, directory):
    """Save `model` as `.keras`, load it, and compare exactly.

    Predictions and weights (through `model_checks.check_save_load_exact`),
    the config, and for a VAE the ELBO terms at a fixed noise seed, which
    run the likelihood and the prior of the loaded model.

    Args:
        model: a keras_vae model.
        inputs: what `predict` takes: `x`, or `[x, labels]` for a CVAE.
        directory: str. Folder for the file.

    Returns:
        The loaded model.
    """
    os.makedirs(directory, exist_ok=True)
    restored = check_save_load_exact(model, inputs, directory)
    assert type(restored) is type(model)
    assert _canonical(restored.get_config()) == _canonical(model.get_config())
    if hasattr(model, "likelihood"):
        expected = _numpy(model.compute_terms(inputs, seed=7))
        actual = _numpy(restored.compute_terms(inputs, seed=7))
        for key, value in expected.items():
            np.testing.assert_array_equal(actual[key], value, err_msg=key)
    return restored


def perturb_weights(model, seed=0):
    """Give every trainable variable random values.

    A load that silently keeps the initial values (a learned scale, a
    prior's means) then cannot pass for a faithful one.
    """
    rng = np.random.default_rng(seed)
    for variable in model.trainable_variables:
        shape = tuple(variable.shape)
        variable.assign(rng.normal(scale=0.3, size=shape).astype(variable.dtype))


def tiny_data(count=24, seed=0):
    """`(x, labels)`: tiny images and class ids.

    `x` holds 8-bit grey levels k/255 in 8x8x1 images, valid data for every
    likelihood; `labels` are class ids for a CVAE.
    """
    rng = np.random.default_rng(seed)
    x = np.round(rng.uniform(size=(count, *SHAPE)) * 255) / 255
    return x.astype("float32"), rng.integers(0, NUM_CLASSES, size=count)


def _vae(**kwargs):
    import keras_vae

    return keras_vae.models.mlp_vae(SHAPE, LATENT, hidden_units=HIDDEN, seed=0,
                                    **kwargs)


def tiny_models():
    """`{name: builder}` of tiny models covering every likelihood and prior.

    One VAE per likelihood name, a CVAE with the mixture prior (labels and
    the learned prior in one model) and a `Distiller`. Builders are called
    under the dtype policy being checked.
    """
    import keras_vae
    from keras_vae.compression import Distiller

    builders = {
        f"vae_{name}": (lambda name=name: _vae(likelihood=name))
        for name in sorted(keras_vae.likelihoods.ALL_LIKELIHOODS)
    }
    builders["cvae_mixture_prior"] = lambda: keras_vae.models.mlp_cvae(
        SHAPE, NUM_CLASSES, LATENT, hidden_units=HIDDEN, seed=0,
        prior=keras_vae.priors.MixtureOfGaussians(3, seed=0))
    builders["distiller"] = lambda: Distiller(
        _vae(name="teacher"), _vae(name="student"), seed=0)
    return builders


def mixed_precision_models():
    """`tiny_models` with one VAE per likelihood class.

    The three Gaussian variants run the same code and differ only in the
    shape of the learned scale, so `vae_gaussian_per_pixel` (which has one)
    stands for all three: mixed-precision training is the costly check.
    """
    models = tiny_models()
    for name in ("vae_gaussian", "vae_gaussian_global"):
        del models[name]
    return models


def predict_inputs(model, x, labels):
    """What `predict` and `compute_terms` take for `model`."""
    return [x, labels] if getattr(model, "is_conditional", False) else x


def train_a_few_steps(model, x, labels, steps=3):
    """Fit `model` for `steps` batches; return the history dict.

    A model not compiled yet is compiled with Adam, one step per execution:
    the step is then compiled once, where several steps per execution
    compile a loop of them (several times the cost for a 3-step run).
    Fails if a logged ELBO metric is not finite.
    """
    if not model.compiled:
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      steps_per_execution=1)
    batch_size = len(x) // steps
    y = labels if getattr(model, "is_conditional", False) else None
    history = model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False,
                        verbose=0).history
    for name in ELBO_METRICS:
        values = np.asarray(history[name], "float64")
        assert np.all(np.isfinite(values)), (name, history)
    return history


def _distance_moved(model, x, labels):
    before = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    history = train_a_few_steps(model, x, labels)
    after = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    return history, np.sqrt(sum(np.sum((a - b) ** 2)
                                for a, b in zip(after, before)))


def float16_loss_scaling_ratio(build, x, labels):
    """How far 3 SGD steps move the weights under `mixed_float16` with a
    `LossScaleOptimizer`, relative to float32 from the same weights.

    Near 1 when the train step scales the loss (the optimizer unscales the
    gradients); 1/1024 when it forgets. The initial scale is 2**10, not
    Keras' 2**15: scaled gradients of the tiny models reach 2**15 * 2 and
    overflow float16 at times, and the skipped steps would blur the ratio.
    The float16 metrics must be finite. The dtype policy is set only while
    the model is built.

    Returns:
        `(ratio, float16 model)`.
    """
    reference = build()
    reference.compile(optimizer=keras.optimizers.SGD(1e-2),
                      steps_per_execution=1)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = build()
    finally:
        keras.config.set_dtype_policy(previous)
    check_mixed_precision_model(model, "mixed_float16")
    model.set_weights(reference.get_weights())
    model.compile(optimizer=keras.optimizers.LossScaleOptimizer(
        keras.optimizers.SGD(1e-2), initial_scale=2.0**10),
        steps_per_execution=1)
    _, moved = _distance_moved(model, x, labels)
    _, reference_moved = _distance_moved(reference, x, labels)
    return moved / reference_moved, model


def check_mixed_precision_model(model, policy):
    """Layers compute in `policy`'s compute dtype; variables stay float32."""
    policy = keras.dtype_policies.get(policy)
    assert model.dtype_policy.name == policy.name, model.dtype_policy
    for variable in model.trainable_variables:
        assert variable.dtype == "float32", variable.path
    layers = [layer for layer in _sublayers(model) if layer.weights]
    assert layers
    for layer in layers:
        assert layer.compute_dtype == policy.compute_dtype, layer.path


def _sublayers(layer):
    """Every layer under `layer`, through the public `layers` lists."""
    for child in getattr(layer, "layers", None) or ():
        yield child
        yield from _sublayers(child)
