"""Every model of the family passes the same checks.

One case per builder: config round-trip, one `fit` step on TensorFlow and
on JAX (all JAX cases in one subprocess), exact `.keras` save/load, and a
TFLite conversion of encoder and decoder that runs in the LiteRT
interpreter and matches Keras.
"""

import json
import os

import numpy as np
import pytest
from backend_runner import run_with_backend
from model_checks import (
    check_config_round_trip,
    check_one_fit_step_lowers_nothing_to_nan,
    check_save_load_exact,
    check_tflite_encoder_decoder,
)

import keras_vae

NUM_CLASSES = 3
LATENT_DIM = 2

# name -> (builder, per-example data shape, conditional)
FAMILY = {
    "mlp_vae": (
        lambda: keras_vae.models.mlp_vae((8, 8, 1), LATENT_DIM, hidden_units=(16,), seed=0),
        (8, 8, 1), False,
    ),
    "mlp_vae_flat_gaussian": (
        lambda: keras_vae.models.mlp_vae(
            (12,), LATENT_DIM, hidden_units=(16,), likelihood="gaussian_global", seed=0),
        (12,), False,
    ),
    "mlp_vae_mixture_prior": (
        lambda: keras_vae.models.mlp_vae(
            (8, 8, 1), LATENT_DIM, hidden_units=(16,), seed=0,
            prior=keras_vae.priors.MixtureOfGaussians(num_components=3, seed=0)),
        (8, 8, 1), False,
    ),
    "conv_vae_transpose": (
        lambda: keras_vae.models.conv_vae((8, 8, 1), LATENT_DIM, filters=(4, 8), seed=0),
        (8, 8, 1), False,
    ),
    "conv_vae_upsample_odd_size": (
        lambda: keras_vae.models.conv_vae(
            (9, 7, 2), LATENT_DIM, filters=(4, 8), decoder_block="upsample", seed=0),
        (9, 7, 2), False,
    ),
    "conv1d_vae": (
        lambda: keras_vae.models.conv1d_vae((21, 3), LATENT_DIM, filters=(4, 8), seed=0),
        (21, 3), False,
    ),
    "conv1d_vae_upsample": (
        lambda: keras_vae.models.conv1d_vae(
            (15, 1), LATENT_DIM, filters=(4, 8), decoder_block="upsample", seed=0),
        (15, 1), False,
    ),
    "mlp_cvae": (
        lambda: keras_vae.models.mlp_cvae(
            (8, 8, 1), NUM_CLASSES, LATENT_DIM, hidden_units=(16,), seed=0),
        (8, 8, 1), True,
    ),
    "conv_cvae": (
        lambda: keras_vae.models.conv_cvae(
            (8, 8, 1), NUM_CLASSES, LATENT_DIM, filters=(4, 8), seed=0),
        (8, 8, 1), True,
    ),
}


def family_data(name, num_examples=16):
    """`(x, labels or None)` in [0, 1] for the family member `name`."""
    _, shape, conditional = FAMILY[name]
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(num_examples, *shape)).astype("float32")
    labels = np.arange(num_examples) % NUM_CLASSES if conditional else None
    return x, labels


def _inputs(model, x, labels):
    """What `predict` and the encoder/decoder take for this model."""
    if labels is None:
        z = np.asarray(model.encode(x)[0])
        return x, [x], [z]
    one_hot = np.eye(NUM_CLASSES, dtype="float32")[labels]
    z = np.asarray(model.encode(x, labels)[0])
    return [x, one_hot], [x, one_hot], [z, one_hot]


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_family_member_passes_shared_checks(name, tmp_path):
    build, shape, conditional = FAMILY[name]
    x, labels = family_data(name)
    model = build()
    assert model.input_spec_shape == shape
    assert isinstance(model, keras_vae.CVAE) == conditional
    check_config_round_trip(model)
    check_one_fit_step_lowers_nothing_to_nan(model, x, labels)
    predict_inputs, encoder_inputs, decoder_inputs = _inputs(model, x, labels)
    reconstruction = np.asarray(model.predict(predict_inputs, verbose=0))
    assert reconstruction.shape == x.shape and np.isfinite(reconstruction).all()
    check_save_load_exact(model, predict_inputs, str(tmp_path))
    check_tflite_encoder_decoder(model, encoder_inputs, decoder_inputs, str(tmp_path))


def test_family_trains_saves_and_loads_on_jax(tmp_path):
    """All members in one JAX process: round-trip, a fit step, exact reload."""
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    out = run_with_backend(
        f"""
        import json, os, sys
        sys.path.insert(0, {tests_dir!r})
        import keras, numpy as np
        assert keras.backend.backend() == "jax"
        from test_family import FAMILY, family_data, _inputs
        from model_checks import (check_config_round_trip,
            check_one_fit_step_lowers_nothing_to_nan, check_save_load_exact)
        done = []
        for name in sorted(FAMILY):
            model = FAMILY[name][0]()
            x, labels = family_data(name)
            check_config_round_trip(model)
            before = [np.array(w) for w in model.get_weights()]
            check_one_fit_step_lowers_nothing_to_nan(model, x, labels)
            changed = any(not np.array_equal(a, b)
                          for a, b in zip(before, model.get_weights()))
            assert changed, name + ": the fit step did not update the weights"
            directory = os.path.join({str(tmp_path)!r}, name)
            os.makedirs(directory)
            check_save_load_exact(model, _inputs(model, x, labels)[0], directory)
            done.append(name)
        print(json.dumps(done))
        """,
        timeout=1800,
    )
    assert json.loads(out.strip().splitlines()[-1]) == sorted(FAMILY)


@pytest.mark.parametrize(
    "builder,kwargs,match",
    [
        (keras_vae.models.conv1d_vae, {"input_shape": (28, 28, 1)}, "input_shape"),
        (keras_vae.models.conv1d_vae, {"input_shape": (16, 1), "filters": ()}, "filters"),
        (keras_vae.models.conv1d_vae,
         {"input_shape": (16, 1), "decoder_block": "pixelshuffle"}, "decoder_block"),
        (keras_vae.models.conv_vae, {"input_shape": (16, 1)}, "input_shape"),
        (keras_vae.models.mlp_vae, {"input_shape": ()}, "input_shape"),
        (keras_vae.models.mlp_cvae, {"input_shape": (8,), "num_classes": 0}, "num_classes"),
        (keras_vae.models.conv_cvae, {"input_shape": (8,), "num_classes": 2}, "input_shape"),
    ],
)
def test_builders_refuse_shapes_they_cannot_represent(builder, kwargs, match):
    with pytest.raises(ValueError, match=match):
        builder(**kwargs)


@pytest.mark.parametrize("steps", [1, 2, 5, 37, 64])
def test_conv1d_vae_reconstructs_any_length(steps):
    model = keras_vae.models.conv1d_vae((steps, 2), latent_dim=2, filters=(4, 8))
    x = np.random.default_rng(0).normal(size=(3, steps, 2)).astype("float32")
    assert np.asarray(model.reconstruct(x)).shape == (3, steps, 2)
