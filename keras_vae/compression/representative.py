"""Representative datasets for post-training int8 quantization.

The TFLite converter calibrates activation ranges by running a
`representative_dataset` generator. These helpers build one from a numpy
array or a `tf.data.Dataset` (batched or not, with or without labels), for
one input or for a named signature of a multi-signature model.
"""

import numpy as np

DEFAULT_NUM_SAMPLES = 500


def _check_num_samples(num_samples):
    if (
        isinstance(num_samples, bool)
        or not isinstance(num_samples, (int, np.integer))
        or num_samples <= 0
    ):
        raise ValueError(
            "Expected `num_samples` to be a positive int (a few hundred "
            f"examples calibrate well). Received: num_samples={num_samples!r}"
        )
    return int(num_samples)


def _split(element):
    """`(x, y)` of a dataset element `x`, `(x,)`, `(x, y)` or `(x, y, w)`."""
    if isinstance(element, dict):
        raise ValueError(
            "Expected dataset elements `x` or `(x, y)`, not dicts; map the "
            "dataset to the model input first, e.g. "
            "`ds.map(lambda d: d['image'])`. "
            f"Received: element with keys={sorted(element)}"
        )
    if isinstance(element, (tuple, list)):
        return element[0], element[1] if len(element) > 1 else None
    return element, None


def _check_finite(array, name):
    if not np.isfinite(array).all():
        raise ValueError(
            f"Calibration data `{name}` contains "
            f"{int((~np.isfinite(array)).sum())} NaN or inf values; int8 "
            "ranges calibrated on them would be meaningless. Clean the data "
            f"first. Received: {name} with NaN/inf"
        )
    return array


def _numeric(value, name, dtype):
    """`value` as an array of `dtype`, refusing text and complex numbers.

    The check comes before the cast: `np.asarray(["0.5"], "float32")` would
    silently turn text into numbers, and a cast drops imaginary parts.
    """
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"Expected `{name}` to hold numbers ({error}). "
            f"Received: {name} of type {type(value).__name__}"
        ) from None
    if array.dtype != bool and not (
        np.issubdtype(array.dtype, np.integer)
        or np.issubdtype(array.dtype, np.floating)
    ):
        raise ValueError(
            f"Expected `{name}` to hold real numbers. Received: {name} with "
            f"dtype={array.dtype}"
        )
    return array if dtype is None else array.astype(dtype)


def representative_examples(
    data, num_samples=DEFAULT_NUM_SAMPLES, input_shape=None
):
    """Up to `num_samples` examples of `data`, with their labels if any.

    The conditional form of `representative_arrays`: `data` may also be a
    pair `(x, y)` of arrays, or a dataset of `(x, y)` elements, and the
    labels come back beside the examples.

    Args:
        data: array `(n, *shape)`, a pair `(x, y)` of arrays, or a
            `tf.data.Dataset` of `x` or `(x, y)` elements, batched or not.
        num_samples: int > 0. How many examples to keep (the first ones).
        input_shape: tuple or None. Per-example shape; with it, a dataset
            is treated as batched when its elements have one more axis.

    Returns:
        `(x, y)`: float32 array of `min(n, num_samples)` examples, and the
        matching labels as a numpy array (None when `data` has none).

    Example:

    >>> import numpy as np
    >>> from keras_vae.compression import representative_examples
    >>> x, y = representative_examples((np.zeros((10, 4)), np.arange(10)), 3)
    >>> x.shape, y.tolist()
    ((3, 4), [0, 1, 2])
    """
    num_samples = _check_num_samples(num_samples)
    if isinstance(data, tuple) and len(data) == 2 and not np.isscalar(data[0]):
        x, y = (_numeric(data[0], "data", "float32"),
                _numeric(data[1], "labels", None))
        if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
            raise ValueError(
                "Expected `data=(x, y)` with one label per example. "
                f"Received: x of shape {x.shape}, y of shape {y.shape}"
            )
    elif isinstance(data, (np.ndarray, list)):
        x, y = _numeric(data, "data", "float32"), None
    else:
        x, y = _dataset_examples(data, num_samples, input_shape)
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(
            "Expected `data` to hold at least one example with a batch "
            f"axis. Received: data with shape {x.shape}"
        )
    x = _check_finite(x[:num_samples], "data")
    return x, (None if y is None else y[:num_samples])


def _dataset_examples(data, num_samples, input_shape):
    try:
        import tensorflow as tf
    except ImportError as error:  # pragma: no cover - tensorflow is a dependency
        raise ImportError(
            "Reading a `tf.data.Dataset` needs TensorFlow: "
            "`pip install tensorflow`."
        ) from error
    if not isinstance(data, tf.data.Dataset):
        raise ValueError(
            "Expected `data` to be a numpy array, a pair `(x, y)` of arrays "
            "or a `tf.data.Dataset`. "
            f"Received: data of type {type(data).__name__}"
        )
    spec, label_spec = _split(data.element_spec)
    if input_shape is not None:
        batched = len(spec.shape) == len(tuple(input_shape)) + 1
    else:
        # An unknown leading axis is a batch axis (`Dataset.batch`).
        batched = len(spec.shape) > 0 and spec.shape[0] is None
    chunks, labels, count = [], [], 0
    for element in data:
        x, y = _split(element)
        x = _numeric(x, "data", "float32")
        if y is not None:
            y = np.asarray(y)
        if not batched:
            x = x[None]
            y = None if y is None else y[None]
        chunks.append(x[: num_samples - count])
        if y is not None:
            labels.append(y[: len(chunks[-1])])
        count += len(chunks[-1])
        if count >= num_samples:
            break
    if not count:
        raise ValueError(
            "Expected `data` to yield at least one example. "
            "Received: an empty dataset"
        )
    y = np.concatenate(labels) if label_spec is not None and labels else None
    return np.concatenate(chunks), y


def representative_arrays(data, num_samples=DEFAULT_NUM_SAMPLES, input_shape=None):
    """Up to `num_samples` examples of `data` as one float32 array.

    Args:
        data: numpy array `(n, *shape)` or `tf.data.Dataset` of `x` or
            `(x, y)` elements, batched or not (labels are dropped; see
            `representative_examples` to keep them).
        num_samples: int > 0. How many examples to keep (the first ones).
        input_shape: tuple or None. Per-example shape; with it, a dataset
            is treated as batched when its elements have one more axis.

    Returns:
        float32 numpy array of shape `(min(n, num_samples), *shape)`; pass
        it as `representative_data` to `keras_vae.export.to_tflite`.

    Raises:
        ValueError: for NaN or inf values, an empty input, or data that is
            neither an array nor a dataset.

    Example:

    >>> import numpy as np
    >>> from keras_vae.compression import representative_arrays
    >>> representative_arrays(np.zeros((1000, 8, 8, 1)), 100).shape
    (100, 8, 8, 1)
    """
    if isinstance(data, tuple):
        # A tuple of images, not an `(x, y)` pair, in this labels-free form.
        data = list(data)
    return representative_examples(data, num_samples, input_shape)[0]


def representative_dataset(
    data,
    num_samples=DEFAULT_NUM_SAMPLES,
    signature=None,
    input_name=None,
    input_shape=None,
):
    """A `converter.representative_dataset` generator over `data`.

    Yields one example at a time with a batch axis of 1, as the TFLite
    converter expects: `[x]` for a single-input model, or
    `(signature, {input_name: x})` for one signature of a multi-signature
    model (as `keras_vae.export` writes: `"encode"` / `"reconstruct"` take
    `"x"`, `"decode"` takes `"z"`).

    Args:
        data: numpy array or `tf.data.Dataset` (see `representative_arrays`).
        num_samples: int > 0. Number of examples yielded.
        signature: str or None. Signature key to yield the examples for.
        input_name: str or None. Input name of that signature; required
            with `signature`.
        input_shape: tuple or None. Per-example shape (see
            `representative_arrays`).

    Returns:
        A function with no arguments returning a generator; it can be
        called several times (the converter may iterate more than once).

    Example:

    >>> import numpy as np
    >>> from keras_vae.compression import representative_dataset
    >>> gen = representative_dataset(np.zeros((10, 4)), num_samples=3)
    >>> [x[0].shape for x in gen()]
    [(1, 4), (1, 4), (1, 4)]
    """
    if (signature is None) != (input_name is None):
        raise ValueError(
            "Pass `signature` and `input_name` together (e.g. "
            "signature='decode', input_name='z') or neither. "
            f"Received: signature={signature!r}, input_name={input_name!r}"
        )
    arrays = representative_arrays(data, num_samples, input_shape)

    def generator():
        for row in arrays:
            if signature is None:
                yield [row[None]]
            else:
                yield signature, {input_name: row[None]}

    return generator
