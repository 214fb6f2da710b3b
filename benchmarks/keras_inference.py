"""Keras-side inference: batch-1 `encode`/`decode`/`reconstruct`/`sample`.

keras-vae compiles each entry point once per input signature (a
`tf.function`, or `jax.jit` on JAX). This times one call on one image of the
MNIST MLP VAE (784-512-256-16) on both backends, each in a fresh process:
the compiled entry points (input validation included), the same
computation run eagerly (what the entry points cost before), and Keras'
`predict_on_batch` as a reference. Median and minimum over rounds of
calls, in milliseconds; the target is <= 1 ms per compiled call on a quiet
machine.

    .venv/bin/python benchmarks/keras_inference.py --rounds 7 --calls 200
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common

ARCHITECTURE = {"latent_dim": 16, "hidden_units": (512, 256)}
TARGET_MS = 1.0


def measure(rounds=7, calls=200, eager_calls=20):
    """Milliseconds per batch-1 call of each entry point, this backend."""
    import keras
    import numpy as np

    import keras_vae

    model = keras_vae.models.mlp_vae((28, 28, 1), seed=0, **ARCHITECTURE)
    x = np.random.default_rng(0).uniform(size=(1, 28, 28, 1)).astype(
        "float32")
    z = np.zeros((1, ARCHITECTURE["latent_dim"]), "float32")

    def eager_reconstruct():
        z_mean, _ = model.posterior(x)
        return model.likelihood.mean(model.decoder_params(z_mean))

    candidates = {
        "encode": (lambda: model.encode(x), calls),
        "decode": (lambda: model.decode(z), calls),
        "reconstruct": (lambda: model.reconstruct(x), calls),
        "sample": (lambda: model.sample(1, seed=0), calls),
        "reconstruct_eager": (eager_reconstruct, eager_calls),
        "predict_on_batch": (lambda: model.predict_on_batch(x), calls),
    }
    times = {name: [] for name in candidates}
    # Two warm-up passes: Keras' first `predict_on_batch` sets its predict
    # function, which (like any retrace of `predict`) drops the compiled
    # entry points; the second pass traces them again.
    for _ in range(2):
        for function, _ in candidates.values():
            keras.ops.convert_to_numpy(tree_first(function()))
    for _ in range(rounds):
        for name, (function, count) in candidates.items():
            start = time.perf_counter()
            for _ in range(count):
                out = function()
            keras.ops.convert_to_numpy(tree_first(out))
            times[name].append((time.perf_counter() - start) / count * 1e3)
    return {
        "backend": keras.backend.backend(),
        "ms_per_call": {name: _common.summary(values)
                        for name, values in times.items()},
    }


def tree_first(value):
    while isinstance(value, (tuple, list)):
        value = value[0]
    return value


def benchmark(rounds=7, calls=200, log=print):
    """Both backends, each in its own child process."""
    results = {}
    for backend in ("tensorflow", "jax"):
        record = _common.run_child(
            "keras_inference", ["--rounds", rounds, "--calls", calls],
            backend=backend)
        results[backend] = record
        for name, stats in record["ms_per_call"].items():
            log(f"  {backend:10s} {name:18s} {stats['median']:8.3f} ms "
                f"(min {stats['min']:.3f})")
    results["target_ms"] = TARGET_MS
    return results


def to_markdown(results):
    """A table: compiled entry points against eager and predict_on_batch."""
    names = ("encode", "decode", "reconstruct", "sample", "reconstruct_eager",
             "predict_on_batch")
    lines = ["| call (batch 1) | " + " | ".join(
        f"{backend} ms" for backend in ("tensorflow", "jax")) + " |",
             "|---|---|---|"]
    for name in names:
        cells = []
        for backend in ("tensorflow", "jax"):
            stats = results[backend]["ms_per_call"][name]
            cells.append(f"{stats['median']:.3f} (min {stats['min']:.3f})")
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return lines


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args(argv)
    if args.child:
        return _common.emit(measure(args.rounds, args.calls))
    results = benchmark(args.rounds, args.calls)
    print("\n".join(to_markdown(results)))
    compiled = [results[b]["ms_per_call"][n]["median"]
                for b in ("tensorflow", "jax")
                for n in ("encode", "decode", "reconstruct", "sample")]
    print(json.dumps({"worst_compiled_median_ms": max(compiled),
                      "target_ms": TARGET_MS,
                      "median_of_medians_ms": statistics.median(compiled)}))


if __name__ == "__main__":
    main()
