"""Full data sets through tensorflow-datasets (network or prepared data_dir)."""

import numpy as np

EMBEDDED_ALTERNATIVES = ("mnist5k", "digits")


class DatasetUnavailableError(RuntimeError):
    """A tensorflow-datasets data set could neither be found nor downloaded."""


def load_tfds(name, data_dir=None, download=True):
    """Load a whole image data set from tensorflow-datasets as numpy.

    Returns `(x_train, y_train), (x_test, y_test)`, images float32 NHWC in
    [0, 1]. Offline and without a prepared `data_dir`, raises
    `DatasetUnavailableError` naming the embedded alternatives.
    """
    import tensorflow_datasets as tfds

    try:
        splits = tfds.load(
            name,
            split=["train", "test"],
            data_dir=data_dir,
            as_supervised=True,
            download=download,
        )
    except Exception as error:  # tfds raises many types for "no data"
        raise DatasetUnavailableError(
            f"Could not load {name!r} through tensorflow-datasets "
            f"(data_dir={data_dir!r}): {type(error).__name__}: "
            f"{str(error)[:300]}. This machine may have no internet access: "
            "prepare the data set once where there is network "
            f"(`tfds.builder({name!r}).download_and_prepare()`) and pass "
            "its `data_dir`, or use an embedded data set that needs no "
            f"network: {', '.join(repr(a) for a in EMBEDDED_ALTERNATIVES)} "
            "(e.g. keras_vae.datasets.load('mnist5k'))."
        ) from error
    return tuple(_to_arrays(tfds, split) for split in splits)


def _to_arrays(tfds, split):
    # Batched iteration instead of `batch_size=-1`, which aborts the process
    # on generator-backed data sets (as `tfds.testing.mock_data` makes).
    images, labels = [], []
    for image_batch, label_batch in tfds.as_numpy(split.batch(4096)):
        images.append(image_batch)
        labels.append(label_batch)
    x = np.concatenate(images).astype("float32") / 255.0
    return x, np.concatenate(labels).astype("int64")
