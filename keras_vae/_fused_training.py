"""Fused training executions for `fit` on the TensorFlow backend.

Keras runs `steps_per_execution` training steps per call of its train
function as a `tf.while_loop` in TensorFlow's graph executor: every step
pulls an optional batch from the `tf.data` iterator, branches on it and
launches the XLA-compiled step on its own. On a small model that machinery
costs as much as the step's arithmetic (see `benchmarks/results.md`).

The fused function does the same work in two parts: it first collects the
execution's batches from the iterator into one `(steps, batch, ...)`
tensor, then runs all the full batches in a single XLA computation (one
`while` loop compiled with the step inside). A final partial batch (the
end of an epoch) runs afterwards through an ordinary XLA step. Batches are
consumed in the same order and each runs the model's own `train_step`, so
the weights, the metrics and `optimizer.iterations` are those of Keras'
loop; only the execution is faster.

Used by `VAE.make_train_function` when `compile` left `steps_per_execution`
and `jit_compile` on `"auto"` and the run qualifies (TensorFlow backend,
XLA on, more than one step per execution, no distribution strategy).
"""

import keras

from keras_vae import _keras_internals


def fused_training_supported(model):
    """True when `fit` can use the fused train function for `model`."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return (
        not model.run_eagerly
        and bool(model.jit_compile)
        and int(model.steps_per_execution) > 1
        and getattr(model, "_fused_batch_size", None) is not None
        # A model built or trained under a `tf.distribute` strategy keeps
        # Keras' loop, which distributes the steps over the replicas.
        and _keras_internals.model_distribute_strategy(model) is None
        and not tf.distribute.has_strategy()
    )


def make_fused_train_function(model, batch_size, fallback):
    """Train function running `model.steps_per_execution` steps per call.

    Args:
        model: a compiled `keras_vae.VAE` (or subclass) on TensorFlow.
        batch_size: int, the size of a full batch; batches of another size
            (the last of an epoch) take the ordinary one-step path.
        fallback: Keras' own train function, used for iterators or
            elements the fused function does not handle (no `tf.data`
            iterator, `None` entries, ragged or sparse tensors).

    Returns:
        A callable `function(iterator) -> logs` with the contract of Keras'
        TensorFlow `train_function`: it raises `StopIteration` when the
        iterator had no batch left.
    """
    import tensorflow as tf

    steps = int(model.steps_per_execution)
    batch_size = int(batch_size)

    def step_logs(data):
        return model.train_step(data)

    one_step = tf.function(step_logs, jit_compile=True, reduce_retracing=True)

    def zero_logs():
        return {metric.name: tf.zeros(tf.shape(metric.result()), "float32")
                for metric in model.metrics}

    @tf.function(jit_compile=True)
    def run_full_batches(batches, count):
        # `batches` is a structure of (steps, batch, ...) tensors of which
        # the first `count` rows are real batches.
        def body(index, logs):
            data = tf.nest.map_structure(lambda t: t[index], batches)
            new_logs = step_logs(data)
            return index + 1, {name: tf.cast(new_logs[name], "float32")
                               for name in logs}

        _, logs = tf.while_loop(
            lambda index, _: index < count, body,
            (tf.constant(0), zero_logs()),
        )
        return logs

    @tf.function
    def fused(iterator):
        spec = iterator.element_spec
        full_spec = tf.nest.map_structure(
            lambda s: tf.TensorSpec((batch_size, *s.shape[1:]), s.dtype), spec
        )
        arrays = tf.nest.map_structure(
            lambda s: tf.TensorArray(s.dtype, size=steps,
                                     element_shape=s.shape),
            full_spec,
        )
        partial = tf.nest.map_structure(
            lambda s: tf.zeros(s.shape, s.dtype), full_spec
        )

        def cond(index, count, arrays, partial, partial_size, done):
            return tf.logical_and(index < steps, tf.logical_not(done))

        def body(index, count, arrays, partial, partial_size, done):
            optional = iterator.get_next_as_optional()

            def no_batch():
                return count, arrays, partial, partial_size, tf.constant(True)

            def got_batch():
                data = optional.get_value()
                size = tf.shape(tf.nest.flatten(data)[0])[0]
                # Every batch is padded to the full shape (a no-op for full
                # ones) and written at `count`; only a full batch advances
                # `count`. A smaller batch ends the epoch: it stays in
                # `partial` for the one-step path. (`fit` only fuses numpy
                # input, whose batches are never larger than `batch_size`.)
                padded = tf.nest.map_structure(
                    lambda t, s: tf.ensure_shape(
                        tf.pad(t, [[0, batch_size - size]]
                               + [[0, 0]] * (len(s.shape) - 1)),
                        s.shape),
                    data, full_spec,
                )
                is_full = tf.equal(size, batch_size)
                written = tf.nest.map_structure(
                    lambda array, t: array.write(count, t), arrays, padded
                )
                return (
                    count + tf.cast(is_full, "int32"),
                    written,
                    padded,
                    tf.where(is_full, 0, size),
                    tf.logical_not(is_full),
                )

            count, arrays, partial, partial_size, done = tf.cond(
                optional.has_value(), got_batch, no_batch
            )
            return index + 1, count, arrays, partial, partial_size, done

        _, count, arrays, partial, partial_size, _ = tf.while_loop(
            cond, body,
            (tf.constant(0), tf.constant(0), arrays, partial,
             tf.constant(0), tf.constant(False)),
        )
        batches = tf.nest.map_structure(lambda array: array.stack(), arrays)
        logs = tf.cond(
            count > 0,
            lambda: run_full_batches(batches, count),
            zero_logs,
        )

        def partial_step():
            data = tf.nest.map_structure(lambda t: t[:partial_size], partial)
            new_logs = one_step(data)
            return {name: tf.cast(new_logs[name], "float32") for name in logs}

        logs = tf.cond(partial_size > 0, partial_step, lambda: logs)
        return count + tf.cast(partial_size > 0, "int32"), logs

    def handled(iterator):
        if not isinstance(iterator, tf.data.Iterator):
            return False
        specs = tf.nest.flatten(iterator.element_spec)
        return bool(specs) and all(
            isinstance(s, tf.TensorSpec) and s.shape.rank
            and s.shape[1:].is_fully_defined()
            for s in specs
        )

    def function(iterator):
        if not handled(iterator):
            return fallback(iterator)
        ran, logs = fused(iterator)
        if int(ran) == 0:
            raise StopIteration
        return logs

    return function


# `fit` options the in-memory dataset path reproduces; any other (a
# validation split, a number of steps per epoch) keeps Keras' own array
# handling. The arrays themselves (examples, labels, sample weights) are
# validated numpy arrays prepared by `VAE.fit`.
_DATASET_FIT_ARGUMENTS = frozenset({
    "batch_size", "epochs", "verbose", "callbacks", "shuffle",
    "initial_epoch", "validation_data", "validation_freq",
    "validation_batch_size", "validation_steps",
})


def can_use_in_memory_dataset(options):
    """True when `fit(arrays, **options)` may use `in_memory_dataset`."""
    return (
        set(options) <= _DATASET_FIT_ARGUMENTS
        and options.get("shuffle", True) in (True, False)
    )


def in_memory_dataset(arrays, batch_size, shuffle=True, seed=None):
    """Batches of numpy arrays as a lean `tf.data.Dataset` of tuples.

    `arrays` is one array (the dataset yields `(x,)`) or a tuple of arrays
    with the same number of examples, e.g. `(x, one_hot_labels)` or
    `(x, labels, sample_weight)`, yielded as such. The arrays become
    tensors; each epoch draws a fresh permutation of the example indices
    and every batch is one `gather` per array. The shuffling seed is
    `seed`, or drawn from numpy's global generator, so that
    `keras.utils.set_random_seed` makes the order reproducible. Unlike
    Keras' array adapter there is no parallel map and no autotuning, whose
    helper threads compete with the training step for the cores of a small
    machine; one batch is prefetched.
    """
    import numpy as np
    import tensorflow as tf

    if not isinstance(arrays, tuple):
        arrays = (arrays,)
    count = len(arrays[0])
    indices = tf.data.Dataset.range(count)
    if shuffle:
        if seed is None:
            seed = int(np.random.randint(2**31 - 1))
        indices = indices.shuffle(count, seed=seed,
                                  reshuffle_each_iteration=True)
    indices = indices.batch(batch_size)
    data = tf.data.Dataset.from_tensors(
        tuple(tf.constant(array) for array in arrays)).repeat()
    dataset = tf.data.Dataset.zip((indices, data)).map(
        lambda index, tensors: tuple(tf.gather(t, index) for t in tensors)
    )
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.apply_default_optimizations = False
    return dataset.with_options(options).prefetch(1)
