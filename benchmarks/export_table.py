"""Size, quality and speed of LiteRT exports on MNIST-5k: the README table.

One command measures the size, quality and speed of every export mode and writes
`benchmarks/export_table.md` (and `export_table.json`):

    KERAS_BACKEND=tensorflow TF_CPP_MIN_LOG_LEVEL=3 \
        nice -n 10 .venv/bin/python benchmarks/export_table.py

1. The MLP VAE (784-512-256-16) is trained on the 4,000 training images and
   written as float32, dynamic-range, float16 and full-int8 `.tflite`
   files; each is verified on the 1,000 test images (reconstruction NLL
   against the float Keras model).
2. Copies are pruned to 80% with `keras_vae.compression.PruningCallback`
   (single weights, and 1x16 blocks that LiteRT stores and runs sparse),
   stripped, and written as int8; their NLL is compared with their own
   float Keras model. The randomly pruned copy is also fine-tuned with
   quantization-aware training (`keras_vae.compression.quantize_aware`,
   zeros kept) and written as int8 from its trained ranges.
3. `conv_vae` (Conv2DTranspose decoder) is trained and written as int8.
4. `reconstruct` speed, measured side by side and round-robin in one
   process with one thread everywhere: the int8 and float32 files, a plain
   `model.export(format="litert")` post-training int8 file of the same
   model, the pruned files, PyTorch eager (the same weights in
   `torch.nn.Linear` layers; only if torch is installed, it is not a
   dependency) and Keras `model(x)`. Each runtime reports wall-clock and
   thread-CPU time; the load average is recorded, since wall-clock numbers
   on a shared machine measure the other processes too.
"""

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# One BLAS thread, so the GEMM reference rate is one core's, like LiteRT's.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import keras
import numpy as np

import keras_vae
from keras_vae.export import to_tflite, verify

HERE = os.path.dirname(os.path.abspath(__file__))


def _runtime():
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "export"))
    import litert_vae

    return litert_vae


def train(model, x, epochs, callbacks=()):
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(x, epochs=epochs, batch_size=128, verbose=0,
              callbacks=list(callbacks))
    return model


def export_row(label, model, path, x_train, x_test, reference,
               float_model=None, **kwargs):
    """Export, verify, and one table row; NLL deltas against `float_model`.

    `verify` compares the file with `model` itself; for a QAT model the
    float model it came from (`float_model`) is the fair reference too.
    """
    info = to_tflite(model, path, representative_data=x_train[:500],
                     overwrite=True, **kwargs)
    report = verify(path, model, x_test)
    row = {
        "file": label,
        "bytes": info.num_bytes,
        "gzip_bytes": info.gzip_bytes,
        "pct_of_float32": 100.0 * info.num_bytes / reference["bytes"]
        if reference else 100.0,
        "pct_of_float32_gzip": 100.0 * info.gzip_bytes / reference["gzip_bytes"]
        if reference else 100.0,
        "keras_nll": report.keras_nll,
        "tflite_nll": report.tflite_nll,
        "nll_delta_pct": report.nll_delta_pct,
        "max_abs_error_reconstruct": report.max_abs_error("reconstruct"),
        "sparse_tensors": info.sparse_tensors,
        "kernel_sparsity": info.metadata["kernel_sparsity"],
        "calibration": info.metadata.get("calibration"),
        "path": path,
    }
    if float_model is not None:
        # The same quantity `verify` reports as the Keras NLL.
        z_mean, _ = float_model.encode(x_test)
        float_nll = float(np.mean(keras.ops.convert_to_numpy(
            float_model.likelihood.negative_log_prob(
                x_test, float_model.decoder(z_mean)))))
        row["qat_keras_nll"] = row["keras_nll"]
        row["keras_nll"] = float_nll
        row["nll_delta_pct"] = 100.0 * (row["tflite_nll"] - float_nll) / float_nll
    return row


def plain_keras_int8(model, path, x_train):
    """A post-training int8 file from `model.export(format="litert")`."""
    import tensorflow as tf

    def representative_dataset():
        for row in x_train[:500]:
            yield [row[None]]

    model.export(
        path,
        format="litert",
        verbose=False,
        optimizations=[tf.lite.Optimize.DEFAULT],
        representative_dataset=representative_dataset,
        target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
    )
    return path


def torch_mlp(model):
    """The MLP VAE's `reconstruct` path as PyTorch eager layers, same weights."""
    import torch

    def linear(name, sub):
        layer = sub.get_layer(name)
        kernel, bias = (keras.ops.convert_to_numpy(w) for w in layer.weights)
        module = torch.nn.Linear(*kernel.shape)
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(kernel.T.copy()))
            module.bias.copy_(torch.from_numpy(bias))
        return module

    encoder, decoder = model.encoder, model.decoder
    relu = torch.nn.ReLU
    layers = [torch.nn.Flatten()]
    for name in [layer.name for layer in encoder.layers if layer.name.startswith("encoder_dense")]:
        layers += [linear(name, encoder), relu()]
    layers.append(linear("z_mean", encoder))
    for name in [layer.name for layer in decoder.layers if layer.name.startswith("decoder_dense")]:
        layers += [linear(name, decoder), relu()]
    layers += [linear("decoder_output", decoder), torch.nn.Sigmoid(),
               torch.nn.Unflatten(1, tuple(model.input_spec_shape))]
    return torch.nn.Sequential(*layers).eval()


def runners(files, model, x):
    """`{label: (run, make_batch)}` for every runtime timed side by side."""
    litert_vae = _runtime()
    rng = np.random.default_rng(0)
    result = {}
    for label, (path, key) in files.items():
        interpreter = litert_vae.Interpreter(model_path=path, num_threads=1)
        signature = litert_vae.Signature(interpreter, key)

        def make_batch(size, signature=signature):
            value = rng.uniform(0.0, 1.0, (size, *model.input_spec_shape))
            return signature.prepare(value.astype(np.float32))

        result[label] = (signature.run_raw, make_batch)
    try:
        import torch
    except ImportError:
        print("torch is not installed: no PyTorch eager row", flush=True)
    else:
        torch.set_num_threads(1)
        module = torch_mlp(model)
        expected = keras.ops.convert_to_numpy(model.reconstruct(x[:8]))
        with torch.inference_mode():
            actual = module(torch.from_numpy(x[:8])).numpy()
        np.testing.assert_allclose(actual, expected, atol=1e-4)

        def run_torch(value):
            with torch.inference_mode():
                return module(value)

        def torch_batch(size):
            return torch.from_numpy(
                rng.uniform(0.0, 1.0, (size, *model.input_spec_shape))
                .astype(np.float32))

        result[f"PyTorch {torch.__version__} eager, float32"] = (
            run_torch, torch_batch)
    return result


def speed(files, model, x, rounds, runs):
    """Round-robin batch-1 latency and batch-256 throughput per runtime."""
    litert_vae = _runtime()
    timed = runners(files, model, x)
    results = {label: [] for label in timed}
    for _ in range(rounds):
        for label, (run, make_batch) in timed.items():
            results[label].append(
                litert_vae.benchmark_callable(
                    run, make_batch, runs=runs,
                    throughput_runs=max(20, runs // 20),
                )
            )
    summary = {}
    for label, rows in results.items():
        summary[label] = {
            key: float(np.median([r[key] for r in rows]))
            for key in ("latency_median_us", "latency_p95_us",
                        "latency_cpu_us", "throughput_per_s",
                        "throughput_cpu_per_s")
        }
    return summary


def per_image_cpu_us(files, batch_sizes=(1, 4, 16, 64), rounds=3):
    """Thread-CPU microseconds per image of `reconstruct` by batch size.

    Flat from batch 1 up means the kernels are compute-bound already at
    batch 1; falling means batch 1 is limited by reading the weights.
    """
    litert_vae = _runtime()
    rng = np.random.default_rng(0)
    signatures = {
        label: litert_vae.Signature(
            litert_vae.Interpreter(model_path=path, num_threads=1), key)
        for label, (path, key) in files.items()
    }
    times = {}
    for _ in range(rounds):
        for batch in batch_sizes:
            for label, signature in signatures.items():
                value = signature.prepare(rng.uniform(
                    0.0, 1.0, (batch, *signature.input_shape[1:])
                ).astype(np.float32))
                for _ in range(10):
                    signature.run_raw(value)
                calls = max(20, 2000 // batch)
                start = time.thread_time_ns()
                for _ in range(calls):
                    signature.run_raw(value)
                per_image = (time.thread_time_ns() - start) / calls / batch / 1e3
                times.setdefault(label, {}).setdefault(batch, []).append(per_image)
    return {label: {batch: float(np.median(values))
                    for batch, values in rows.items()}
            for label, rows in times.items()}


def keras_latency(model, x, runs=200):
    """Wall and thread-CPU microseconds of Keras `model(x)` at batch 1."""
    model(x[:1])
    wall, cpu = [], []
    for _ in range(runs):
        cpu_start = time.thread_time_ns()
        start = time.perf_counter_ns()
        keras.ops.convert_to_numpy(model(x[:1]))
        wall.append(time.perf_counter_ns() - start)
        cpu.append(time.thread_time_ns() - cpu_start)
    return {"latency_median_us": float(np.median(wall) / 1e3),
            "latency_cpu_us": float(np.median(cpu) / 1e3)}


def gemm_peak_gmacs(repeats=50):
    """Single-thread float32 GEMM rate of this CPU (numpy), for scale.

    Uses the shape of the MLP's first layer at batch 256; thread CPU time,
    so other processes on the machine do not lower it.
    """
    a = np.random.default_rng(0).uniform(size=(256, 784)).astype(np.float32)
    b = np.random.default_rng(1).uniform(size=(784, 512)).astype(np.float32)
    for _ in range(5):
        a @ b
    cpu = []
    for _ in range(repeats):
        start = time.thread_time_ns()
        a @ b
        cpu.append(time.thread_time_ns() - start)
    return 256 * 784 * 512 / np.median(cpu)


def mlp_macs(model):
    """Multiply-accumulates of one `reconstruct` call of the MLP VAE."""
    total = 0
    for sub, skip in ((model.encoder, "z_log_var"), (model.decoder, None)):
        for layer in sub.layers:
            if isinstance(layer, keras.layers.Dense) and layer.name != skip:
                total += int(np.prod(layer.kernel.shape))
    return total


def _load():
    try:
        return "load average %.2f, %.2f, %.2f" % os.getloadavg()
    except OSError:  # pragma: no cover - not on Linux/macOS
        return "load average unknown"


def markdown(rows, conv_rows, speed_rows, keras_row, context, scaling):
    lines = [
        "# LiteRT export on MNIST-5k",
        "",
        f"Produced by `{context['command']}` ({context['settings']}). NLL: "
        "mean reconstruction negative log-likelihood of the 1,000 test "
        "images in nats (Bernoulli, through the posterior mean); Δ is the "
        "file's NLL against its own float Keras model (pruned rows: the "
        "pruned Keras model; the QAT row: the pruned float model it was "
        "fine-tuned from, before QAT).",
        "",
        "| model | file | bytes | % of float32 | gzip bytes | % of float32 gzip "
        "| Keras NLL | file NLL | Δ NLL % |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model_name, group in (("mlp_vae", rows), ("conv_vae", conv_rows)):
        for row in group:
            lines.append(
                f"| {model_name} | {row['file']} | {row['bytes']:,} | "
                f"{row['pct_of_float32']:.1f} | {row['gzip_bytes']:,} | "
                f"{row['pct_of_float32_gzip']:.1f} | {row['keras_nll']:.2f} | "
                f"{row['tflite_nll']:.2f} | {row['nll_delta_pct']:+.3f} |"
            )
    lines += [
        "",
        "`reconstruct` speed of the MLP VAE, one thread everywhere, "
        "measured round-robin in one process (median of "
        f"{context['rounds']} rounds). Wall: per-call wall clock (median, "
        "p95) and batch-256 throughput from the median batch time; CPU: "
        "the calling thread's CPU time, which other processes on a shared "
        f"machine do not inflate. Load: {context['load_before']} before, "
        f"{context['load_after']} after, on {context['cpus']} CPUs.",
        "",
        "| runtime | batch 1 wall median (us) | batch 1 wall p95 (us) | "
        "batch 1 CPU (us) | batch 256 wall (images/s) | batch 256 CPU "
        "(images/s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, row in speed_rows.items():
        lines.append(
            f"| {label} | {row['latency_median_us']:.1f} | "
            f"{row['latency_p95_us']:.1f} | {row['latency_cpu_us']:.1f} | "
            f"{row['throughput_per_s']:,.0f} | "
            f"{row['throughput_cpu_per_s']:,.0f} |"
        )
    lines.append(
        f"| Keras 3 `model(x)` (TensorFlow eager) | "
        f"{keras_row['latency_median_us']:,.0f} | | "
        f"{keras_row['latency_cpu_us']:,.0f} | | |"
    )
    int8 = speed_rows[INT8]
    ratios = []
    for label, row in speed_rows.items():
        if label == INT8:
            continue
        ratios.append(
            f"| {label} | {row['latency_median_us'] / int8['latency_median_us']:.2f} | "
            f"{row['latency_cpu_us'] / int8['latency_cpu_us']:.2f} | "
            f"{int8['throughput_per_s'] / row['throughput_per_s']:.2f} | "
            f"{int8['throughput_cpu_per_s'] / row['throughput_cpu_per_s']:.2f} |"
        )
    lines += [
        "",
        "How many times faster the keras_vae int8 file is than each other "
        "runtime (above 1: int8 is faster):",
        "",
        "| against | batch 1 wall | batch 1 CPU | batch 256 wall | "
        "batch 256 CPU |",
        "|---|---:|---:|---:|---:|",
        *ratios,
        "",
        "Thread-CPU time per image of `reconstruct` by batch size (us), "
        "median of 3 rounds:",
        "",
        "| file | " + " | ".join(f"batch {b}" for b in next(iter(
            scaling.values()))) + " |",
        "|---|" + "---:|" * len(next(iter(scaling.values()))),
        *[
            f"| {label} | " + " | ".join(f"{v:.1f}" for v in row.values())
            + " |"
            for label, row in scaling.items()
        ],
        "",
        f"For scale: `reconstruct` of this MLP is {context['macs']:,} "
        "multiply-accumulates per image; one core of this CPU runs a "
        f"float32 GEMM of the first layer's shape at {context['gemm']:.1f} "
        "GMAC/s (numpy/OpenBLAS, thread CPU time), i.e. at most "
        f"{1e9 * context['gemm'] / context['macs']:,.0f} float32 images/s "
        "per core.",
    ]
    return "\n".join(lines) + "\n"


INT8 = "int8 (keras_vae, 3 signatures)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--prune-epochs", type=int, default=15)
    parser.add_argument("--qat-epochs", type=int, default=3)
    parser.add_argument("--conv-epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--quick", action="store_true",
                        help="1 epoch each, few timing runs (smoke test)")
    parser.add_argument("--out", default=os.path.join(HERE, "export_table.md"))
    args = parser.parse_args()
    if args.quick:
        args.epochs = args.prune_epochs = args.qat_epochs = args.conv_epochs = 1
        args.rounds, args.runs = 1, 200
    from keras_vae.compression import (
        PolynomialDecay,
        PruningCallback,
        quantize_aware,
        strip_pruning,
    )

    (x_train, _), (x_test, _) = keras_vae.datasets.load("mnist5k")
    directory = tempfile.mkdtemp(prefix="export_table_")
    keras.utils.set_random_seed(0)
    started = time.time()
    model = train(keras_vae.models.mlp_vae((28, 28, 1), 16, seed=0),
                  x_train, args.epochs)
    print(f"trained mlp_vae in {time.time() - started:.0f} s", flush=True)

    def path(name):
        return os.path.join(directory, name)

    rows = [export_row("float32", model, path("float32.tflite"), x_train,
                       x_test, None, quantization="none")]
    reference = rows[0]
    for label, mode in (("dynamic", "dynamic"), ("float16", "float16"),
                        ("int8", "int8")):
        rows.append(export_row(label, model, path(f"{label}.tflite"), x_train,
                               x_test, reference, quantization=mode))
        print(rows[-1]["file"], rows[-1]["bytes"], flush=True)

    steps = int(np.ceil(len(x_train) / 128))
    pruned_models = {}
    for label, block_size, name in (
        ("pruned 80% (random) + int8", (1, 1), "pruned_random_int8"),
        ("pruned 80% (1x16 blocks) + int8, sparse (optimize_for='size')",
         (16, 1), "pruned_block_int8"),
    ):
        pruned = keras_vae.models.mlp_vae((28, 28, 1), 16, seed=0)
        pruned.set_weights(model.get_weights())
        schedule = PolynomialDecay(
            0.0, 0.8, begin_step=0,
            end_step=max(1, steps * args.prune_epochs * 2 // 3),
            frequency=max(1, steps // 2),
        )
        train(pruned, x_train, args.prune_epochs,
              [PruningCallback(schedule, block_size=block_size)])
        pruned = strip_pruning(pruned)
        pruned_models[name] = pruned
        # Both copies as the size option: the 1x16 blocks then use LiteRT's
        # sparse encoding; random zeros stay dense (they gzip smaller).
        rows.append(export_row(label, pruned, path(f"{name}.tflite"), x_train,
                               x_test, reference, quantization="int8",
                               optimize_for="size"))
        print(rows[-1]["file"], rows[-1]["bytes"], flush=True)

    # QAT fine-tuning of the randomly pruned model, its zeros kept.
    float_pruned = pruned_models["pruned_random_int8"]
    qat = quantize_aware(float_pruned)
    qat.compile(optimizer=keras.optimizers.Adam(1e-4))
    qat.fit(x_train, epochs=args.qat_epochs, batch_size=128, verbose=0)
    rows.append(export_row("pruned 80% (random) + QAT int8", qat,
                           path("pruned_random_qat_int8.tflite"), x_train,
                           x_test, reference, float_model=float_pruned,
                           quantization="int8"))
    print(rows[-1]["file"], rows[-1]["bytes"], flush=True)

    keras.utils.set_random_seed(0)
    conv = train(keras_vae.models.conv_vae((28, 28, 1), 16, seed=0),
                 x_train, args.conv_epochs)
    conv_rows = [export_row("float32", conv, path("conv_float32.tflite"),
                            x_train, x_test, None, quantization="none")]
    conv_rows.append(export_row("int8", conv, path("conv_int8.tflite"),
                                x_train, x_test, conv_rows[0],
                                quantization="int8"))

    plain = plain_keras_int8(model, path("plain_keras_int8.tflite"), x_train)
    files = {
        INT8: (path("int8.tflite"), "reconstruct"),
        "float32 (keras_vae)": (path("float32.tflite"), "reconstruct"),
        "plain model.export(format='litert') int8": (plain, "serving_default"),
        "pruned 80% (random) + QAT int8": (
            path("pruned_random_qat_int8.tflite"), "reconstruct"),
        "pruned 80% (1x16 blocks) + int8, sparse": (
            path("pruned_block_int8.tflite"), "reconstruct"),
    }
    load_before = _load()
    speed_rows = speed(files, model, x_test, args.rounds, args.runs)
    keras_row = keras_latency(model, x_test)
    scaling = per_image_cpu_us({
        "int8 (keras_vae)": files[INT8],
        "float32 (keras_vae)": files["float32 (keras_vae)"],
    })
    context = {
        "command": "python benchmarks/export_table.py",
        "settings": (f"--epochs {args.epochs} --prune-epochs "
                     f"{args.prune_epochs} --qat-epochs {args.qat_epochs} "
                     f"--conv-epochs {args.conv_epochs} --rounds "
                     f"{args.rounds} --runs {args.runs}"),
        "rounds": args.rounds,
        "load_before": load_before,
        "load_after": _load(),
        "cpus": os.cpu_count(),
        "macs": mlp_macs(model),
        "gemm": gemm_peak_gmacs(),
    }
    text = markdown(rows, conv_rows, speed_rows, keras_row, context, scaling)
    with open(args.out, "w") as handle:
        handle.write(text)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as handle:
        json.dump({"mlp": rows, "conv": conv_rows, "speed": speed_rows,
                   "keras_batch1": keras_row, "context": context,
                   "cpu_us_per_image_by_batch": scaling}, handle,
                  indent=2)
    print(text)


if __name__ == "__main__":
    main()
