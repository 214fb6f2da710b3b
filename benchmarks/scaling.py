"""How keras-vae training time grows with data set size and batch size.

keras-vae's default `fit` (TensorFlow backend, MLP 784-512-256-16, Adam
1e-3), each run a fresh process:

- data set size: 1k, 2k and 4k MNIST-5k training images, and a synthetic
  60k set (MNIST-5k tiled with pixel noise), batch 128;
- batch size: 32, 64, 128, 256 and 512 on the 4k images.

Reports seconds per epoch (after the first), samples per second, the first
epoch's extra (compilation) time and whether `fit` chose XLA, and draws
`benchmarks/scaling.png`.

Devices and workers (`distributed`): the same MLP VAE on the 4k images,
global batch 128, images per second with 1 and 2 devices or worker
processes on this machine, each setting a fresh process:

- TensorFlow, one device: the default `fit` as it runs for
  `XLA_MIN_STEPS` steps or more (fused XLA executions; the child lowers
  that threshold) and
  Keras' loop without XLA (what each replica runs under a strategy, where
  one XLA computation cannot span devices);
- TensorFlow `MirroredStrategy` on 2 logical CPU devices, 32 and 1 steps
  per execution, and `MultiWorkerMirroredStrategy` with 2 worker
  processes (TF_CONFIG on localhost); for reference, a plain Keras
  autoencoder with the same layer sizes under the same strategy, through
  Keras' own loop (what the strategy costs without any keras-vae code);
- JAX, one device; `DataParallel` on 2 host devices; and 2 processes
  joined by `jax.distributed` (gloo CPU collectives).

On a 2-core machine the devices share the same cores, so these figures
measure what distribution costs, not what it gains on real devices.

    .venv/bin/python benchmarks/scaling.py --epochs 3
    .venv/bin/python benchmarks/scaling.py --distributed-only --epochs 3 --readme
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common
import train_speed

SIZES = (1000, 2000, 4000, 60000)
BATCH_SIZES = (32, 64, 128, 256, 512)


def _row(record, **extra):
    row = {key: record[key] for key in (
        "seconds_per_epoch", "samples_per_second",
        "first_epoch_extra_seconds", "jit_compile", "steps_per_execution")}
    row.update(extra)
    return row


def benchmark(epochs=3, sizes=SIZES, batch_sizes=BATCH_SIZES, log=print):
    """Run every setting once; returns the two series."""
    result = {"epochs": epochs, "dataset_size": [], "batch_size": []}
    for size in sizes:
        dataset = "synthetic" if size > 4000 else "mnist5k"
        record = train_speed.run_candidate_in_child(
            "keras_vae", epochs, train_size=size, dataset=dataset)
        result["dataset_size"].append(_row(record, train_size=size,
                                           dataset=dataset, batch_size=128))
        log(f"  scaling n={size:6d}: {record['seconds_per_epoch']:.2f} s/epoch"
            f", {record['samples_per_second']:.0f} samples/s, "
            f"XLA={record['jit_compile']}")
    for batch_size in batch_sizes:
        record = train_speed.run_candidate_in_child(
            "keras_vae", epochs, train_size=4000, batch_size=batch_size)
        result["batch_size"].append(_row(record, train_size=4000,
                                         batch_size=batch_size))
        log(f"  scaling batch={batch_size:4d}: "
            f"{record['samples_per_second']:.0f} samples/s, "
            f"XLA={record['jit_compile']}")
    return result


#: (name, backend, mode, devices or workers, steps per execution or None).
DISTRIBUTED_SETTINGS = (
    ("TF 1 device, default fit (fused XLA)", "tensorflow", "fused", 1, None),
    ("TF 1 device, Keras loop, no XLA", "tensorflow", "keras_loop", 1, 32),
    ("TF MirroredStrategy 2 devices, 32 steps/exec", "tensorflow",
     "mirrored", 2, 32),
    ("TF MirroredStrategy 2 devices, 1 step/exec", "tensorflow",
     "mirrored", 2, 1),
    ("Reference: plain Keras autoencoder of the same shape, Keras' loop, "
     "MirroredStrategy 2 devices", "tensorflow", "mirrored_plain_keras", 2,
     1),
    ("TF MultiWorkerMirrored 2 workers", "tensorflow", "multi_worker", 2,
     None),
    ("JAX 1 device", "jax", "single", 1, None),
    ("JAX DataParallel 2 devices", "jax", "data_parallel", 2, None),
    ("JAX 2 processes (jax.distributed)", "jax", "multi_process", 2, None),
)


def distributed_child(mode, devices, steps_per_execution, epochs,
                      train_size=4000, batch_size=128):
    """Train in this process as `mode` says; images/s after epoch 1."""
    import time

    if mode in ("mirrored", "mirrored_plain_keras"):
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    import contextlib

    import keras

    import keras_vae
    from keras_vae import distribute

    if mode == "fused":
        # The default fit turns XLA (and with it the fused executions) on
        # for runs of at least `XLA_MIN_STEPS` steps; this short run
        # measures what such a run gets.
        from keras_vae import vae

        vae.XLA_MIN_STEPS = 0

    distribution = None
    if mode in ("mirrored", "mirrored_plain_keras"):
        distribution = distribute.get_distribution("mirrored")
    elif mode in ("multi_worker", "multi_process"):
        distribution = distribute.get_distribution("multi-worker")
    elif mode == "data_parallel":
        distribution = distribute.get_distribution("data-parallel")
    keras.utils.set_random_seed(0)
    (x, _), _ = keras_vae.datasets.load("mnist5k")
    x = x[:train_size]
    seconds = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.start)

    scope = (distribution.scope() if distribution is not None
             else contextlib.nullcontext())
    with scope:
        replicas = distribute.num_replicas()
        # Each of several JAX processes feeds its own share.
        x, _, local_batch = distribute.process_data(x, batch_size)
        if mode == "mirrored_plain_keras":
            # What the strategy costs any Keras model: no keras-vae code.
            model = _plain_autoencoder(x.shape[1:])
            flat = x.reshape(len(x), -1)
            model.fit(flat, flat, batch_size=local_batch, epochs=epochs,
                      verbose=0, callbacks=[Timer()])
        else:
            model = keras_vae.models.mlp_vae(x.shape[1:], latent_dim=16,
                                             seed=0)
            options = {}
            if mode == "keras_loop":
                options = {"jit_compile": False,
                           "steps_per_execution": steps_per_execution}
            elif steps_per_execution is not None:
                options = {"steps_per_execution": steps_per_execution}
            model.compile(optimizer=keras.optimizers.Adam(1e-3), **options)
            model.fit(x, batch_size=local_batch, epochs=epochs, verbose=0,
                      callbacks=[Timer()])
    steady = seconds[1:] or seconds
    examples = train_size
    return {"images_per_second": examples * len(steady) / sum(steady),
            "first_epoch_seconds": seconds[0], "replicas": replicas,
            "fused": "make_fused_train_function" in getattr(
                model.train_function, "__qualname__", ""),
            "chief": distribute.is_chief()}


def _plain_autoencoder(input_shape, hidden_units=(512, 256), latent_dim=16):
    """A plain Keras MLP autoencoder with the MLP VAE's layer sizes.

    Compiled for Keras' own loop (one step per execution, no XLA), the
    only multi-step setting Keras 3.15 runs under `MirroredStrategy`.
    """
    import math

    import keras

    inputs = keras.Input((math.prod(input_shape),))
    hidden = inputs
    for units in hidden_units:
        hidden = keras.layers.Dense(units, activation="relu")(hidden)
    hidden = keras.layers.Dense(latent_dim)(hidden)
    for units in reversed(hidden_units):
        hidden = keras.layers.Dense(units, activation="relu")(hidden)
    outputs = keras.layers.Dense(math.prod(input_shape),
                                 activation="sigmoid")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="binary_crossentropy", steps_per_execution=1,
                  jit_compile=False)
    return model


def _cluster_child(backend, mode, epochs, train_size):
    """Two processes on localhost; the chief's record."""
    import subprocess

    import multi_worker

    ports = multi_worker.free_ports(2)
    processes = []
    for index in range(2):
        env = _common.child_env(backend)
        env.update(multi_worker.cluster_env(backend, ports, index))
        processes.append(subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--child", mode,
             "2", "0", str(epochs), str(train_size)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env, cwd=_common.REPO_DIR))
    records = []
    for process in processes:
        out, err = process.communicate(timeout=3600)
        if process.returncode != 0:
            raise RuntimeError(f"{mode} worker failed:\n{err[-3000:]}")
        records.append(json.loads(
            [line for line in out.splitlines() if line.startswith("{")][-1]))
    return next(record for record in records if record["chief"])


def distributed(epochs=3, train_size=4000, settings=DISTRIBUTED_SETTINGS,
                log=print):
    """Images/s with 1 and 2 devices or workers, TF and JAX."""
    rows = []
    for name, backend, mode, devices, steps in settings:
        try:
            if mode in ("multi_worker", "multi_process"):
                record = _cluster_child(backend, mode, epochs, train_size)
            else:
                # JAX sees one CPU device unless told to split the host.
                env = ({"XLA_FLAGS": "--xla_force_host_platform_device_count"
                        f"={devices}"} if backend == "jax" else None)
                record = _common.run_child(
                    "scaling", [mode, devices, steps or 0, epochs,
                                train_size], backend=backend, timeout=3600,
                    env=env)
        except (RuntimeError, OSError, ValueError) as error:
            record = {"error": str(error)[-500:]}
        record.update(name=name, backend=backend, mode=mode, devices=devices)
        rows.append(record)
        log(f"  {name}: " + (f"{record['images_per_second']:.0f} images/s"
                             if "images_per_second" in record
                             else f"failed: {record['error'][-200:]}"))
    return rows


def plot(result, path):
    """Panels: s/epoch against n, images/s against batch, and by devices."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in result.get("distributed") or []
            if "images_per_second" in row]
    figure, axes = plt.subplots(1, 3 if rows else 2,
                                figsize=(16 if rows else 10, 4))
    left, right = axes[0], axes[1]
    sizes = [row["train_size"] for row in result["dataset_size"]]
    seconds = [row["seconds_per_epoch"] for row in result["dataset_size"]]
    left.loglog(sizes, seconds, "o-", label="keras-vae fit")
    if sizes:
        per_example = seconds[0] / sizes[0]
        left.loglog(sizes, [per_example * n for n in sizes], "--",
                    color="grey", label="linear in n")
    left.set_xlabel("training images")
    left.set_ylabel("seconds per epoch")
    left.set_title("Epoch time vs data set size (batch 128)")
    left.legend()
    batches = [row["batch_size"] for row in result["batch_size"]]
    speed = [row["samples_per_second"] for row in result["batch_size"]]
    right.semilogx(batches, speed, "o-", base=2)
    right.set_xlabel("batch size")
    right.set_ylabel("training images per second")
    right.set_title("Throughput vs batch size (4k images)")
    if rows:
        axis = axes[2]
        colors = ["tab:orange" if row["backend"] == "tensorflow"
                  else "tab:blue" for row in rows]
        axis.barh(range(len(rows)),
                  [row["images_per_second"] for row in rows], color=colors)
        axis.set_yticks(range(len(rows)))
        axis.set_yticklabels([row["name"] for row in rows], fontsize=7)
        axis.invert_yaxis()
        axis.set_xlabel("training images per second")
        axis.set_title("1 vs 2 devices / workers (batch 128)")
    for axis in (left, right):
        axis.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


README_MARKERS = ("<!-- scaling_distributed:start -->",
                  "<!-- scaling_distributed:end -->")


def distributed_markdown(rows):
    """The devices-and-workers table, from the rows of `distributed`."""
    lines = ["| setting | replicas | images/s | vs TF 1 device, default "
             "fit | first epoch s |", "|---|---|---|---|---|"]
    baseline = next((row["images_per_second"] for row in rows
                     if row.get("mode") == "fused"
                     and "images_per_second" in row), None)
    for row in rows:
        if "images_per_second" in row:
            ratio = (f"{row['images_per_second'] / baseline:.2f}x"
                     if baseline else "-")
            lines.append(
                f"| {row['name']} | {row['replicas']} | "
                f"{row['images_per_second']:.0f} | {ratio} | "
                f"{row['first_epoch_seconds']:.1f} |")
        else:
            lines.append(f"| {row['name']} | - | failed: "
                         f"{row['error'][-120:]} | - | - |")
    return lines


def _earlier_series(path):
    """The data-size and batch-size series of an earlier `make bench`."""
    try:
        with open(path) as handle:
            scaling = json.load(handle).get("scaling") or {}
    except (OSError, ValueError):
        return [], []
    return scaling.get("dataset_size", []), scaling.get("batch_size", [])


def main(argv=None):
    if argv is None and sys.argv[1:2] == ["--child"]:
        mode, devices, steps, epochs, train_size = sys.argv[2:7]
        print(json.dumps(distributed_child(
            mode, int(devices), int(steps) or None, int(epochs),
            int(train_size))))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--distributed-only", action="store_true",
                        help="only the devices and workers rows; the plot "
                             "keeps the other panels from results.json")
    parser.add_argument("--out", default=os.path.join(_common.BENCH_DIR,
                                                      "scaling.png"))
    parser.add_argument("--json", default=None,
                        help="also write the result here")
    parser.add_argument("--render", default=None,
                        help="draw and write tables from this JSON only")
    parser.add_argument("--readme", action="store_true",
                        help="write the devices and workers table between "
                             "the scaling_distributed markers of README.md")
    args = parser.parse_args(argv)
    if args.render:
        with open(args.render) as handle:
            result = json.load(handle)
    elif args.distributed_only:
        sizes, batches = _earlier_series(
            os.path.join(_common.BENCH_DIR, "results.json"))
        result = {"epochs": args.epochs, "dataset_size": sizes,
                  "batch_size": batches,
                  "date": _common.now(),
                  "distributed": distributed(args.epochs)}
    else:
        result = benchmark(args.epochs)
        result["date"] = _common.now()
        result["distributed"] = distributed(args.epochs)
    plot(result, args.out)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)
    markdown = distributed_markdown(result["distributed"])
    print("\n".join(markdown))
    if args.readme:
        header = (f"Measured {result.get('date', '?')} with `benchmarks/"
                  f"scaling.py --distributed-only --epochs "
                  f"{result['epochs']}` (MLP VAE 784-512-256-16, 4,000 "
                  "MNIST-5k images, global batch 128, images/s over the "
                  "epochs after the first, each setting a fresh process). "
                  "Both cores of this machine are shared by the devices or "
                  "workers of a run: the figures show what distribution "
                  "costs here, not what it gains on separate devices.")
        _common.update_readme("\n".join([header, ""] + markdown) + "\n",
                              README_MARKERS)


if __name__ == "__main__":
    main()
