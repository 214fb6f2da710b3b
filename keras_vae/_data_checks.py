"""Checks of streaming input inside the compiled steps.

Arrays are validated in full before `fit`, `evaluate` or `predict` start
(`keras_vae._validation`). Streaming input (`tf.data`, Python generators,
`keras.utils.PyDataset`) can only be seen batch by batch, so each compiled
step checks its batch: all values finite, inside the likelihood's
`data_bounds` (Bernoulli: [0, 1]) and, for a conditional model, labels that
are integer ids in `[0, num_classes)` or one-hot rows. A handful of
reductions per batch, small next to the step's matrix products.

The step records the first bad batch of the epoch in a `DataCheck` metric
(so the result survives the several steps of one execution, on TensorFlow,
the fused path and JAX alike) and trains on it with a zero loss. The host
reads the record after every execution and raises a `ValueError` that names
the argument and the batch (`raise_if_flagged`). `predict` checks every
example and reports the first bad one.
"""

import keras
from keras import ops

# Codes of what was wrong with a batch; 0 means nothing.
NON_FINITE = 1
OUT_OF_BOUNDS = 2
BAD_LABELS = 3
#: Name of the check's entry in the logs of a step (removed on the host).
LOG_KEY = "data_check"


def _per_example(values, reduce):
    flat = ops.reshape(values, (ops.shape(values)[0], -1))
    return reduce(flat, axis=-1)


def _labels_ok(labels, num_classes):
    """Per-example bool: ids in [0, num_classes) or one-hot rows."""
    labels = ops.cast(labels, "float32")
    if len(labels.shape) == 2 and labels.shape[-1] == num_classes and (
        num_classes > 1
    ):
        binary = ops.all(ops.logical_or(labels == 0.0, labels == 1.0), axis=-1)
        return ops.logical_and(binary, ops.sum(labels, axis=-1) == 1.0)
    if len(labels.shape) == 2:
        labels = ops.squeeze(labels, axis=-1)
    return ops.logical_and(
        ops.logical_and(labels >= 0.0, labels < float(num_classes)),
        ops.floor(labels) == labels,  # False for NaN too
    )


def example_codes(x, labels=None, data_bounds=None, num_classes=None):
    """What is wrong with each example: `(batch,)` int32 codes, 0 if fine.

    Args:
        x: tensor `(batch, ...)`.
        labels: tensor of raw labels (ids or one-hot) or None.
        data_bounds: `(low, high)` or None. Allowed data values.
        num_classes: int or None. Classes of a conditional model.
    """
    x = ops.cast(x, "float32")
    finite = _per_example(ops.isfinite(x), ops.all)
    codes = ops.where(finite, 0, NON_FINITE)
    if data_bounds is not None:
        low, high = data_bounds
        inside = ops.logical_and(
            _per_example(x, ops.min) >= low, _per_example(x, ops.max) <= high
        )
        codes = ops.where(
            ops.logical_and(codes == 0, ops.logical_not(inside)),
            OUT_OF_BOUNDS, codes,
        )
    if labels is not None and num_classes is not None:
        codes = ops.where(
            ops.logical_and(
                codes == 0, ops.logical_not(_labels_ok(labels, num_classes))
            ),
            BAD_LABELS, codes,
        )
    return ops.cast(codes, "int32")


def batch_summary(x, codes):
    """`(code, low, high)` of a batch: its worst code and value range."""
    x = ops.cast(x, "float32")
    return ops.max(codes), ops.min(x), ops.max(x)


def sanitized(x, bad):
    """`x` with every value replaced by 0 when the batch is `bad`."""
    return ops.where(bad, ops.zeros_like(x), x)


class DataCheck(keras.metrics.Metric):
    """The first bad batch of the epoch: index, code and value range.

    `update_state(code, low, high)` is called once per step; `result()` is
    `[first_bad_batch or -1, code, low, high, batches_seen]`.
    """

    def __init__(self, name=LOG_KEY, **kwargs):
        super().__init__(name=name, **kwargs)
        self.first_bad = self.add_variable(
            (), keras.initializers.Constant(-1.0), name="first_bad")
        self.code = self.add_variable((), "zeros", name="code")
        self.low = self.add_variable((), "zeros", name="low")
        self.high = self.add_variable((), "zeros", name="high")
        self.seen = self.add_variable((), "zeros", name="seen")

    def update_state(self, code, low, high):
        code = ops.cast(code, "float32")
        first_bad, seen = self.first_bad.value, self.seen.value
        new = ops.logical_and(first_bad < 0.0, code > 0.0)
        self.first_bad.assign(ops.where(new, seen, first_bad))
        self.code.assign(ops.where(new, code, self.code.value))
        self.low.assign(
            ops.where(new, ops.cast(low, "float32"), self.low.value))
        self.high.assign(
            ops.where(new, ops.cast(high, "float32"), self.high.value))
        self.seen.assign(seen + 1.0)

    def reset_state(self):
        self.first_bad.assign(-1.0)
        for variable in (self.code, self.low, self.high, self.seen):
            variable.assign(0.0)

    def result(self):
        return ops.stack([
            variable.value for variable in
            (self.first_bad, self.code, self.low, self.high, self.seen)
        ])


def _reason(code, num_classes, data_bounds):
    if code == NON_FINITE:
        return "contains NaN or inf values; clean or impute them"
    if code == OUT_OF_BOUNDS:
        low, high = data_bounds
        return (
            f"has values outside [{low:g}, {high:g}], which the likelihood "
            "needs; scale the data (8-bit images: divide by 255) or use "
            "likelihood='gaussian'"
        )
    return (
        f"has class labels that are neither integer ids in [0, "
        f"{num_classes}) nor one-hot rows of width {num_classes}"
    )


def raise_if_flagged(logs, name, num_classes=None, data_bounds=None):
    """Remove the check from `logs`; raise `ValueError` if a batch was bad."""
    import numpy as np

    record = logs.pop(LOG_KEY, None)
    if record is None:
        return logs
    first_bad, code, low, high, _ = np.asarray(record, dtype="float64")
    if first_bad < 0:
        return logs
    received = (
        "labels out of range" if int(code) == BAD_LABELS
        else f"min={low:g}, max={high:g}"
    )
    raise ValueError(
        f"Batch {int(first_bad)} (0-based, of this epoch) of `{name}` "
        f"{_reason(int(code), num_classes, data_bounds)}. Streaming input "
        "(tf.data, generators) is checked batch by batch while it runs; "
        "the loss of that batch counted zero. Received: "
        f"{name} batch {int(first_bad)} with {received}"
    )


def raise_if_bad_examples(codes, name, num_classes=None, data_bounds=None):
    """Raise `ValueError` naming the first example whose code is not 0."""
    import numpy as np

    codes = np.asarray(codes).reshape(-1)
    bad = np.flatnonzero(codes)
    if not len(bad):
        return
    first = int(bad[0])
    raise ValueError(
        f"Example {first} (0-based) of `{name}` "
        f"{_reason(int(codes[first]), num_classes, data_bounds)}. Received: "
        f"{name} with {len(bad)} bad examples, the first at index {first}"
    )


def _restore_jax_state(model, state):
    """Write a JAX step's returned state into the model's variables.

    Keras moves the variables' values into the state while `fit` runs and
    writes them back when an execution returns normally; an execution that
    raises must do it itself, or the model is left without values.
    """
    groups = [model.trainable_variables, model.non_trainable_variables]
    if len(state) == 4:  # a train step also carries the optimizer's
        groups.append(model.optimizer.variables)
    groups.append(model.metrics_variables)
    for variables, values in zip(groups, state):
        for variable, value in zip(variables, values):
            variable.assign(value)


def checked_function(model, function, name):
    """Wrap a Keras train/test function to raise after a flagged execution.

    TensorFlow's functions return the logs; JAX's return `(logs, state)`.
    """
    jax = keras.backend.backend() == "jax"
    num_classes = model.num_classes
    data_bounds = model.likelihood.data_bounds

    def checked(*args):
        result = function(*args)
        logs = result[0] if jax else result
        try:
            raise_if_flagged(logs, name, num_classes, data_bounds)
        except ValueError:
            if jax:
                _restore_jax_state(model, result[1])
            raise
        return result

    checked.unchecked = function
    return checked
