"""Peak resident memory: a keras-vae training run and the LiteRT runtime.

Each measurement is a fresh process whose peak resident set size
(`ru_maxrss`) is read at the end:

- `train_tensorflow` / `train_jax`: `keras_vae.models.mlp_vae` (784-512-256-16)
  trained with the default `fit` on MNIST-5k, then evaluated;
- `litert_runtime`: `export/litert_vae.py` (numpy + ai-edge-litert, no
  TensorFlow) loading the int8 `.tflite` file and running `reconstruct` on
  batches of 1 and 256; `litert_import_only` is the same process before the
  file is loaded (Python + numpy + LiteRT).

    .venv/bin/python benchmarks/memory.py --tflite path/to/int8.tflite
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common


def train_child(epochs):
    import keras

    import keras_vae

    (x_train, _), (x_test, _) = keras_vae.datasets.load("mnist5k")
    keras.utils.set_random_seed(0)
    model = keras_vae.models.mlp_vae((28, 28, 1), 16, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(x_train, epochs=epochs, batch_size=128, verbose=0)
    model.evaluate(x_test, batch_size=500, verbose=0)
    return {"peak_rss_mb": _common.peak_rss_mb(),
            "backend": keras.backend.backend(), "epochs": epochs}


def litert_child(path):
    import numpy as np

    sys.path.insert(0, os.path.join(_common.REPO_DIR, "export"))
    import litert_vae

    before = _common.peak_rss_mb()
    vae = litert_vae.LiteRTVAE(path, num_threads=1)
    rng = np.random.default_rng(0)
    for batch in (1, 256):
        x = rng.uniform(size=(batch, *vae.input_shape)).astype("float32")
        for _ in range(10):
            vae.reconstruct(x)
    return {"peak_rss_mb": _common.peak_rss_mb(),
            "import_only_peak_rss_mb": before,
            "tensorflow_imported": "tensorflow" in sys.modules,
            "file_bytes": os.path.getsize(path)}


def benchmark(tflite_path=None, epochs=3, log=print):
    """Run the children; returns `{name: record}`."""
    result = {}
    for backend in ("tensorflow", "jax"):
        record = _common.run_child("memory", ["--train", "--epochs", epochs],
                                   backend=backend)
        result[f"train_{backend}"] = record
        log(f"  memory train ({backend}): {record['peak_rss_mb']:.0f} MiB")
    if tflite_path:
        record = _common.run_child("memory", ["--litert", tflite_path])
        result["litert_runtime"] = record
        log(f"  memory LiteRT runtime: {record['peak_rss_mb']:.0f} MiB "
            f"(imports alone {record['import_only_peak_rss_mb']:.0f} MiB)")
    return result


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--litert")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--tflite", help="int8 .tflite file for the runtime")
    args = parser.parse_args(argv)
    if args.child:
        if args.train:
            return _common.emit(train_child(args.epochs))
        return _common.emit(litert_child(args.litert))
    print(json.dumps(benchmark(args.tflite, args.epochs), indent=1))


if __name__ == "__main__":
    main()
