"""Checks on user data at the public boundary.

Every check raises `ValueError` that names the argument, says what was
expected, how to fix it, and ends with the received value, so that bad data
is refused before any training step runs.
"""

import numpy as np


def _describe(value):
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    return repr(value)


def as_float_array(x, name="x", expected_shape=None, likelihood=None):
    """Return `x` as a float32 numpy array after checking it.

    Args:
        x: array-like. The data.
        name: str. Argument name used in error messages.
        expected_shape: tuple or None. Per-example shape (no batch axis);
            `None` entries match any size.
        likelihood: `keras_vae.likelihoods.Likelihood` or None. When given,
            its `validate_data` adds likelihood-specific checks (Bernoulli
            needs values in [0, 1]).
    """
    if x is None:
        raise ValueError(f"`{name}` is required. Received: {name}=None")
    if isinstance(x, (list, tuple)) and len(x) and isinstance(x[0], str):
        raise ValueError(
            f"`{name}` must be numeric. Received: {name}={x!r:.80}"
        )
    try:
        array = np.asarray(x)
    except Exception as error:  # ragged lists and other non-arrays
        raise ValueError(
            f"`{name}` must be convertible to a numeric array ({error}). "
            f"Received: {name} of type {type(x).__name__}"
        ) from None
    if array.dtype == bool:
        array = array.astype("float32")
    if np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"`{name}` has integer dtype {array.dtype}; keras_vae expects "
            "float data, usually scaled to [0, 1]. For 8-bit images use "
            f"`{name}.astype('float32') / 255`. Received: {name} with "
            f"dtype={array.dtype}, min={array.min() if array.size else None}, "
            f"max={array.max() if array.size else None}"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"`{name}` must hold real numbers. Received: {name} with "
            f"dtype={array.dtype}"
        )
    if array.ndim == 0:
        raise ValueError(
            f"`{name}` must have a batch axis. Received: a scalar {name}={x!r}"
        )
    if array.shape[0] == 0 or array.size == 0:
        raise ValueError(
            f"`{name}` is empty: at least one example is needed. "
            f"Received: {name} of shape {array.shape}"
        )
    if expected_shape is not None:
        expected = tuple(expected_shape)
        got = tuple(array.shape[1:])
        if len(got) != len(expected) or any(
            e is not None and e != g for e, g in zip(expected, got)
        ):
            shown = "(batch, " + ", ".join(
                "?" if e is None else str(e) for e in expected
            ) + ")"
            hint = ""
            if int(np.prod(got)) == int(
                np.prod([e for e in expected if e is not None])
            ) and None not in expected:
                hint = f" Reshape it with `{name}.reshape((-1, *{expected}))`."
            raise ValueError(
                f"`{name}` has the wrong shape for this model: expected "
                f"{shown}.{hint} Received: {name} of shape {array.shape}"
            )
    if array.dtype.itemsize > 4 and np.isfinite(array).all():
        # float64 values beyond float32 range would silently become inf.
        largest = float(np.abs(array).max())
        if largest > float(np.finfo(np.float32).max):
            raise ValueError(
                f"`{name}` holds values too large for float32 (largest "
                f"magnitude {largest:g}); rescale the data. Received: {name} "
                f"with max |{name}|={largest:g}"
            )
    with np.errstate(over="ignore"):  # reported below as inf
        array = array.astype("float32", copy=False)
    finite = np.isfinite(array)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        raise ValueError(
            f"`{name}` contains {int((~finite).sum())} NaN or inf values "
            f"(first at index {tuple(int(i) for i in bad)}). Clean or impute "
            f"them before training. Received: {name} with NaN/inf"
        )
    if likelihood is not None:
        likelihood.validate_data(array, name=name)
    return array


def is_symbolic(x):
    """True for tensors without values: Keras symbolic, TF graph, JAX traced."""
    import keras

    if isinstance(x, keras.KerasTensor):
        return True
    module = type(x).__module__ or ""
    if module.startswith("jax"):
        import jax

        return isinstance(x, jax.core.Tracer)
    if module.startswith("tensorflow"):
        import tensorflow as tf

        return isinstance(x, tf.Tensor) and not hasattr(x, "numpy")
    return False


def is_array_like(x):
    """True for data held in memory: numpy, lists, eager tensors, DataFrames.

    Everything with `__array__` (TensorFlow and JAX arrays, pandas and
    torch objects) counts; datasets, generators and `keras.utils.PyDataset`
    do not (they stream batches).
    """
    if x is None or isinstance(x, (str, bytes)):
        return False
    if isinstance(x, (np.ndarray, np.generic, list, tuple, int, float)):
        return True
    return hasattr(x, "__array__") and not is_symbolic(x)


def one_hot_labels(labels, num_examples, num_classes, name="labels"):
    """Validate class labels and return them one-hot, float32.

    Args:
        labels: int (one class for all), integer ids `(n,)` or `(n, 1)` or
            one-hot `(n, num_classes)`, in any array-like form.
        num_examples: int. Number of examples the labels go with.
        num_classes: int. Number of classes.
        name: str. Argument name used in error messages.
    """
    if labels is None:
        raise ValueError(
            f"A conditional model needs class labels: pass `{name}` (integer "
            f"ids in [0, {num_classes}) or one-hot of width {num_classes}), "
            f"e.g. `model.fit(x, y)`. Received: {name}=None"
        )
    try:
        array = np.asarray(labels)
    except Exception:  # ragged lists and other non-arrays
        raise ValueError(
            f"Expected `{name}` to hold class ids or one-hot rows. "
            f"Received: {name} of type {type(labels).__name__}"
        ) from None
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(
            f"Expected `{name}` to hold class ids or one-hot numbers. "
            f"Received: {name} with dtype={array.dtype}"
        )
    if np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(
            f"Expected `{name}` to hold real class ids. Received: {name} "
            f"with dtype={array.dtype}"
        )
    if array.ndim == 0:
        array = np.full((num_examples,), array)
    one_hot_shape = (num_examples, num_classes)
    if array.ndim == 2 and array.shape == one_hot_shape and num_classes > 1:
        if not np.all((array == 0) | (array == 1)) or not np.all(
            array.sum(-1) == 1
        ):
            raise ValueError(
                f"One-hot `{name}` must hold a single 1 per row. "
                f"Received: {name} with row sums in "
                f"[{array.sum(-1).min()}, {array.sum(-1).max()}]"
            )
        return array.astype("float32")
    if array.ndim == 2 and array.shape[-1] == 1:
        array = array[:, 0]
    if array.ndim != 1 or len(array) != num_examples:
        raise ValueError(
            f"Expected `{name}` of shape ({num_examples},) with integer "
            f"ids or ({num_examples}, {num_classes}) one-hot. "
            f"Received: {name} of shape {array.shape}"
        )
    with np.errstate(invalid="ignore"):
        integral = np.all(np.mod(array, 1) == 0)
    if not integral or array.min() < 0 or array.max() >= num_classes:
        raise ValueError(
            f"Expected integer `{name}` in [0, {num_classes}). "
            f"Received: {name} with min={array.min()}, max={array.max()}"
        )
    return np.eye(num_classes, dtype="float32")[array.astype("int64")]


def sample_weights(sample_weight, num_examples, name="sample_weight"):
    """Validate per-example weights: `(n,)` or `(n, 1)`, finite, >= 0.

    Returns:
        float32 numpy array `(n,)`.
    """
    try:
        array = np.asarray(sample_weight)
    except Exception:  # ragged lists and other non-arrays
        array = np.asarray([None])
    if not (np.issubdtype(array.dtype, np.integer)
            or np.issubdtype(array.dtype, np.floating)
            or array.dtype == bool):
        raise ValueError(
            f"Expected `{name}` to hold one real weight per example. "
            f"Received: {name} of type {type(sample_weight).__name__}"
        )
    if array.ndim == 2 and array.shape[-1] == 1:
        array = array[:, 0]
    if array.shape != (num_examples,):
        raise ValueError(
            f"Expected `{name}` of shape ({num_examples},): one weight per "
            f"example. Received: {name} of shape {array.shape}"
        )
    array = array.astype("float32")
    if not np.isfinite(array).all() or (array < 0).any():
        raise ValueError(
            f"Expected finite `{name}` >= 0. Received: {name} with "
            f"min={array.min()}, max={array.max()}"
        )
    return array


def class_sample_weights(class_weight, one_hot, name="class_weight"):
    """Per-example weights `(n,)` from `{class id: weight}` and one-hot labels.

    Classes missing from `class_weight` weigh 1.
    """
    num_classes = one_hot.shape[-1]
    if not isinstance(class_weight, dict):
        raise ValueError(
            f"Expected `{name}` to be a dict {{class id: weight}}. "
            f"Received: {name}={class_weight!r:.80}"
        )
    table = np.ones((num_classes,), "float32")
    for key, value in class_weight.items():
        if isinstance(key, (bool, np.bool_)) or not isinstance(
                key, (int, np.integer)) or not 0 <= key < num_classes:
            raise ValueError(
                f"Expected `{name}` keys to be class ids in [0, "
                f"{num_classes}). Received: {name} with key {key!r}"
            )
        table[int(key)] = check_non_negative(value, f"{name}[{key}]")
    return one_hot @ table


def check_positive_number(value, name):
    """Raise unless `value` is a finite number > 0 (e.g. a learning rate)."""
    number = check_non_negative(value, name)
    if number == 0:
        raise ValueError(f"Expected `{name}` > 0. Received: {name}={value!r}")
    return number


def check_non_negative(value, name):
    """Raise unless `value` is a finite number >= 0."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"Expected `{name}` to be a number >= 0. Received: {name}={value!r}"
        ) from None
    if not np.isfinite(number) or number < 0:
        raise ValueError(
            f"Expected `{name}` >= 0. Received: {name}={value!r}"
        )
    return number


def check_positive_int(value, name):
    """Raise unless `value` is an int > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(
            f"Expected `{name}` to be a positive integer. Received: {name}={value!r}"
        )
    return int(value)


def check_optional_positive_int(value, name):
    """Raise unless `value` is None or an int > 0 (e.g. `batch_size`)."""
    if value is None:
        return None
    return check_positive_int(value, name)
