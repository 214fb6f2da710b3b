"""Full data sets through tensorflow-datasets (network or prepared data_dir)."""

import os
import socket

import numpy as np

EMBEDDED_ALTERNATIVES = ("mnist5k", "digits")
# Where tensorflow-datasets downloads each supported data set from, as
# (host, port): probed once before a download, so an offline machine gets
# an immediate, accurate error instead of minutes of retries.
DOWNLOAD_HOSTS = {
    "mnist": ("storage.googleapis.com", 443),
    "fashion_mnist": ("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80),
    "cifar10": ("www.cs.toronto.edu", 443),
}
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                    "ALL_PROXY", "all_proxy")
_ALTERNATIVES = (
    "use an embedded data set that needs no network: "
    + ", ".join(repr(name) for name in EMBEDDED_ALTERNATIVES)
    + " (e.g. keras_vae.datasets.load('mnist5k'), CLI: --dataset mnist5k)"
)


class DatasetUnavailableError(RuntimeError):
    """A tensorflow-datasets data set could neither be found nor downloaded."""


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise _missing_dependency(error) from None
    return tfds


def _missing_dependency(error):
    module = (getattr(error, "name", None) or "tensorflow-datasets").split(".")[0]
    package = {"tensorflow_datasets": "tensorflow-datasets"}.get(module, module)
    return ImportError(
        f"tensorflow-datasets cannot run: the module {module!r} it needs is "
        f"not installed ({error}). Install it with `pip install {package}` "
        "(or reinstall keras-vae, which lists it), or "
        f"{_ALTERNATIVES}."
    )


def network_reachable(host, port, timeout=5.0):
    """Whether a TCP connection to `host:port` can be opened.

    A configured HTTP(S) proxy counts as reachable: downloads go through
    it, and only trying tells whether it works.

    Args:
        host: str. Host name.
        port: int. TCP port.
        timeout: float. Seconds to wait for the connection.

    Returns:
        bool.

    Example:

    >>> from keras_vae.datasets import tfds_loader
    >>> isinstance(tfds_loader.network_reachable("localhost", 9), bool)
    True
    """
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return True
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def load_tfds(name, data_dir=None, download=True):
    """Load a whole image data set from tensorflow-datasets as numpy.

    Returns `(x_train, y_train), (x_test, y_test)`, images float32 NHWC in
    [0, 1]. The error says what is really wrong:

    - a module tensorflow-datasets needs is missing: `ImportError` with the
      `pip install` line;
    - the data set is not prepared in `data_dir` and the download server
      cannot be reached (or `download=False`): `DatasetUnavailableError`
      saying so and naming the embedded alternatives, before any download
      is tried;
    - the download or preparation fails otherwise: `DatasetUnavailableError`
      with tensorflow-datasets' own error.

    Args:
        name: str. A tensorflow-datasets name, e.g. `"mnist"`.
        data_dir: str or None. The tensorflow-datasets data directory
            (default `~/tensorflow_datasets`).
        download: bool. Download and prepare the data set if it is not
            prepared in `data_dir`.

    Example:

    >>> import keras_vae
    >>> # (x, y), (x_test, y_test) = keras_vae.datasets.load_tfds("mnist")
    """
    tfds = _import_tfds()
    try:
        # What is already prepared in `data_dir` loads without any network.
        return _load(tfds, name, data_dir, download=False)
    except ImportError as error:
        raise _missing_dependency(error) from None
    except Exception as error:  # tfds raises many types for "no data"
        first_error = error
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        prepared = builder.is_prepared()
    except ImportError as error:
        raise _missing_dependency(error) from None
    except Exception as error:
        raise _unavailable(name, data_dir, f"tensorflow-datasets cannot "
                           f"build it ({_describe(error)})") from error
    where = builder.data_dir
    if prepared:
        raise _unavailable(name, data_dir, f"its prepared files in {where} "
                           f"cannot be read ({_describe(first_error)})"
                           ) from first_error
    host, port = DOWNLOAD_HOSTS.get(name, ("storage.googleapis.com", 443))
    if not download:
        raise _unavailable(name, data_dir, f"it is not prepared in {where} "
                           "and download=False")
    if not network_reachable(host, port):
        raise _unavailable(name, data_dir, f"it is not prepared in {where} "
                           "and this machine cannot reach the download "
                           f"server {host}:{port} (no network access)")
    try:
        return _load(tfds, name, data_dir, download=True)
    except ImportError as error:
        raise _missing_dependency(error) from None
    except Exception as error:
        raise _unavailable(name, data_dir, "the download or preparation "
                           f"failed ({_describe(error)})") from error


def _describe(error):
    return f"{type(error).__name__}: {str(error)[:300]}"


def _unavailable(name, data_dir, reason):
    return DatasetUnavailableError(
        f"Cannot load the data set {name!r}: {reason}. Prepare it once on a "
        f"machine with network (`tfds.builder({name!r}, data_dir=...)"
        ".download_and_prepare()`) and pass that folder as `data_dir` (CLI: "
        f"--data-dir), or {_ALTERNATIVES}. Received: name={name!r}, "
        f"data_dir={data_dir!r}"
    )


def _load(tfds, name, data_dir, download):
    splits = tfds.load(name, split=["train", "test"], data_dir=data_dir,
                       as_supervised=True, download=download)
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
