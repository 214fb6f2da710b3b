"""Fused training executions for `fit`: one compiled step for every batch.

Keras runs `steps_per_execution` training steps per call of its train
function: on TensorFlow as a `tf.while_loop` in the graph executor, where
every step pulls an optional batch from the `tf.data` iterator, branches
on it and launches the XLA-compiled step on its own; on JAX as a Python
loop over a jitted step. Each distinct batch shape (the last, smaller
batch of an epoch) is a second trace and a second XLA compilation.

On TensorFlow the fused function does the same work in two parts: it
first collects the execution's batches into one `(steps, batch, ...)`
buffer, then runs them all in a single XLA computation (one `while` loop
compiled with the step inside). On JAX, whose dispatch of a jitted step
is cheap, the steps stay one call each (see `_jax_executor`).

On both, when the model computes every example on its own
(`pads_partial_batch`), the last, smaller batch of an epoch is padded to
the full size and its padding rows get a weight of 0, so the one
compiled step serves every batch: a fit traces and compiles the training
step once. Otherwise that batch runs through a second compiled step, as
in Keras. Batches are consumed in the same order and each runs the
model's own `train_step`, so the weights, the metrics and
`optimizer.iterations` are those of Keras' loop (up to float rounding of
the weighted mean); only the execution is faster.

Used by `VAE.make_train_function` when `compile` left `steps_per_execution`
(and, on TensorFlow, `jit_compile`) on `"auto"` and the run qualifies
(XLA on, more than one step per execution, array input, no distribution).
The compiled functions live as long as the train function: a second `fit`
with the same settings reuses them without tracing or compiling again,
and `_compilation_cache` keeps the executables on disk for new processes.
"""

import keras

from keras_vae import _compilation_cache, _data_checks, _keras_internals

# Before any function is traced: TensorFlow reads its XLA flags once.
_compilation_cache.configure()

# Built-in layers that compute each example of a batch on its own (no
# statistics over the batch, no loss scaled by the batch size) and draw
# their random numbers row by row: a batch padded with extra rows gives
# the real rows exactly the values they get alone. Subclasses are not
# trusted (they may override `call`); BatchNormalization is absent on
# purpose (its training statistics are means over the batch).
_PER_EXAMPLE_LAYERS = tuple(
    getattr(keras.layers, name) for name in (
        "InputLayer", "Dense", "EinsumDense", "Embedding",
        "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose",
        "Conv3DTranspose", "DepthwiseConv1D", "DepthwiseConv2D",
        "SeparableConv1D", "SeparableConv2D",
        "Flatten", "Reshape", "Permute", "RepeatVector", "Identity",
        "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax",
        "Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum",
        "Minimum",
        "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D",
        "AveragePooling2D", "AveragePooling3D", "GlobalMaxPooling1D",
        "GlobalMaxPooling2D", "GlobalMaxPooling3D", "GlobalAveragePooling1D",
        "GlobalAveragePooling2D", "GlobalAveragePooling3D",
        "UpSampling1D", "UpSampling2D", "UpSampling3D", "ZeroPadding1D",
        "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D",
        "Cropping3D", "LayerNormalization", "GroupNormalization",
        "UnitNormalization", "Dropout", "GaussianNoise", "GaussianDropout",
    ) if hasattr(keras.layers, name)
)
# The metrics every VAE logs; others (`compile(metrics=...)`) would count
# padding rows, so a model with them keeps a separate partial-batch step.
_OWN_METRICS = frozenset({"loss", "reconstruction_loss", "kl_loss", "elbo"})


def fused_training_supported(model):
    """True when `fit` can use the fused train function for `model`."""
    if (model.run_eagerly or not model.jit_compile
            or int(model.steps_per_execution) <= 1
            or getattr(model, "_fused_batch_size", None) is None):
        return False
    backend = keras.backend.backend()
    if backend == "jax":
        return keras.distribution.distribution() is None
    if backend != "tensorflow":
        return False
    import tensorflow as tf

    # A model built or trained under a `tf.distribute` strategy keeps
    # Keras' loop, which distributes the steps over the replicas.
    return (_keras_internals.model_distribute_strategy(model) is None
            and not tf.distribute.has_strategy())


def _layers(model):
    """The layers of the encoder and decoder, nested models opened."""
    stack = [model.encoder, model.decoder]
    while stack:
        layer = stack.pop()
        if isinstance(layer, keras.Sequential) or (
                type(layer).__name__ == "Functional"):
            stack.extend(layer.layers)
        else:
            yield layer


def pads_partial_batch(model):
    """True when a padded, 0-weighted last batch trains like the batch alone.

    That holds when every layer of the encoder and decoder is a built-in
    per-example layer without an activity regularizer, the model logs only
    its own metrics and, on JAX, random bits are drawn per position
    (`jax_threefry_partitionable`, the default), so that the rows of a
    larger draw start with the rows of a smaller one.
    """
    if {metric.name for metric in _logged_metrics(model)} != _OWN_METRICS:
        return False
    if keras.backend.backend() == "jax":
        import jax

        if not jax.config.jax_threefry_partitionable:
            return False
    for layer in _layers(model):
        if type(layer) not in _PER_EXAMPLE_LAYERS:
            return False
        if getattr(layer, "activity_regularizer", None) is not None:
            return False
    return True


def _logged_metrics(model):
    """The metrics whose results the train step returns.

    The fused path only takes validated arrays, so the in-step data check
    of streaming input is off for training; it may still be a metric of
    the model (for streaming validation data), which the step then does
    not log.
    """
    return [metric for metric in model.metrics
            if metric.name != _data_checks.LOG_KEY]


def _zero_logs(model):
    """`{name: zeros}` shaped like the train step's logs (float32)."""
    import numpy as np

    return {
        metric.name: np.zeros(
            np.shape(keras.ops.convert_to_numpy(metric.result())), "float32")
        for metric in _logged_metrics(model)
    }


def loops_in_xla(model):
    """True when the steps of an execution may run as one XLA `while` loop.

    Not for convolutional models (a kernel of rank 3 or more): XLA's CPU
    backend runs a convolution inside a loop body many times slower than
    alone (a conv VAE on TensorFlow: 20x per step), so their steps stay
    one compiled call each.
    """
    return all(len(variable.shape) <= 2
               for variable in model.trainable_variables)


def make_fused_train_function(model, batch_size, fallback):
    """Train function running `model.steps_per_execution` steps per call.

    Args:
        model: a compiled `keras_vae.VAE` (or subclass).
        batch_size: int, the size of a full batch.
        fallback: Keras' own train function, used on TensorFlow for
            iterators or elements the fused function does not handle (no
            `tf.data` iterator, `None` entries, ragged or sparse tensors).

    Returns:
        A callable with the contract of Keras' `train_function` for the
        backend: `function(iterator) -> logs` on TensorFlow,
        `function(state, iterator) -> (logs, state)` on JAX; it raises
        `StopIteration` when the iterator had no batch left.
    """
    steps = int(model.steps_per_execution)
    batch_size = int(batch_size)
    pad = pads_partial_batch(model)
    if keras.backend.backend() == "jax":
        run = _jax_executor(model, steps, batch_size, pad)

        def function(state, iterator):
            return run(state, iterator)

        return function
    run, handled = _tf_executor(model, steps, batch_size, pad,
                                _zero_logs(model))

    def function(iterator):
        if not handled(iterator):
            return fallback(iterator)
        return run(iterator)

    return function


def _weighted(data, size, batch_size, xp):
    """`(x, y, weights)` of a padded batch whose first `size` rows are real.

    Without sample weights every real example weighs `1 / size`: the
    weighted mean is the batch mean and the batch counts once in the
    epoch's metrics, as an unweighted batch does in Keras. With sample
    weights, the padding rows get 0. The padding rows are copies of the
    batch's first example, not zeros: data the likelihood accepts, so
    their terms are finite and a weight of 0 removes them exactly (zeros
    outside a likelihood's support would give `0 * inf = NaN`).
    """
    data = tuple(data) if isinstance(data, (tuple, list)) else (data,)
    real = xp.arange(batch_size) < size
    if len(data) == 3:
        weights = data[2] * xp.asarray(real, data[2].dtype)
    else:
        weights = xp.asarray(real, "float32") / xp.asarray(size, "float32")
    return (data[0], data[1] if len(data) > 1 else None, weights)


# ------------------------------------------------------------ TensorFlow
def _tf_executor(model, steps, batch_size, pad, zero_logs):
    import tensorflow as tf

    loop_in_xla = loops_in_xla(model)

    # Keras' own steps are not converted by AutoGraph either: the model
    # code is backend-neutral Python (no tensor-dependent `if`), and
    # converting it costs seconds per trace.
    @tf.function(autograph=False)
    def collect(iterator):
        """Up to `steps` batches, padded: `(batches, count, last_size)`.

        `batches` is a structure of `(steps, batch, ...)` tensors of which
        the first `count` rows are batches; with `last_size` > 0 the last
        of them holds only that many real examples (the end of the data).
        """
        full_spec = _full_spec(iterator.element_spec, batch_size)
        arrays = tf.nest.map_structure(
            lambda s: tf.TensorArray(s.dtype, size=steps,
                                     element_shape=s.shape),
            full_spec,
        )

        def cond(index, count, arrays, last_size):
            return tf.logical_and(index < steps, last_size == 0)

        def body(index, count, arrays, last_size):
            optional = iterator.get_next_as_optional()

            def no_batch():
                # The end of the data: stop without a batch.
                return count, arrays, tf.constant(-1)

            def got_batch():
                data = optional.get_value()
                size = tf.shape(tf.nest.flatten(data)[0])[0]
                # Every batch is padded to the full shape (a no-op for full
                # ones) with copies of its first example and written at
                # `count`. A smaller batch ends the epoch. (`fit` only
                # fuses array input, whose batches are never larger than
                # `batch_size`.)
                padded = tf.nest.map_structure(
                    lambda t, s: tf.ensure_shape(
                        tf.concat([t, tf.gather(
                            t, tf.zeros([batch_size - size], "int32"))], 0),
                        s.shape),
                    data, full_spec,
                )
                written = tf.nest.map_structure(
                    lambda array, t: array.write(count, t), arrays, padded
                )
                return (count + 1, written,
                        tf.where(size == batch_size, 0, size))

            count, arrays, last_size = tf.cond(
                optional.has_value(), got_batch, no_batch)
            return index + 1, count, arrays, last_size

        _, count, arrays, last_size = tf.while_loop(
            cond, body,
            (tf.constant(0), tf.constant(0), arrays, tf.constant(0)),
        )
        batches = tf.nest.map_structure(lambda array: array.stack(), arrays)
        return batches, count, tf.maximum(last_size, 0)

    def as_float(new_logs, names):
        return {name: tf.cast(new_logs[name], "float32") for name in names}

    def build():
        """The compiled functions: new ones have new names (see `run`)."""

        def step_logs(data):
            return model.train_step(data)

        @tf.function(jit_compile=True, autograph=False)
        def run_batches(batches, count, last_size):
            # Runs the first `count` batches; with padding, the last one's
            # rows past `last_size` (if > 0) weigh nothing.
            def body(index, logs):
                data = tf.nest.map_structure(lambda t: t[index], batches)
                if pad:
                    size = tf.where(
                        tf.logical_and(index == count - 1, last_size > 0),
                        last_size, batch_size)
                    data = _weighted(data, size, batch_size, _TensorOps)
                return index + 1, as_float(step_logs(data), logs)

            _, logs = tf.while_loop(
                lambda index, _: index < count, body,
                (tf.constant(0), {name: tf.constant(value) for name, value
                                  in zero_logs.items()}),
            )
            return logs

        one_step = tf.function(step_logs, jit_compile=True,
                               reduce_retracing=True, autograph=False)

        @tf.function(jit_compile=True, autograph=False)
        def one_padded_step(data, size):
            return step_logs(_weighted(data, size, batch_size, _TensorOps))

        return run_batches, one_step, one_padded_step

    compiled = {}

    def prepare(element_spec):
        """Trace and compile before any batch is consumed.

        With the persistent XLA cache on, the program is compiled (or
        loaded) here on zero batches, which trains nothing: a damaged
        cache entry fails this call, and the cache is then emptied and
        the program compiled afresh under new function names, so that no
        batch is lost.
        """
        _build_optimizer(model)
        (compiled["run_batches"], compiled["one_step"],
         compiled["one_padded_step"]) = build()
        if not _compilation_cache.directory() or not loop_in_xla:
            return
        zeros = tf.nest.map_structure(
            lambda s: tf.zeros((steps, *s.shape), s.dtype),
            _full_spec(element_spec, batch_size))
        nothing = tf.constant(0)
        try:
            compiled["run_batches"](zeros, nothing, nothing)
        except tf.errors.OpError:
            _compilation_cache.clear()
            (compiled["run_batches"], compiled["one_step"],
             compiled["one_padded_step"]) = build()
            compiled["run_batches"](zeros, nothing, nothing)

    def handled(iterator):
        if not isinstance(iterator, tf.data.Iterator):
            return False
        specs = tf.nest.flatten(iterator.element_spec)
        return bool(specs) and all(
            isinstance(s, tf.TensorSpec) and s.shape.rank
            and s.shape[1:].is_fully_defined()
            for s in specs
        )

    def run(iterator):
        if not compiled:
            prepare(iterator.element_spec)
        batches, count, last_size = collect(iterator)
        if int(count) == 0:
            raise StopIteration
        if not loop_in_xla:
            return run_each(batches, int(count), int(last_size))
        if pad:
            return compiled["run_batches"](batches, count, last_size)
        # The smaller last batch runs alone, through its own compiled step.
        partial = int(last_size) > 0
        full_count = count - int(partial)
        logs = None
        if int(full_count) > 0:
            logs = compiled["run_batches"](batches, full_count,
                                           tf.constant(0))
        if partial:
            data = tf.nest.map_structure(
                lambda t: t[int(count) - 1][:int(last_size)], batches)
            new_logs = compiled["one_step"](data)
            logs = as_float(new_logs, logs or new_logs)
        return logs

    def run_each(batches, count, last_size):
        # One call of a compiled step per batch, as in Keras' loop.
        logs = None
        for index in range(count):
            data = tf.nest.map_structure(
                lambda t, index=index: t[index], batches)
            size = last_size if index == count - 1 and last_size else (
                batch_size)
            if pad:
                logs = compiled["one_padded_step"](data, tf.constant(size))
                continue
            if size < batch_size:
                data = tf.nest.map_structure(
                    lambda t, size=size: t[:size], data)
            logs = compiled["one_step"](data)
        return as_float(logs, logs)

    return run, handled


def _full_spec(element_spec, batch_size):
    import tensorflow as tf

    return tf.nest.map_structure(
        lambda s: tf.TensorSpec((batch_size, *s.shape[1:]), s.dtype),
        element_spec,
    )


def _build_optimizer(model):
    """Create the optimizer's variables before the step is traced.

    Keras' TensorFlow trainer leaves them to the first trace of the step;
    `tf.function` then lifts them out and traces the step a second time.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)


class _TensorOps:
    """The numpy names `_weighted` uses, for TensorFlow tensors."""

    @staticmethod
    def arange(n):
        import tensorflow as tf

        return tf.range(n)

    @staticmethod
    def asarray(value, dtype):
        import tensorflow as tf

        return tf.cast(value, dtype)


# ------------------------------------------------------------------- JAX
def _jax_executor(model, steps, batch_size, pad):
    """The JAX train function: one jitted step for every batch.

    Keras' JAX loop already runs a jitted step per batch; what it pays
    for is a second trace and compilation for the last, smaller batch of
    an epoch. Here that batch is padded (on the host) and weighted, so
    the one compiled step serves it. The steps are not fused into a
    `fori_loop`: XLA's CPU backend runs convolutions inside a loop body
    several times slower than alone, and JAX's dispatch of a jitted step
    is cheap next to the step itself.
    """
    import jax
    import numpy as np

    def step(state, data):
        return model.train_step(state, data)

    def padded_step(state, data, size):
        return step(state, _weighted(data, size, batch_size, jax.numpy))

    # `size` is traced (not static): one program for every batch size.
    run_padded = jax.jit(padded_step, donate_argnums=0)
    run_alone = jax.jit(step, donate_argnums=0)

    def pad_rows(array, size):
        # Copies of the first example (see `_weighted`).
        array = np.asarray(array)
        return np.concatenate(
            [array, np.repeat(array[:1], batch_size - size, axis=0)])

    def run(state, iterator):
        logs = None
        for _ in range(steps):
            try:
                data = next(iterator)
            except StopIteration:
                break
            if not pad:
                logs, state = run_alone(state, data)
                continue
            size = len(jax.tree.leaves(data)[0])
            if size < batch_size:
                data = jax.tree.map(
                    lambda t, size=size: pad_rows(t, size), data)
            logs, state = run_padded(state, data, size)
        if logs is None:
            raise StopIteration
        return logs, state

    return run


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
        keras.backend.backend() == "tensorflow"
        and set(options) <= _DATASET_FIT_ARGUMENTS
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
