"""Inference speed of `reconstruct`: Keras, LiteRT files and PyTorch eager.

One MLP VAE (784-512-256-16) is trained briefly on MNIST-5k (speed does
not depend on how well) and written as LiteRT files with
`keras_vae.export.to_tflite` (float32, dynamic-range, full-int8, and 80%
1x16-block pruned + int8), plus a plain `model.export(format="litert")`
post-training int8 file of the same model. Then, in a fresh process per
thread count (1 and 2), the candidates are timed round-robin:

- `keras_call`: Keras float `model(x)` (the same as `model.reconstruct`),
- `keras_predict_on_batch`: Keras `model.predict_on_batch(x)`,
- `tflite_<kind>`: the `reconstruct` signature in the LiteRT interpreter,
  through the TensorFlow-free runtime `export/litert_vae.py`,
- `tflite_plain_int8`: the plain Keras export's serving signature,
- `torch_eager`: the same MLP in PyTorch eager under `torch.inference_mode`.

Per candidate: batch-1 latency (median and p95 over many calls) and
batch-256 throughput (images per second); min/median/max over rounds.

    .venv/bin/python benchmarks/infer_speed.py --threads 1 2 --rounds 3
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402

TFLITE_KINDS = ("float32", "dynamic", "int8", "pruned_int8", "plain_int8")
THROUGHPUT_BATCH = 256
# int8 multiply-accumulates per cycle and core: AVX2 `vpmaddubsw` on two
# ports (2 x 32); AVX-512 VNNI `vpdpbusd` on two ports (2 x 64).
_INT8_MACS_PER_CYCLE = {"avx512_vnni": 128, "avx_vnni": 64, "avx2": 64}


# ------------------------------------------------------------ prepare
def prepare(directory, epochs=2, prune_epochs=2):
    """Train, export every file into `directory`; return their paths."""
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_vae
    from keras_vae.compression import (ConstantSparsity, PruningCallback,
                                       strip_pruning)
    from keras_vae.export import to_tflite

    (x_train, _), _ = keras_vae.datasets.load("mnist5k")
    keras.utils.set_random_seed(0)
    model = keras_vae.models.mlp_vae((28, 28, 1), 16, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(x_train, epochs=epochs, batch_size=128, verbose=0)
    paths = {"keras": os.path.join(directory, "model.keras")}
    model.save(paths["keras"])
    calibration = x_train[:500]
    for kind, quantization in (("float32", "none"), ("dynamic", "dynamic"),
                               ("int8", "int8")):
        paths[kind] = os.path.join(directory, f"{kind}.tflite")
        to_tflite(model, paths[kind], quantization=quantization,
                  representative_data=calibration, overwrite=True)

    pruned = keras_vae.models.mlp_vae((28, 28, 1), 16, seed=0)
    pruned.set_weights(model.get_weights())
    pruned.compile(optimizer=keras.optimizers.Adam(1e-3))
    pruned.fit(x_train, epochs=prune_epochs, batch_size=128, verbose=0,
               callbacks=[PruningCallback(ConstantSparsity(0.8, 0, frequency=8),
                                          block_size=(16, 1))])
    pruned = strip_pruning(pruned)
    paths["pruned_int8"] = os.path.join(directory, "pruned_int8.tflite")
    to_tflite(pruned, paths["pruned_int8"], quantization="int8",
              representative_data=calibration, overwrite=True)

    def representative_dataset():
        for row in calibration:
            yield [row[None]]

    paths["plain_int8"] = os.path.join(directory, "plain_int8.tflite")
    model.export(
        paths["plain_int8"], format="litert", verbose=False,
        optimizations=[tf.lite.Optimize.DEFAULT],
        representative_dataset=representative_dataset,
        target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
    )
    with open(os.path.join(directory, "paths.json"), "w") as handle:
        json.dump(paths, handle)
    sizes = {k: os.path.getsize(v) for k, v in paths.items()
             if v.endswith(".tflite")}
    return {"paths": paths, "bytes": sizes,
            "macs_per_image": reconstruct_macs(model),
            "kernel_sparsity_pruned": float(np.mean(
                [np.mean(w == 0) for w in pruned.get_weights()
                 if w.ndim == 2]))}


def reconstruct_macs(model):
    """Multiply-accumulates of one `reconstruct` (the z_log_var head unused)."""
    macs = 0
    for part in (model.encoder, model.decoder):
        for layer in part.layers:
            kernel = getattr(layer, "kernel", None)
            if kernel is None or "log_var" in layer.name:
                continue
            macs += int(kernel.shape[0]) * int(kernel.shape[1])
    return macs


# ------------------------------------------------------------ timing
def _latency(fn, value, runs, warmup=20):
    import numpy as np

    for _ in range(warmup):
        fn(value)
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter_ns()
        fn(value)
        times[i] = time.perf_counter_ns() - start
    return float(np.median(times) / 1e3), float(np.percentile(times, 95) / 1e3)


def _throughput(fn, value, runs, warmup=3):
    for _ in range(warmup):
        fn(value)
    start = time.perf_counter()
    for _ in range(runs):
        fn(value)
    return len(value) * runs / (time.perf_counter() - start)


def _runtime():
    """The TensorFlow-free runtime `export/litert_vae.py` as a module."""
    sys.path.insert(0, os.path.join(_common.REPO_DIR, "export"))
    import litert_vae

    return litert_vae


def _litert_signature(path, threads):
    """The `reconstruct` signature of a file (or its only signature)."""
    runtime = _runtime()
    interpreter = runtime.Interpreter(model_path=path, num_threads=threads)
    keys = list(interpreter.get_signature_list())
    key = "reconstruct" if "reconstruct" in keys else keys[0]
    return runtime.Signature(interpreter, key)


def measure(paths, threads, rounds=3, runs=1000, keras_runs=200,
            throughput_runs=100, quick=False):
    """Time every candidate round-robin with `threads` threads."""
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras

    import keras_vae  # noqa: F401  (registers the classes to load)
    import train_speed

    rng = np.random.default_rng(0)
    x1 = rng.uniform(size=(1, 28, 28, 1)).astype("float32")
    x256 = rng.uniform(size=(THROUGHPUT_BATCH, 28, 28, 1)).astype("float32")
    model = keras.saving.load_model(paths["keras"])
    t1, t256 = tf.constant(x1), tf.constant(x256)

    candidates = {}

    def keras_call(value):
        return model(value, training=False).numpy()

    candidates["keras_call"] = (keras_call, t1, t256, keras_runs)
    candidates["keras_predict_on_batch"] = (model.predict_on_batch, x1, x256,
                                            keras_runs)
    for kind in TFLITE_KINDS:
        if kind in paths:
            candidates[f"tflite_{kind}"] = ("litert", _litert_signature(
                paths[kind], threads))

    torch = train_speed.ensure_torch()
    torch.set_num_threads(threads)
    torch_model = train_speed.build_reference_torch(
        (28, 28, 1), deterministic=True, **train_speed.ARCHITECTURE).eval()

    def torch_call(value):
        with torch.inference_mode():
            return torch_model(torch.from_numpy(value)).numpy()

    candidates["torch_eager"] = (torch_call, x1, x256, runs // 2)

    results = {name: [] for name in candidates}
    runtime = _runtime()
    for _ in range(rounds):
        for name, spec in candidates.items():
            if spec[0] == "litert":
                row = runtime.benchmark_signature(
                    spec[1], runs=runs, throughput_runs=throughput_runs * 4,
                    throughput_batch_size=THROUGHPUT_BATCH)
                results[name].append({
                    "latency_median_us": row["latency_median_us"],
                    "latency_p95_us": row["latency_p95_us"],
                    "throughput_per_s": row["throughput_per_s"],
                })
                continue
            fn, small, large, n = spec
            median, p95 = _latency(fn, small, n)
            results[name].append({
                "latency_median_us": median, "latency_p95_us": p95,
                "throughput_per_s": _throughput(
                    fn, large, max(5, throughput_runs // 5)),
            })
    return {name: {key: _common.summary([row[key] for row in rows])
                   for key in rows[0]}
            for name, rows in results.items()}


# ------------------------------------------------------------ report
def int8_peak_ops(threads, info=None):
    """Theoretical int8 ops/s (2 per multiply-accumulate) of `threads` cores."""
    info = info or _common.machine_info()
    flags = set(info.get("cpu_flags") or [])
    per_cycle = next((v for k, v in _INT8_MACS_PER_CYCLE.items()
                      if k in flags), 16)
    mhz = info.get("cpu_mhz") or _common.cpu_mhz()
    return 2.0 * per_cycle * mhz * 1e6 * threads


def ratios(table, macs_per_image, threads, info=None):
    """The export issue's speed targets and the int8 peak fraction."""
    def med(name, key):
        return table[name][key]["median"]

    out = {}
    if "tflite_int8" not in table:
        return out
    int8_b1 = med("tflite_int8", "latency_median_us")
    int8_tp = med("tflite_int8", "throughput_per_s")
    if "tflite_float32" in table:
        out["int8_vs_float32_batch1"] = (
            med("tflite_float32", "latency_median_us") / int8_b1)
        out["int8_vs_float32_batch256"] = (
            int8_tp / med("tflite_float32", "throughput_per_s"))
    if "torch_eager" in table:
        out["int8_vs_torch_batch1"] = (
            med("torch_eager", "latency_median_us") / int8_b1)
    if "tflite_plain_int8" in table:
        out["int8_slowdown_vs_plain_batch1_pct"] = 100.0 * (
            int8_b1 / med("tflite_plain_int8", "latency_median_us") - 1.0)
        out["int8_slowdown_vs_plain_batch256_pct"] = 100.0 * (
            med("tflite_plain_int8", "throughput_per_s") / int8_tp - 1.0)
    out["int8_batch256_ops_per_s"] = int8_tp * 2.0 * macs_per_image
    out["int8_peak_ops_per_s"] = int8_peak_ops(threads, info)
    out["int8_batch256_fraction_of_peak"] = (
        out["int8_batch256_ops_per_s"] / out["int8_peak_ops_per_s"])
    return out


def benchmark(threads=(1, 2), rounds=3, epochs=2, quick=False, log=print):
    """Prepare the files once, then time them per thread count."""
    directory = tempfile.mkdtemp(prefix="keras_vae_infer_")
    prepared = _common.run_child("infer_speed",
                                 ["--prepare", directory, "--epochs", epochs])
    log(f"  infer: files {prepared['bytes']}")
    result = {"prepared": prepared, "threads": {}}
    for count in threads:
        args = ["--measure", directory, "--threads", count, "--rounds",
                rounds] + (["--quick"] if quick else [])
        table = _common.run_child("infer_speed", args, threads=count)
        result["threads"][str(count)] = {
            "table": table,
            "targets": ratios(table, prepared["macs_per_image"], count),
        }
        for name, row in table.items():
            log(f"  infer {count} thread(s) {name:24s} "
                f"batch1 {row['latency_median_us']['median']:9.1f} us  "
                f"batch256 {row['throughput_per_s']['median']:10.0f}/s")
    return result


def _child_main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--prepare")
    parser.add_argument("--measure")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.prepare:
        return _common.emit(prepare(args.prepare, args.epochs,
                                    prune_epochs=args.epochs))
    with open(os.path.join(args.measure, "paths.json")) as handle:
        paths = json.load(handle)
    runs = 100 if args.quick else 1000
    _common.emit(measure(paths, args.threads, args.rounds, runs=runs,
                         keras_runs=20 if args.quick else 200,
                         throughput_runs=10 if args.quick else 100))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--child" in argv:
        return _child_main(argv)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    result = benchmark(args.threads, args.rounds, args.epochs)
    print(json.dumps({k: v["targets"] for k, v in result["threads"].items()},
                     indent=1))


if __name__ == "__main__":
    main()
