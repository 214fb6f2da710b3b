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
