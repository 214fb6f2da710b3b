"""Pruning schedules: when to update the masks and to which sparsity.

The semantics are those of TF-MOT's `tfmot.sparsity.keras` schedules: steps
count training batches from 1, a mask update happens on the steps in
`[begin_step, end_step]` (`end_step=-1`: no end) where
`(step - begin_step) % frequency == 0`, and the sparsity is the fraction of
weights set to zero. The schedules are written with `keras.ops`, so they run
inside a compiled train step on TensorFlow and JAX.
"""

import numbers

import keras
from keras import ops


def _check_step(value, name, allow_minus_one=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"Expected `{name}` to be an int. Received: {name}={value!r}"
        )
    value = int(value)
    if allow_minus_one and value == -1:
        return value
    if value < 0:
        expected = ">= 0 or -1 (no end)" if allow_minus_one else ">= 0"
        raise ValueError(
            f"Expected `{name}` {expected}. Received: {name}={value}"
        )
    return value


def _check_sparsity(value, name):
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = None
    if value is None or not 0.0 <= value < 1.0:
        raise ValueError(
            f"Expected `{name}` in [0, 1): the fraction of weights set to "
            f"zero. Received: {name}={value!r}"
        )
    return value


class PruningSchedule:
    """Base class of pruning schedules: `__call__(step) -> (prune, sparsity)`.

    Subclasses implement `sparsity(step)` (a float32 tensor) and keep
    `begin_step`, `end_step` and `frequency`; `__call__` adds TF-MOT's rule
    for the steps on which the masks are updated.

    Args:
        begin_step: int >= 0. First step at which the masks may change.
        end_step: int >= `begin_step`, or -1 for no end. Last such step.
        frequency: int > 0. Update the masks every `frequency` steps.
    """

    def __init__(self, begin_step, end_step=-1, frequency=100):
        self.begin_step = _check_step(begin_step, "begin_step")
        self.end_step = _check_step(end_step, "end_step", allow_minus_one=True)
        if self.end_step != -1 and self.end_step < self.begin_step:
            raise ValueError(
                "Expected `end_step` >= `begin_step` (or -1). Received: "
                f"end_step={self.end_step} with begin_step={self.begin_step}"
            )
        frequency = _check_step(frequency, "frequency")
        if frequency == 0:
            raise ValueError(
                f"Expected `frequency` > 0. Received: frequency={frequency}"
            )
        self.frequency = frequency

    def should_prune(self, step):
        """Bool tensor: do the masks change on `step`?"""
        step = ops.cast(step, "int32")
        in_range = ops.greater_equal(step, self.begin_step)
        if self.end_step != -1:
            in_range = ops.logical_and(
                in_range, ops.less_equal(step, self.end_step)
            )
        on_turn = ops.equal(
            ops.mod(step - self.begin_step, self.frequency), 0
        )
        return ops.logical_and(in_range, on_turn)

    def sparsity(self, step):
        """Float32 tensor: the target fraction of zeros at `step`."""
        raise NotImplementedError

    def __call__(self, step):
        """Return `(should_prune, sparsity)` as tensors for `step`."""
        return self.should_prune(step), self.sparsity(step)

    def get_config(self):
        return {
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


@keras.saving.register_keras_serializable(package="keras_vae")
class ConstantSparsity(PruningSchedule):
    """Prune to a fixed sparsity on every `frequency`-th step in a range.

    Same as `tfmot.sparsity.keras.ConstantSparsity`.

    Args:
        target_sparsity: float in [0, 1). Fraction of weights set to zero.
        begin_step: int >= 0. First step at which the masks may change.
        end_step: int >= `begin_step`, or -1 (default) to prune until the
            end of training.
        frequency: int > 0. Update the masks every `frequency` steps.

    Example:

    >>> from keras_vae.compression import ConstantSparsity
    >>> schedule = ConstantSparsity(0.5, begin_step=0, frequency=10)
    >>> prune, sparsity = schedule(20)
    >>> bool(prune), float(sparsity)
    (True, 0.5)
    """

    def __init__(self, target_sparsity, begin_step, end_step=-1, frequency=100):
        super().__init__(begin_step, end_step, frequency)
        self.target_sparsity = _check_sparsity(
            target_sparsity, "target_sparsity"
        )

    def sparsity(self, step):
        del step
        return ops.convert_to_tensor(self.target_sparsity, "float32")

    def get_config(self):
        return {"target_sparsity": self.target_sparsity, **super().get_config()}


@keras.saving.register_keras_serializable(package="keras_vae")
class PolynomialDecay(PruningSchedule):
    """Raise sparsity from `initial` to `final` along a polynomial.

    Same as `tfmot.sparsity.keras.PolynomialDecay`: with
    `p = clip((step - begin_step) / (end_step - begin_step), 0, 1)`, the
    sparsity is `final + (initial - final) * (1 - p) ** power`, so it grows
    fast at first and levels off at `final_sparsity`.

    Args:
        initial_sparsity: float in [0, 1). Sparsity at `begin_step`.
        final_sparsity: float in [0, 1). Sparsity from `end_step` on.
        begin_step: int >= 0. First step at which the masks may change.
        end_step: int > `begin_step`. Last step at which the masks change.
        power: float. Exponent of the decay (3 as in TF-MOT).
        frequency: int > 0. Update the masks every `frequency` steps.

    Example:

    >>> from keras_vae.compression import PolynomialDecay
    >>> schedule = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100,
    ...                            frequency=10)
    >>> round(float(schedule(100)[1]), 3)
    0.8
    """

    def __init__(
        self,
        initial_sparsity,
        final_sparsity,
        begin_step,
        end_step,
        power=3,
        frequency=100,
    ):
        if end_step == -1:
            raise ValueError(
                "Expected `end_step` >= `begin_step`: `PolynomialDecay` needs "
                f"an end. Received: end_step={end_step}"
            )
        super().__init__(begin_step, end_step, frequency)
        if self.end_step == self.begin_step:
            raise ValueError(
                "Expected `end_step` > `begin_step` for `PolynomialDecay`. "
                f"Received: end_step={end_step}"
            )
        self.initial_sparsity = _check_sparsity(
            initial_sparsity, "initial_sparsity"
        )
        self.final_sparsity = _check_sparsity(final_sparsity, "final_sparsity")
        self.power = float(power)

    def sparsity(self, step):
        progress = ops.cast(step - self.begin_step, "float32") / float(
            self.end_step - self.begin_step
        )
        progress = ops.clip(progress, 0.0, 1.0)
        return (
            (self.initial_sparsity - self.final_sparsity)
            * ops.power(1.0 - progress, self.power)
            + self.final_sparsity
        )

    def get_config(self):
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }


_BY_NAME = {"ConstantSparsity": ConstantSparsity, "PolynomialDecay": PolynomialDecay}


def _from_tfmot(schedule):
    """Our equivalent of a `tfmot.sparsity.keras` schedule, via its config."""
    try:
        from tensorflow_model_optimization.sparsity import keras as tfmot_sparsity
    except ImportError as error:  # pragma: no cover - only with tfmot objects
        raise ImportError(
            "Reading a TF-MOT pruning schedule needs TF-MOT: "
            "`pip install tensorflow-model-optimization tf_keras`."
        ) from error
    if not isinstance(schedule, tfmot_sparsity.PruningSchedule):
        raise ValueError(
            "Expected a `tfmot.sparsity.keras.PruningSchedule`. "
            f"Received: schedule={schedule!r}"
        )
    config = schedule.get_config()
    name = config.get("class_name")
    if name not in _BY_NAME:
        raise ValueError(
            "Only TF-MOT's `ConstantSparsity` and `PolynomialDecay` can be "
            "used as they are; write other schedules as a subclass of "
            "`keras_vae.compression.PruningSchedule`. "
            f"Received: schedule={schedule!r}"
        )
    return _BY_NAME[name](**config["config"])


def get(schedule):
    """Resolve a schedule: ours, a TF-MOT schedule, or a config dict.

    Args:
        schedule: `PruningSchedule`, a `tfmot.sparsity.keras` schedule
            (`ConstantSparsity` or `PolynomialDecay`, converted to ours with
            the same settings), or a serialized schedule dict.

    Example:

    >>> from keras_vae.compression import pruning_schedule
    >>> pruning_schedule.get(pruning_schedule.ConstantSparsity(0.5, 0))
    ConstantSparsity(target_sparsity=0.5, begin_step=0, end_step=-1, frequency=100)
    """
    if isinstance(schedule, PruningSchedule):
        return schedule
    if isinstance(schedule, dict):
        return keras.saving.deserialize_keras_object(schedule)
    module = type(schedule).__module__ or ""
    if module.startswith("tensorflow_model_optimization"):
        return _from_tfmot(schedule)
    raise ValueError(
        "Expected `schedule` to be a `keras_vae.compression.PruningSchedule` "
        "(`ConstantSparsity`, `PolynomialDecay`) or a TF-MOT schedule. "
        f"Received: schedule={schedule!r}"
    )
