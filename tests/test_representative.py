"""Representative datasets from arrays and tf.data for int8 calibration."""

import numpy as np
import pytest
import tensorflow as tf

from keras_vae.compression import (
    representative_arrays,
    representative_dataset,
    representative_examples,
)

X = np.arange(20 * 3, dtype="float32").reshape(20, 3)


@pytest.mark.parametrize(
    "make",
    [
        lambda: X,
        lambda: tf.data.Dataset.from_tensor_slices(X),
        lambda: tf.data.Dataset.from_tensor_slices(X).batch(6),
        lambda: tf.data.Dataset.from_tensor_slices((X, np.zeros(20))).batch(7),
        lambda: tf.data.Dataset.from_tensor_slices((X, np.zeros(20))),
    ],
    ids=["array", "unbatched", "batched", "batched-xy", "unbatched-xy"],
)
def test_arrays_and_datasets_give_the_first_examples_in_order(make):
    np.testing.assert_array_equal(representative_arrays(make(), 13), X[:13])
    np.testing.assert_array_equal(representative_arrays(make(), 500), X)


def test_generator_yields_one_example_per_step_and_can_restart():
    generator = representative_dataset(X, num_samples=4)
    first = [item[0] for item in generator()]
    assert [a.shape for a in first] == [(1, 3)] * 4
    np.testing.assert_array_equal(np.concatenate(first), X[:4])
    assert len(list(generator())) == 4  # the converter may iterate twice


def test_signature_form_for_multi_signature_converters():
    items = list(representative_dataset(X, 2, signature="decode", input_name="z")())
    assert [name for name, _ in items] == ["decode", "decode"]
    np.testing.assert_array_equal(items[1][1]["z"], X[1:2])


def test_input_shape_tells_batched_from_unbatched_images():
    images = np.zeros((10, 4, 4, 1), "float32")
    batched = tf.data.Dataset.from_tensor_slices(images).batch(3)
    # A known batch size (drop_remainder) is still found with input_shape.
    fixed = tf.data.Dataset.from_tensor_slices(images).batch(3, drop_remainder=True)
    assert representative_arrays(batched, 5, input_shape=(4, 4, 1)).shape == (5, 4, 4, 1)
    assert representative_arrays(fixed, 9, input_shape=(4, 4, 1)).shape == (9, 4, 4, 1)


def test_representative_dataset_calibrates_a_tflite_conversion():
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.representative_dataset = representative_dataset(X / 60.0, 10)
    assert len(converter.convert()) > 0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: representative_arrays(X, 0), "num_samples"),
        (lambda: representative_arrays("images", 5), "data"),
        (lambda: representative_arrays(np.zeros((0, 3)), 5), "at least one"),
        (lambda: representative_arrays(tf.data.Dataset.from_tensor_slices(
            {"image": X}), 5), "dicts"),
        (lambda: representative_dataset(X, 5, signature="decode"), "input_name"),
        (lambda: representative_arrays(np.where(X == 4, np.nan, X), 5), "NaN"),
        (lambda: representative_arrays(tf.data.Dataset.from_tensor_slices(
            np.full((4, 3), np.inf, "float32")), 5), "NaN or inf"),
        (lambda: representative_dataset(np.full((4, 3), np.nan), 2), "NaN"),
        (lambda: representative_examples((X, np.zeros(3)), 5), "one label"),
    ],
)
def test_bad_arguments_raise_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(
    "make",
    [
        lambda: (X, np.arange(20)),
        lambda: tf.data.Dataset.from_tensor_slices((X, np.arange(20))).batch(6),
        lambda: tf.data.Dataset.from_tensor_slices((X, np.arange(20))),
    ],
    ids=["pair", "batched-xy", "unbatched-xy"],
)
def test_examples_keep_their_labels_for_conditional_calibration(make):
    x, y = representative_examples(make(), 13, input_shape=(3,))
    np.testing.assert_array_equal(x, X[:13])
    np.testing.assert_array_equal(y, np.arange(13))
    x, y = representative_examples(X, 4)
    assert y is None and len(x) == 4
