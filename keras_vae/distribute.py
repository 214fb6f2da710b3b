"""Distributed training on the engines Keras runs on, chosen by name.

keras-vae does not bring its own distribution engine. A VAE trains on:

- `"mirrored"` (TensorFlow): `tf.distribute.MirroredStrategy`, one replica
  per local device (GPUs, or CPUs split into logical devices);
- `"multi-worker"` (TensorFlow): `tf.distribute.MultiWorkerMirroredStrategy`,
  one process per machine (or per device), configured by the `TF_CONFIG`
  environment variable; on JAX, the processes join through
  `keras.distribution.initialize` (`jax.distributed`) and train with
  `"data-parallel"` over the devices of all of them;
- `"data-parallel"` (JAX): `keras.distribution.DataParallel` over the
  devices of this process, or of all processes once
  `keras.distribution.initialize` has run.

Build and compile the model inside `scope(name)`, then call `fit` as
usual. The `batch_size` given to `fit` is the global batch: each of the
`num_replicas()` replicas computes the gradient of its share and the
shares are averaged, so the update is that of one device training on the
whole batch, with the same learning rate.

What keras-vae does under a TensorFlow strategy with several replicas, and
why (Keras 3.15 alone fails there):

- `fit` and `evaluate` run through `make_replica_function`: Keras' own
  multi-step loop fails under `MirroredStrategy` with
  `steps_per_execution > 1` (`InvalidArgumentError: You must feed a value
  for placeholder tensor ... while/cond/Placeholder`), and its reduction of
  scalar logs fails under `MultiWorkerMirroredStrategy` (`Invalid reduction
  dimension 0 for input with 0 dimensions`). The replacement runs the same
  `train_step`, `steps_per_execution` steps per call, the loop written as
  TensorFlow's distributed-input guide does it.
- XLA (`jit_compile`) is off: one XLA computation cannot use the variables
  of several devices (`Trying to access resource ... located in device
  CPU:1 from device CPU:0`). The fused training executions, which are XLA
  computations, step aside too.
- each replica's loss is divided by the number of replicas
  (`loss_for_replicas`), because the optimizer sums the replicas'
  gradients;
- the reparameterisation noise of an example does not depend on how the
  batch is split (`normal_for_global_batch`), so two replicas train exactly
  as one device does on the same batches.

Only one process should write files: `is_chief()` says which.

Example:

>>> import keras, keras_vae
>>> from keras_vae import distribute
>>> with distribute.scope("mirrored"):  # doctest: +SKIP
...     model = keras_vae.models.mlp_vae((28, 28, 1), latent_dim=16)
...     model.compile(optimizer=keras.optimizers.Adam(1e-3))
>>> # model.fit(x, batch_size=256, epochs=10)  # 256 across all replicas
"""

import contextlib

import keras

#: Names accepted by `get_distribution`, `scope` and `keras-vae train --distribute`.
NAMES = ("mirrored", "multi-worker", "data-parallel")
_BACKEND_NAMES = {
    "tensorflow": ("mirrored", "multi-worker"),
    "jax": ("data-parallel", "multi-worker"),
}


_TF_STRATEGIES = {}


def _check_name(name):
    backend = keras.backend.backend()
    allowed = _BACKEND_NAMES.get(backend, ())
    if name not in allowed:
        hint = {
            "tensorflow": "use 'mirrored' (devices of one machine) or "
                          "'multi-worker' (TF_CONFIG), or KERAS_BACKEND=jax "
                          "for 'data-parallel'",
            "jax": "use 'data-parallel' (devices of this process) or "
                   "'multi-worker' (several processes), or "
                   "KERAS_BACKEND=tensorflow for 'mirrored'",
        }.get(backend, "use the TensorFlow or JAX backend")
        raise ValueError(
            f"Unknown distribution for the {backend} backend. Expected one "
            f"of {allowed}; {hint}. Received: distribute={name!r}"
        )
    return name


def get_distribution(name, devices=None):
    """The distribution object behind a name of `NAMES`.

    Args:
        name: str. `"mirrored"` or `"multi-worker"` on TensorFlow,
            `"data-parallel"` or `"multi-worker"` on JAX.
        devices: list of str or None. Devices to use (`"/gpu:0"`,
            `"/cpu:1"` on TensorFlow; `"gpu:0"` on JAX); None uses all
            GPUs, or without GPUs all (logical) CPU devices.
            Not used by `"multi-worker"`, which takes every device of every
            process.

    Returns:
        A `tf.distribute.Strategy` (TensorFlow; the same object for the
        same name and devices within a process) or a
        `keras.distribution.DataParallel` (JAX).

    Example:

    >>> from keras_vae import distribute
    >>> strategy = distribute.get_distribution("mirrored")  # doctest: +SKIP
    """
    _check_name(name)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if name == "mirrored" and devices is None and not (
                tf.config.list_logical_devices("GPU")):
            # TensorFlow's default is one CPU replica; a CPU split into
            # logical devices gets one replica per device.
            devices = [device.name for device
                       in tf.config.list_logical_devices("CPU")]
        key = (name, tuple(devices or ()))
        # One strategy per process and setting: two strategies over the
        # same devices number their collective operations alike and clash
        # (and a multi-worker strategy can only be created once).
        if key not in _TF_STRATEGIES:
            _TF_STRATEGIES[key] = (
                tf.distribute.MirroredStrategy(devices) if name == "mirrored"
                else tf.distribute.MultiWorkerMirroredStrategy())
        return _TF_STRATEGIES[key]
    if name == "multi-worker":
        # Reads KERAS_DISTRIBUTION_JOB_ADDRESSES, _NUM_PROCESSES and
        # _PROCESS_ID; the devices are then those of all processes. Each
        # process feeds its own share of the data (`process_data`), so
        # Keras must not shard it again.
        keras.distribution.initialize()
        return keras.distribution.DataParallel(auto_shard_dataset=False)
    if devices is None:
        return keras.distribution.DataParallel()
    return keras.distribution.DataParallel(devices=list(devices))


@contextlib.contextmanager
def scope(distribution, devices=None):
    """Context in which to build, compile and train a distributed model.

    Args:
        distribution: str (one of `NAMES`), a `tf.distribute.Strategy` or a
            `keras.distribution.Distribution`.
        devices: list of str or None. As in `get_distribution`.

    Yields:
        The strategy or distribution in use.

    Example:

    >>> import keras_vae
    >>> from keras_vae import distribute
    >>> with distribute.scope("mirrored") as strategy:  # doctest: +SKIP
    ...     model = keras_vae.models.mlp_vae((8, 8, 1), latent_dim=2)
    ...     model.compile(optimizer="adam")
    """
    if isinstance(distribution, str):
        distribution = get_distribution(distribution, devices)
    with distribution.scope():
        yield distribution


def _tf_strategy():
    """The current `tf.distribute` strategy, or None (also on JAX)."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    return tf.distribute.get_strategy() if tf.distribute.has_strategy() else None


def num_replicas():
    """int. Replicas that each compute a share of the global batch.

    Under a TensorFlow strategy (inside its scope or one of its replica
    functions) its `num_replicas_in_sync`; under a JAX
    `keras.distribution` distribution its device count; else 1.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        if context is not None:
            return int(context.num_replicas_in_sync)
        return int(tf.distribute.get_strategy().num_replicas_in_sync)
    distribution = keras.distribution.distribution()
    if distribution is None:
        return 1
    return int(len(distribution.device_mesh.devices.reshape(-1)))


def _task(model=None):
    """`(task_type, task_id, cluster)` of this TF process, or None.

    From the cluster resolver of the strategy `model` was built under (or
    the strategy in scope), else from the `TF_CONFIG` environment variable
    that `MultiWorkerMirroredStrategy` reads.
    """
    import json
    import os

    strategy = None
    if model is not None:
        from keras_vae import _keras_internals

        strategy = _keras_internals.model_distribute_strategy(model)
    strategy = strategy if strategy is not None else _tf_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is not None and getattr(resolver, "task_type", None):
        return resolver.task_type, int(resolver.task_id or 0), (
            resolver.cluster_spec().as_dict()
        )
    try:
        config = json.loads(os.environ.get("TF_CONFIG") or "{}")
        task = config.get("task") or {}
        if config.get("cluster") and task.get("type"):
            return task["type"], int(task.get("index", 0)), config["cluster"]
    except (ValueError, TypeError, AttributeError):
        pass
    return None


def is_chief(model=None):
    """bool. True in the one process that should write models and reports.

    With `MultiWorkerMirroredStrategy` that is the `"chief"` task of the
    cluster (`TF_CONFIG`), or worker 0 when the cluster has no chief; with
    several JAX processes (`keras.distribution.initialize`), process 0;
    otherwise always True.

    Args:
        model: `keras.Model` or None. A model built under the strategy to
            ask; None uses the strategy in scope, then `TF_CONFIG`.

    Example:

    >>> from keras_vae import distribute
    >>> distribute.is_chief()
    True
    """
    return worker_index(model) == 0


def worker_index(model=None):
    """int. Index of this process among the training processes (0 = chief).

    Args:
        model: `keras.Model` or None. As in `is_chief`.
    """
    if keras.backend.backend() == "jax":
        import jax

        return int(jax.process_index())
    task = _task(model) if keras.backend.backend() == "tensorflow" else None
    if task is None:
        return 0
    task_type, task_id, cluster = task
    if task_type == "chief":
        return 0
    if task_type != "worker":  # an evaluator or parameter server
        return -1
    return task_id + (1 if "chief" in cluster else 0)


def save_weights_elsewhere(model):
    """Save `model`'s weights into a temporary folder, then delete them.

    What a worker that is not the chief does when the chief saves: under
    `MultiWorkerMirroredStrategy`, saving reads variables with collective
    operations that every worker must join, or the chief waits forever.

    Args:
        model: `keras.Model`.
    """
    import os
    import tempfile

    with tempfile.TemporaryDirectory(prefix="keras-vae-worker-") as folder:
        model.save_weights(os.path.join(folder, "worker.weights.h5"))


def save_model(model, path, overwrite=False):
    """Save `model` as a `.keras` file from the chief only, atomically.

    Other workers join the save (see `save_weights_elsewhere`) and write
    nothing. Outside multi-worker training it is
    `keras_vae.files.save_model`.

    Args:
        model: `keras.Model`.
        path: str. Destination `.keras` file.
        overwrite: bool. Replace an existing file.

    Returns:
        str or None. `path` on the chief, None elsewhere.
    """
    from keras_vae import files

    if is_chief(model):
        return files.save_model(model, path, overwrite=overwrite)
    save_weights_elsewhere(model)
    return None


def process_data(x, batch_size, y=None):
    """This process's share of in-memory data and of the global batch.

    TensorFlow strategies split every global batch themselves: the arrays
    and `batch_size` are returned unchanged. On JAX, call it inside the
    distribution's scope. With several JAX processes
    (`keras.distribution.initialize`) each `fit` call feeds its process's
    part of the global batch: process `i` of `n` keeps examples
    `i, i + n, ...` and `batch_size // n`. And `DataParallel` needs every
    batch divisible by the devices it feeds, the last one of an epoch too:
    the fewer than one-per-device examples that would make that batch
    uneven are left out (always the same ones).

    Args:
        x: array. Examples, the same in every process.
        batch_size: int. The global batch size, divisible by the number of
            devices.
        y: array or None. Labels, split like `x`.

    Returns:
        tuple `(x, y, batch_size)` for this process.

    Example:

    >>> import numpy as np
    >>> from keras_vae import distribute
    >>> x, y, batch = distribute.process_data(np.zeros((10, 2)), 4)
    >>> x.shape, batch
    ((10, 2), 4)
    """
    if keras.backend.backend() != "jax":
        return x, y, batch_size
    import jax

    processes, index = jax.process_count(), jax.process_index()
    local_devices = max(num_replicas() // processes, 1)
    if batch_size % (processes * local_devices):
        raise ValueError(
            f"Expected a global batch size divisible by the "
            f"{processes * local_devices} devices of the training processes."
            f" Received: batch_size={batch_size}")
    if processes > 1:
        x = x[index::processes]
        y = None if y is None else y[index::processes]
        batch_size //= processes
    if local_devices > 1:
        keep = len(x) - (len(x) % batch_size) % local_devices
        x, y = x[:keep], None if y is None else y[:keep]
    return x, y, batch_size


def _replica_context():
    """The TF replica context of a strategy with several replicas, or None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def loss_for_replicas(loss):
    """A replica's share of the loss whose summed gradients are the mean's.

    TensorFlow optimizers sum the gradients of the replicas, so each
    replica's mean loss is divided by the number of replicas (as Keras does
    for compiled losses). Unchanged outside a multi-replica TF step and on
    JAX, where one program sees the whole batch.

    Args:
        loss: scalar tensor. The replica's mean loss.
    """
    context = _replica_context()
    if context is None:
        return loss
    return loss / keras.ops.cast(context.num_replicas_in_sync, loss.dtype)


def normal_for_global_batch(shape, dtype="float32", seed=None):
    """Standard normal noise whose rows do not depend on the batch split.

    Inside one replica of a TensorFlow strategy, every replica draws the
    noise of the whole global batch with the same seed state (replicas keep
    identical copies of the seed generator) and keeps its own rows, so
    example `i` of the global batch gets the noise it gets on one device.
    The global batch must be split into equal consecutive shares, which is
    what `tf.distribute` does with a batch divisible by the number of
    replicas; a final smaller batch still gets valid noise, only not the
    single-device rows. Elsewhere (one device, JAX, whose programs see the
    whole batch) it is `keras.random.normal(shape, ...)`.

    Args:
        shape: tuple. Shape of this replica's noise, batch first.
        dtype: str. Noise dtype.
        seed: int, `keras.random.SeedGenerator` or None.
    """
    context = _replica_context()
    if context is None:
        return keras.random.normal(shape, dtype=dtype, seed=seed)
    local = shape[0]
    noise = keras.random.normal(
        (local * context.num_replicas_in_sync, *shape[1:]), dtype=dtype,
        seed=seed,
    )
    start = context.replica_id_in_sync_group * local
    return noise[start:start + local]


def model_strategy(model):
    """The TF strategy `model` trains under when it has several replicas.

    Returns None on JAX, without a strategy, and under a single-replica
    strategy (`OneDeviceStrategy`), where Keras' own loops work.
    """
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    from keras_vae import _keras_internals

    strategy = _keras_internals.model_distribute_strategy(model)
    if strategy is None and tf.distribute.has_strategy():
        strategy = tf.distribute.get_strategy()
    if strategy is None:
        return None
    multi_worker = isinstance(
        strategy, tf.distribute.MultiWorkerMirroredStrategy)
    if strategy.num_replicas_in_sync == 1 and not multi_worker:
        return None
    return strategy


def model_scope(model):
    """Context creating variables under the TF strategy `model` was built in.

    Variables that a callback adds during `fit` (pruning masks, ...) are
    otherwise plain variables that every replica would update in turn.
    A no-op context without such a strategy, inside its scope, and on JAX.
    """
    if keras.backend.backend() != "tensorflow":
        return contextlib.nullcontext()
    import tensorflow as tf

    from keras_vae import _keras_internals

    strategy = _keras_internals.model_distribute_strategy(model)
    if strategy is None or (
        tf.distribute.has_strategy() and tf.distribute.get_strategy() is strategy
    ):
        return contextlib.nullcontext()
    return strategy.scope()


def check_jit_compile(model, auto):
    """Turn XLA off under a multi-replica TF strategy, or explain why it must be.

    Args:
        model: compiled `keras.Model`.
        auto: bool. True when `jit_compile` was left on `"auto"`: it is then
            resolved to False. An explicit `jit_compile=True` raises.
    """
    if not model.jit_compile or model_strategy(model) is None:
        return
    if auto:
        model.jit_compile = False
        return
    raise ValueError(
        "XLA (`jit_compile=True`) cannot train under a tf.distribute strategy "
        "with several replicas: one XLA computation cannot use the variables "
        "of several devices. Compile with `jit_compile=False` or leave "
        "`jit_compile='auto'`, which keras-vae turns off under such a "
        "strategy. Received: jit_compile=True with "
        f"{model_strategy(model).num_replicas_in_sync} replicas"
    )


def make_replica_function(model, step_function, fallback):
    """Train or test function running `model.steps_per_execution` steps per call.

    The counterpart, under a multi-replica `tf.distribute` strategy, of
    Keras' TensorFlow train/test function (see the module docstring for why
    Keras' own fails there): each step runs `step_function` (the model's
    `train_step` or `test_step`) on every replica with `strategy.run`, and
    the logs of the last step are averaged over the replicas.

    Args:
        model: compiled `keras_vae.VAE` built under the strategy.
        step_function: callable `data -> logs`, e.g. `model.train_step`.
        fallback: Keras' function, used for iterators that are not
            distributed `tf.data` iterators.

    Returns:
        A callable `function(iterator) -> logs` with the contract of Keras'
        `train_function`: at the end of the data it raises the
        `OutOfRangeError` that Keras' loops turn into `StopIteration`.
    """
    import tensorflow as tf

    strategy = model_strategy(model)
    steps = max(int(model.steps_per_execution), 1)

    def reduce(value):
        # Scalars (the metrics' results) are averaged over the replicas;
        # anything else (a data-check record) is this process's first
        # replica's.
        local = strategy.experimental_local_results(value)[0]
        if local.shape.rank == 0:
            return strategy.reduce("MEAN", value, axis=None)
        return local

    # Inlined (traced at both call sites): a nested `tf.function` called in
    # the loop's conditional branch fails as Keras' loop does.
    def one_step(data):
        outputs = strategy.run(step_function, args=(data,))
        return tf.nest.map_structure(reduce, outputs)

    @tf.function(reduce_retracing=True)
    def run_steps(iterator):
        # As Keras' single-step function: `get_next` raises OutOfRangeError
        # at the end of the data, which `fit` turns into StopIteration.
        logs = one_step(iterator.get_next())
        if steps > 1:
            for _ in tf.range(steps - 1):
                optional = iterator.get_next_as_optional()
                if not optional.has_value():
                    break
                logs = one_step(optional.get_value())
        return logs

    def function(iterator):
        if not isinstance(iterator, tf.distribute.DistributedIterator):
            return fallback(iterator)
        return run_steps(iterator)

    return function


__all__ = [
    "NAMES",
    "check_jit_compile",
    "get_distribution",
    "is_chief",
    "loss_for_replicas",
    "make_replica_function",
    "model_scope",
    "model_strategy",
    "normal_for_global_batch",
    "num_replicas",
    "process_data",
    "save_model",
    "save_weights_elsewhere",
    "scope",
    "worker_index",
]
