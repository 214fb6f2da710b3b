"""Bad input at the boundary: works, or a `ValueError` naming the argument.

Property tests (hypothesis) draw arrays of many shapes, dtypes and value
ranges, with NaN/inf sprinkled in, and feed them to `fit`, `evaluate`,
`encode`, `reconstruct`, `to_tflite`, `verify` and the TensorFlow-free
runtime `export/litert_vae.py`. Each case is classified up front: a valid
one must give finite results, an invalid one a `ValueError` whose message
names the argument and ends with the received value. Nothing may raise
another exception type, crash or return NaN. uint8 images are refused
with the `/ 255` fix in the message. Examples are bounded
(`max_examples`, `deadline=None`) so the module stays well under 2 min.
"""

import os
import sys
from functools import partial

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keras_vae
from keras_vae.export import to_tflite, verify

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "export"))
import reliability_log
from litert_vae import LiteRTVAE

SHAPE = (8, 8, 1)
LATENT = 2
FLOATS = ("float16", "float32", "float64")
OTHERS = ("uint8", "int8", "int32", "int64", "bool", "complex64", "str", "object")
# Distinct bad inputs tried, per entry point (reported by the module).
TRIED = {}
SETTINGS = dict(deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


# Distinct valid inputs, to show both branches of every property ran.
ACCEPTED = {}


def record(entry, array, valid):
    key = (array.shape, str(array.dtype), hash(array.tobytes()))
    (ACCEPTED if valid else TRIED).setdefault(entry, set()).add(key)


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    counts = {entry: len(keys) for entry, keys in TRIED.items()}
    counts["total"] = sum(counts.values())
    # The same array fed to several entry points counts once here.
    counts["distinct"] = len(set().union(*TRIED.values())) if TRIED else 0
    accepted = {entry: len(keys) for entry, keys in ACCEPTED.items()}
    print(f"\nreliability inputs: distinct bad inputs {counts}; "
          f"valid inputs {accepted}")
    reliability_log.report("inputs", bad_inputs=counts)


@st.composite
def random_arrays(draw, per_example):
    """An array of any shape, dtype and value range (maybe NaN/inf)."""
    if draw(st.booleans()):
        shape = (draw(st.integers(0, 5)), *per_example)
    else:
        rank = draw(st.integers(0, 5))
        shape = tuple(draw(st.lists(st.integers(0, 9), min_size=rank,
                                    max_size=rank)))
    dtype = draw(st.sampled_from(FLOATS * 3 + OTHERS))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    low, high = sorted(draw(st.lists(
        st.sampled_from([-1e300, -1e30, -1.0, 0.0, 1e-40, 0.5, 1.0, 255.0,
                         1e30, 1e300]),
        min_size=2, max_size=2)))
    if dtype == "str":
        return np.full(shape, "0.5")
    if dtype == "object":
        values = np.empty(shape, dtype=object)
        values.fill(draw(st.sampled_from([None, 0.5, "x"])))
        return values
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype.startswith(("int", "uint")):
        return rng.integers(0, 256 if dtype == "uint8" else 100, shape).astype(dtype)
    values = rng.uniform(0.0, 1.0, shape) * (high - low) + low
    size = int(np.prod(shape))
    if size and draw(st.booleans()):
        values.flat[rng.integers(size)] = draw(
            st.sampled_from([np.nan, np.inf, -np.inf]))
    with np.errstate(over="ignore", invalid="ignore"):
        return values.astype(dtype)


@st.composite
def arrays(draw, latent=False):
    """A valid batch, the same batch with one defect, or a random array."""
    per_example = (LATENT,) if latent else SHAPE
    defect = draw(st.sampled_from(
        ["none", "none", "shape", "dtype", "range", "non-finite", "empty",
         "random", "random"]))
    if defect == "random":
        return draw(random_arrays(per_example))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    n = draw(st.integers(1, 6))
    values = rng.uniform(0.0, 1.0, (n, *per_example))
    if latent:
        values = values * 6.0 - 3.0
    dtype = draw(st.sampled_from(FLOATS))
    if defect == "shape":
        shape = list(values.shape)
        axis = draw(st.integers(0, len(shape)))
        if draw(st.booleans()) and len(shape) > 1:
            del shape[min(axis, len(shape) - 1)]
            values = rng.uniform(0.0, 1.0, shape)
        else:
            shape.insert(axis, draw(st.integers(2, 3)))
            values = rng.uniform(0.0, 1.0, shape)
    elif defect == "dtype":
        kind = draw(st.sampled_from(OTHERS))
        if kind == "uint8":
            return np.round(values * 255).astype("uint8")
        if kind in ("str", "object"):
            return values.astype(kind)
        if kind == "bool":
            return values > 0.5
        return values.astype(kind)
    elif defect == "range":
        factor = draw(st.sampled_from([-1.0, 255.0, 1e30, 1e300]))
        values = values * factor + draw(st.sampled_from([0.0, 2.0]))
    elif defect == "non-finite":
        values.flat[rng.integers(values.size)] = draw(
            st.sampled_from([np.nan, np.inf, -np.inf]))
    elif defect == "empty":
        values = values[:0]
    with np.errstate(over="ignore", invalid="ignore"):
        return values.astype(dtype)


def is_valid(array, per_example=SHAPE, unit_range=True):
    """Whether keras-vae must accept `array` (Bernoulli data in [0, 1])."""
    if array.dtype == bool:
        array = array.astype("float32")
    if not np.issubdtype(array.dtype, np.floating):
        return False
    if array.ndim != 1 + len(per_example) or tuple(array.shape[1:]) != per_example:
        return False
    if array.shape[0] == 0:
        return False
    with np.errstate(over="ignore"):
        as32 = array.astype("float32")
    if not np.isfinite(as32).all():
        return False
    if unit_range and (as32.min() < 0 or as32.max() > 1):
        return False
    return True


def assert_clear_error(error, name):
    message = str(error)
    assert f"`{name}" in message or f"{name}=" in message, message
    assert "Received:" in message, message


def assert_finite(*values):
    for value in values:
        assert np.isfinite(keras.ops.convert_to_numpy(value)).all()


@pytest.fixture(scope="module")
def model():
    vae = keras_vae.models.mlp_vae(SHAPE, latent_dim=LATENT,
                                   hidden_units=(8,), seed=0)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    return vae


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("inputs") / "vae.tflite")
    x = np.random.default_rng(0).uniform(size=(16, *SHAPE)).astype("float32")
    to_tflite(model, path, quantization="none")
    return path, x


def test_fit_and_evaluate_accept_valid_data_and_refuse_the_rest(model):
    @settings(max_examples=40, **SETTINGS)
    @given(x=arrays())
    def check(x):
        valid = is_valid(x)
        record("fit", x, valid)
        if valid:
            history = model.fit(x, epochs=1, batch_size=4, verbose=0).history
            assert all(np.isfinite(v).all() for v in history.values())
            logs = model.evaluate(x, batch_size=4, verbose=0, return_dict=True)
            assert all(np.isfinite(v) for v in logs.values())
            return
        weights = [w.copy() for w in model.get_weights()]
        for method in (model.fit, model.evaluate):
            with pytest.raises(ValueError) as info:
                method(x, batch_size=4, verbose=0)
            assert_clear_error(info.value, "x")
        for a, b in zip(weights, model.get_weights()):
            np.testing.assert_array_equal(a, b)

    check()


def test_encode_and_reconstruct_accept_valid_data_and_refuse_the_rest(model):
    gaussian = keras_vae.models.mlp_vae(SHAPE, latent_dim=LATENT,
                                        hidden_units=(8,),
                                        likelihood="gaussian", seed=0)

    @settings(max_examples=150, **SETTINGS)
    @given(x=arrays())
    def check(x):
        for vae, unit_range in ((model, True), (gaussian, False)):
            valid = is_valid(x, unit_range=unit_range)
            record(f"encode/{vae.likelihood.name}", x, valid)
            if valid:
                assert_finite(*vae.encode(x), vae.reconstruct(x))
                continue
            for method in (vae.encode, vae.reconstruct):
                with pytest.raises(ValueError) as info:
                    method(x)
                assert_clear_error(info.value, "x")

    check()


def test_decode_accepts_finite_codes_and_refuses_the_rest(model):
    @settings(max_examples=60, **SETTINGS)
    @given(z=arrays(latent=True))
    def check(z):
        valid = is_valid(z, per_example=(LATENT,), unit_range=False)
        if valid and np.abs(z.astype("float64")).max() > 1e6:
            valid = True  # huge codes are legal input; output must be finite
        record("decode", z, valid)
        if valid:
            assert_finite(model.decode(z))
            return
        with pytest.raises(ValueError) as info:
            model.decode(z)
        assert_clear_error(info.value, "z")

    check()


def test_export_and_verify_refuse_bad_data_before_writing(model, exported,
                                                         tmp_path):
    path, x_ok = exported
    target = str(tmp_path / "never.tflite")

    @settings(max_examples=60, **SETTINGS)
    @given(x=arrays())
    def check(x):
        valid = is_valid(x)
        record("to_tflite+verify", x, valid)
        if valid:
            report = verify(path, model, x)
            assert report.passed
            return
        with pytest.raises(ValueError) as info:
            to_tflite(model, target, representative_data=x)
        assert_clear_error(info.value, "representative_data")
        assert not os.path.exists(target)
        with pytest.raises(ValueError) as info:
            verify(path, model, x)
        assert_clear_error(info.value, "x")

    check()


def test_litert_runtime_refuses_bad_data(exported):
    path, _ = exported
    runtime = LiteRTVAE(path)

    @settings(max_examples=150, **SETTINGS)
    @given(x=arrays(), z=arrays(latent=True))
    def check(x, z):
        valid = is_valid(x)
        record("runtime", x, valid)
        if valid:
            z_mean, z_log_var = runtime.encode(x)
            assert_finite(z_mean, z_log_var, runtime.reconstruct(x))
        else:
            for method in (runtime.encode, runtime.reconstruct):
                with pytest.raises(ValueError) as info:
                    method(x)
                assert_clear_error(info.value, "x")
        valid = is_valid(z, per_example=(LATENT,), unit_range=False)
        record("runtime decode", z, valid)
        if valid:
            assert_finite(runtime.decode(z))
        else:
            with pytest.raises(ValueError) as info:
                runtime.decode(z)
            assert_clear_error(info.value, "z")

    check()


def test_uint8_images_are_refused_with_the_scaling_fix(model, exported):
    path, _ = exported
    images = np.random.default_rng(0).integers(0, 256, (4, *SHAPE)).astype("uint8")
    calls = {
        "fit": lambda: model.fit(images, epochs=1, verbose=0),
        "encode": lambda: model.encode(images),
        "runtime": lambda: LiteRTVAE(path).reconstruct(images),
        # The same pixels cast to float without scaling: refused too.
        "float pixels": lambda: model.fit(images.astype("float32"), verbose=0),
        "runtime float pixels": lambda: LiteRTVAE(path).reconstruct(
            images.astype("float32")),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match="255") as info:
            call()
        assert "Received:" in str(info.value), name


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, "8", True])
def test_bad_batch_size_is_refused_by_every_loop(model, batch_size):
    x = np.full((4, *SHAPE), 0.5, "float32")
    for method in (model.fit, model.evaluate, model.predict):
        with pytest.raises(ValueError) as info:
            method(x, batch_size=batch_size, verbose=0)
        assert_clear_error(info.value, "batch_size")
    TRIED.setdefault("batch_size", set()).add(repr(batch_size))


def test_missing_and_odd_arguments_are_refused(model):
    x = np.full((4, *SHAPE), 0.5, "float32")
    cases = {
        "fit(None)": (lambda: model.fit(None, verbose=0), "x"),
        "ragged list": (lambda: model.encode([[0.5], [0.5, 0.5]]), "x"),
        "nan validation_data": (
            lambda: model.fit(x, validation_data=(x * np.nan,), verbose=0),
            "validation_data",
        ),
        "sample(0)": (lambda: model.sample(0), "num_samples"),
    }
    for label, (call, name) in cases.items():
        with pytest.raises(ValueError) as info:
            call()
        assert_clear_error(info.value, name)
        TRIED.setdefault("arguments", set()).add(label)


@pytest.fixture(scope="module")
def cvae():
    model = keras_vae.models.mlp_cvae(SHAPE, num_classes=3, latent_dim=LATENT,
                                      hidden_units=(8,), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


@pytest.mark.parametrize(
    "labels",
    [None, np.arange(5) % 3, np.full(6, 3), np.full(6, -1), np.full(6, np.nan),
     np.full(6, 0.5), np.ones((6, 3)), np.full(6, "a"),
     np.zeros((6, 4))],
    ids=["missing", "wrong length", "id too large", "negative id", "nan",
         "fraction", "bad one-hot", "strings", "one-hot too wide"],
)
def test_cvae_labels_missing_or_bad_are_refused(cvae, labels):
    x = np.full((6, *SHAPE), 0.5, "float32")
    name = "labels"
    for call in (lambda: cvae.fit(x, labels, verbose=0),
                 lambda: cvae.evaluate(x, labels, verbose=0)):
        with pytest.raises(ValueError) as info:
            call()
        assert "Received:" in str(info.value)
        assert "`y`" in str(info.value) or "y=" in str(info.value)
    with pytest.raises(ValueError) as info:
        cvae.encode(x, labels)
    assert_clear_error(info.value, name)
    TRIED.setdefault("cvae labels", set()).add(repr(labels)[:60])


def test_cvae_dataset_without_labels_and_batch_size_zero_are_refused(cvae):
    import tensorflow as tf

    x = np.full((6, *SHAPE), 0.5, "float32")
    with pytest.raises(ValueError, match="labels") as info:
        cvae.fit(tf.data.Dataset.from_tensor_slices(x).batch(2), verbose=0)
    assert "Received:" in str(info.value)
    with pytest.raises(ValueError) as info:
        cvae.fit(x, np.arange(6) % 3, batch_size=0, verbose=0)
    assert_clear_error(info.value, "batch_size")
    history = cvae.fit(x, np.arange(6) % 3, batch_size=3, verbose=0).history
    assert np.isfinite(history["loss"]).all()


# ------------------------------------------------- every form of input data
class _ArrayLike:
    """A table with `__array__`, as pandas DataFrames and Series are."""

    def __init__(self, values):
        self.values = np.asarray(values)

    def __array__(self, dtype=None, copy=None):
        return self.values if dtype is None else self.values.astype(dtype)


def _array_forms(values):
    forms = {"list": values.tolist(), "tf.Tensor": tf_constant(values),
             "__array__": _ArrayLike(values)}
    try:
        import pandas

        if values.ndim == 2:
            forms["DataFrame"] = pandas.DataFrame(values)
    except ImportError:  # pandas is optional; `__array__` stands in for it
        pass
    return forms


def tf_constant(values):
    import tensorflow as tf

    return tf.constant(values)


def test_every_array_form_is_checked_like_numpy(model, cvae):
    flat = keras_vae.models.mlp_vae((6,), latent_dim=LATENT, hidden_units=(8,),
                                    seed=0)
    flat.compile(optimizer="adam")
    good = np.random.default_rng(0).uniform(size=(6, 6)).astype("float32")
    for form in _array_forms(good).values():
        assert_finite(*flat.encode(form), flat.reconstruct(form))
        assert np.isfinite(flat.evaluate(form, verbose=0, return_dict=True)
                           ["loss"])
    images = np.full((6, *SHAPE), 0.5, "float32")
    defects = {"nan": np.where(np.arange(6)[:, None, None, None] == 4, np.nan,
                               images),
               "255": images * 255.0, "shape": images.reshape(6, 64)}
    for defect, values in defects.items():
        for form_name, form in _array_forms(values).items():
            calls = (partial(model.fit, form, verbose=0),
                     partial(model.evaluate, form, verbose=0),
                     partial(model.predict, form, verbose=0),
                     partial(model.encode, form), partial(model.reconstruct, form),
                     partial(cvae.fit, form, np.arange(6) % 3, verbose=0))
            for call in calls:
                with pytest.raises(ValueError) as info:
                    call()
                assert_clear_error(info.value, "x")
            TRIED.setdefault("array forms", set()).add(f"{form_name}/{defect}")
    bad_codes = np.full((6, LATENT), np.inf, "float32")
    for form in _array_forms(bad_codes).values():
        with pytest.raises(ValueError) as info:
            model.decode(form)
        assert_clear_error(info.value, "z")
    # Labels in every form: an id out of range, a negative one, a fraction.
    for labels in (np.array([0, 1, 2, 7, 0, 1]), np.array([0, -1, 2, 0, 1, 2]),
                   np.array([0.5, 1, 2, 0, 1, 2])):
        for form_name, form in _array_forms(labels).items():
            for call in (partial(cvae.fit, images, form, verbose=0),
                         partial(cvae.encode, images, form),
                         partial(cvae.sample, 6, labels=form)):
                with pytest.raises(ValueError, match="Received:"):
                    call()
            TRIED.setdefault("label forms", set()).add(
                f"{form_name}/{labels.tolist()}")


def _batches(values, labels=None, size=2):
    import tensorflow as tf

    data = values if labels is None else (values, labels)
    return tf.data.Dataset.from_tensor_slices(data).batch(size)


def _streams(values, labels=None):
    """The same batches of 2 as tf.data, a generator and a PyDataset."""

    def generator():
        for start in range(0, len(values), 2):
            batch = values[start:start + 2]
            yield (batch,) if labels is None else (batch, labels[start:start + 2])

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return len(values) // 2

        def __getitem__(self, index):
            batch = values[2 * index:2 * index + 2]
            return (batch,) if labels is None else (
                batch, labels[2 * index:2 * index + 2])

    return {"tf.data": _batches(values, labels), "generator": generator(),
            "PyDataset": Batches()}


def test_streaming_input_is_checked_in_every_batch_not_only_the_first(model):
    images = np.full((8, *SHAPE), 0.5, "float32")
    nan_in_batch_2 = images.copy()
    nan_in_batch_2[5, 0, 0, 0] = np.nan
    pixels_in_batch_3 = images.copy()
    pixels_in_batch_3[6:] *= 255.0
    for values, batch, reason, forms in (
            (nan_in_batch_2, 2, "NaN", ("tf.data", "generator", "PyDataset")),
            (pixels_in_batch_3, 3, "divide by 255", ("tf.data",))):
        for form, stream in _streams(values).items():
            if form not in forms:
                continue
            with pytest.raises(ValueError, match=reason) as info:
                # In order: Keras shuffles the batches of a PyDataset.
                model.fit(stream, epochs=1, shuffle=False, verbose=0)
            assert f"Batch {batch} " in str(info.value), form
            assert_clear_error(info.value, "x")
            TRIED.setdefault("streams", set()).add(f"fit/{form}/{reason}")
        assert all(np.isfinite(w).all() for w in model.get_weights())
        with pytest.raises(ValueError, match=f"Batch {batch} "):
            model.evaluate(_batches(values), verbose=0)
        with pytest.raises(ValueError, match=f"Example {2 * batch + 1 - (batch == 3)}"):
            model.predict(_batches(values), verbose=0)
        with pytest.raises(ValueError, match=f"Batch {batch} ") as info:
            model.fit(images, validation_data=_batches(values), verbose=0)
        assert_clear_error(info.value, "validation_data")
    # A clean stream still trains.
    stream = _streams(images)["generator"]
    assert np.isfinite(model.fit(stream, verbose=0).history["loss"]).all()


def test_cvae_streaming_labels_are_checked_in_every_batch(cvae):
    images = np.full((8, *SHAPE), 0.5, "float32")
    good = np.arange(8) % 3
    one_hot = np.eye(3, dtype="float32")[good]
    double = one_hot.copy()
    double[5] = [1.0, 1.0, 0.0]
    bad_labels = {"id 7 of 3 classes": np.where(np.arange(8) == 5, 7, good),
                  "negative id": np.where(np.arange(8) == 5, -1, good),
                  "fractional id": np.where(np.arange(8) == 5, 0.5, good),
                  "one-hot row with two ones": double}
    for name, labels in bad_labels.items():
        for form, stream in _streams(images, labels).items():
            if form != "tf.data" and name != "id 7 of 3 classes":
                continue
            with pytest.raises(ValueError, match="labels") as info:
                cvae.fit(stream, shuffle=False, verbose=0)
            assert "Batch 2 " in str(info.value), (name, form)
            TRIED.setdefault("cvae streams", set()).add(f"{form}/{name}")
    nan_images = images.copy()
    nan_images[7] = np.nan
    with pytest.raises(ValueError, match="Batch 3 .*NaN"):
        cvae.fit(_batches(nan_images, good), verbose=0)
    with pytest.raises(ValueError, match="Example 5"):
        cvae.predict(_batches(images, bad_labels["id 7 of 3 classes"]),
                     verbose=0)
    assert np.isfinite(cvae.fit(_batches(images, one_hot), verbose=0)
                       .history["loss"]).all()


def test_validation_data_is_checked_before_training_and_named(model, cvae):
    images = np.full((6, *SHAPE), 0.5, "float32")
    steps = int(model.optimizer.iterations)
    bad_validation = {
        "nan": (images * np.nan,),
        "tensor of 8-bit values": (tf_constant(images * 255.0),),
        "negative weights": (images, None, -np.ones(6)),
        "uint8 first batch": _batches((images * 255).astype("uint8")),
    }
    for name, validation_data in bad_validation.items():
        with pytest.raises(ValueError) as info:
            model.fit(images, validation_data=validation_data, verbose=0)
        assert_clear_error(info.value, "validation_data")
        TRIED.setdefault("validation_data", set()).add(name)
    assert int(model.optimizer.iterations) == steps  # nothing trained
    with pytest.raises(ValueError) as info:
        cvae.fit(images, np.arange(6) % 3,
                 validation_data=(images, np.full(6, 3)), verbose=0)
    assert_clear_error(info.value, "validation_data")


def test_to_dataset_refuses_string_labels():
    x = np.full((4, 3), 0.5, "float32")
    with pytest.raises(ValueError, match="numeric labels") as info:
        keras_vae.datasets.to_dataset(x, 2, y=np.array(["a", "b", "a", "b"]))
    assert_clear_error(info.value, "y")
