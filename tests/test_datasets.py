import numpy as np
import pytest
import tensorflow_datasets as tfds

import keras_vae
from keras_vae.datasets import DatasetUnavailableError


def test_mnist5k_is_a_fixed_stratified_split(mnist5k):
    (x_train, y_train), (x_test, y_test) = mnist5k
    assert x_train.shape == (4000, 28, 28, 1) and x_test.shape == (1000, 28, 28, 1)
    assert x_train.dtype == np.float32 and 0.0 == x_train.min() and x_train.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y_train), [400] * 10)
    np.testing.assert_array_equal(np.bincount(y_test), [100] * 10)
    (again, _), _ = keras_vae.datasets.load("mnist5k")
    np.testing.assert_array_equal(again, x_train)


def test_digits_are_scaled_to_unit_interval(digits):
    (x_train, y_train), (x_test, _) = digits
    assert x_train.shape[1:] == (8, 8, 1) and len(x_train) + len(x_test) == 1797
    assert x_train.min() == 0.0 and x_train.max() == 1.0


def test_tfds_path_returns_float_images_in_unit_interval():
    with tfds.testing.mock_data(num_examples=12):
        (x_train, y_train), (x_test, y_test) = keras_vae.datasets.load("mnist")
    assert x_train.shape == (12, 28, 28, 1) and x_test.shape[1:] == (28, 28, 1)
    assert x_train.dtype == np.float32 and 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert y_train.dtype == np.int64


def test_offline_tfds_names_the_embedded_alternatives(tmp_path):
    # Empty data_dir and no network: the download fails; the error must say
    # what to do instead.
    with pytest.raises(DatasetUnavailableError, match=r"'mnist5k', 'digits'"):
        keras_vae.datasets.load_tfds("fashion_mnist", data_dir=str(tmp_path), download=False)


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match=r"Unknown data set.*name='imagenet'"):
        keras_vae.datasets.load("imagenet")


def test_to_dataset_batches_shuffles_and_keeps_labels():
    x = np.arange(10, dtype="float32").reshape(10, 1)
    batches = list(keras_vae.datasets.to_dataset(x, 4, seed=1))
    assert [len(b) for b in batches] == [4, 4, 2]
    seen = np.sort(np.concatenate([b.numpy() for b in batches]).ravel())
    np.testing.assert_array_equal(seen, np.arange(10))
    pairs = list(keras_vae.datasets.to_dataset(x, 5, shuffle=False, y=np.arange(10)))
    np.testing.assert_array_equal(pairs[0][1].numpy(), np.arange(5))
    with pytest.raises(ValueError, match="batch_size=0"):
        keras_vae.datasets.to_dataset(x, 0)


def test_tensorflow_datasets_has_every_module_it_needs(tmp_path):
    # Before a download, tfds finds its checksum files next to the builder's
    # code (`code_path`), which imports importlib_resources: a module tfds
    # needs without declaring it.
    builder = tfds.builder("mnist", data_dir=str(tmp_path))
    assert not builder.is_prepared()
    assert str(builder.code_path).endswith("mnist.py")
    assert any("mnist" in url for url in type(builder).url_infos)


def test_offline_load_says_what_is_wrong_and_never_tries_to_download(
    tmp_path, monkeypatch
):
    from keras_vae.datasets import tfds_loader

    monkeypatch.setattr(tfds_loader, "network_reachable", lambda *a, **k: False)

    def download(*args, **kwargs):
        raise AssertionError("a download was attempted offline")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare",
                        download)
    with pytest.raises(DatasetUnavailableError) as info:
        keras_vae.datasets.load("mnist", data_dir=str(tmp_path))
    message = str(info.value)
    assert f"not prepared in {tmp_path}" in message
    assert "cannot reach the download server" in message
    assert "no network access" in message
    assert "'mnist5k'" in message and "data_dir" in message


def test_a_missing_tfds_dependency_is_an_import_error_with_the_pip_line(
    tmp_path, monkeypatch
):
    def load(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'importlib_resources'",
                                  name="importlib_resources")

    monkeypatch.setattr(tfds, "load", load)
    with pytest.raises(ImportError, match="pip install importlib_resources") as info:
        keras_vae.datasets.load("mnist", data_dir=str(tmp_path))
    assert "internet" not in str(info.value)
    assert "mnist5k" in str(info.value)
