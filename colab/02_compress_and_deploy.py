# %% [markdown]
# # keras-vae: prune, quantize and deploy a VAE with LiteRT
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/keras-vae/keras-vae/blob/main/colab/02_compress_and_deploy.ipynb)
#
# A trained VAE is a few megabytes of float32 weights. This tutorial makes
# it small and fast enough for a phone or a Raspberry Pi and measures what
# that costs in quality:
#
# 1. train an MLP VAE on MNIST (the float32 reference),
# 2. prune 80% of every kernel during a fine-tuning run
#    (`keras_vae.compression.PruningCallback` with a `PolynomialDecay`
#    schedule, then `strip_pruning`),
# 3. quantization-aware training (QAT): fine-tune with int8 fake
#    quantization so the model learns to live with 8-bit weights and
#    activations,
# 4. export int8 LiteRT (TFLite) files with `keras_vae.export.to_tflite` and
#    check each one with `keras_vae.export.verify`,
# 5. compare size, latency and quality in a table and a trade-off plot,
# 6. run the file with the TensorFlow-free runtime in `export/`, the way a
#    device would.
#
# With MNIST-5k it runs on a CPU runtime in about five minutes. The source
# of this notebook is `colab/02_compress_and_deploy.py` in the repository.

# %% [markdown]
# ## Setup
#
# On Colab the first cell clones keras-vae (the device runtime lives in its
# `export/` folder) and installs the package; anywhere else it does nothing.

# %%
import os
import subprocess
import sys

REPOSITORY = "keras-vae/keras-vae"
if "google.colab" in sys.modules:
    if not os.path.isdir("keras-vae"):
        subprocess.run(
            ["git", "clone", "--depth", "1",
             f"https://github.com/{REPOSITORY}.git", "keras-vae"],
            check=True,
        )
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "./keras-vae"],
        check=True,
    )

# %% [markdown]
# Settings, read from environment variables: `KERAS_VAE_DATASET` (`mnist5k`
# by default, offline; `mnist` or `fashion_mnist` through
# tensorflow-datasets) and `KERAS_VAE_FAST=1` (a few hundred images and one
# or two epochs per stage, so every cell runs in seconds; the test suite
# uses it).

# %%
# Keras picks its backend once, at import: choose it before importing keras.
# Export to LiteRT traces the model with TensorFlow.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FAST = os.environ.get("KERAS_VAE_FAST", "0") == "1"
DATASET = os.environ.get("KERAS_VAE_DATASET", "mnist5k")  # or "mnist", "fashion_mnist"
OUTPUT_DIR = os.environ.get(
    "KERAS_VAE_OUTPUT_DIR", "keras_vae_outputs/02_compress_and_deploy"
)
# The full data sets have 15 times more images per epoch: fewer epochs.
SMALL = DATASET == "mnist5k"
EPOCHS = 2 if FAST else (30 if SMALL else 10)       # float32 training
PRUNE_EPOCHS = 2 if FAST else (10 if SMALL else 4)  # pruning to 80%
QAT_EPOCHS = 1 if FAST else (5 if SMALL else 2)     # quantization-aware
TARGET_SPARSITY = 0.8
BENCH_RUNS = 100 if FAST else 2000  # timed batch-1 calls per file
CALIBRATION_SIZE = 100 if FAST else 500  # images that calibrate int8 PTQ
BATCH_SIZE = 128
LATENT_DIM = 16
SEED = 0
os.makedirs(OUTPUT_DIR, exist_ok=True)

import json
import math

import keras
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, Markdown, display

import keras_vae
from keras_vae import compression

keras.utils.set_random_seed(SEED)
print(f"keras {keras.__version__} ({keras.backend.backend()}), "
      f"keras-vae {keras_vae.__version__}; dataset={DATASET}, fast={FAST}")

# %% [markdown]
# ## 1. Data and the float32 reference model

# %%
(x_train, y_train), (x_test, y_test) = keras_vae.datasets.load(DATASET)
if FAST:
    x_train, x_test = x_train[:512], x_test[:256]
print("train:", x_train.shape, "test:", x_test.shape)

model = keras_vae.models.mlp_vae(
    x_train.shape[1:], latent_dim=LATENT_DIM, hidden_units=(512, 256), seed=SEED
)
model.compile(optimizer=keras.optimizers.Adam(1e-3))
model.fit(x_train, epochs=EPOCHS, batch_size=BATCH_SIZE, verbose=2)
float_elbo = keras_vae.metrics.elbo(model, x_test, seed=SEED)
print(f"float32 Keras model: test negative ELBO {-float_elbo:.2f} nats per image")

# %% [markdown]
# ## 2. Prune to 80% sparsity
#
# `PruningCallback` keeps a 0/1 mask next to every Dense kernel of the
# encoder and decoder. On the schedule's steps it keeps the weights of
# largest magnitude and zeroes the rest; after every optimizer update the
# zeros are put back, so the network learns to work without them.
# `PolynomialDecay` raises the sparsity from 0 to 80% over the first 70% of
# the fine-tuning steps (fast at first, then levelling off), as TF-MOT's
# schedule of the same name does. Fine-tuning starts from a copy of the
# float32 model, which stays as the reference.

# %%
steps_per_epoch = math.ceil(len(x_train) / BATCH_SIZE)
frequency = max(1, steps_per_epoch // 4)
# Masks change every `frequency` steps; the last change lands on `end_step`.
end_step = int(0.7 * PRUNE_EPOCHS * steps_per_epoch) // frequency * frequency
end_step = max(frequency, end_step)
schedule = compression.PolynomialDecay(
    initial_sparsity=0.0, final_sparsity=TARGET_SPARSITY,
    begin_step=0, end_step=end_step, frequency=frequency,
)
pruned = keras.models.clone_model(model)
pruned.set_weights(model.get_weights())
pruned.compile(optimizer=keras.optimizers.Adam(5e-4))
pruned.fit(
    x_train, epochs=PRUNE_EPOCHS, batch_size=BATCH_SIZE, verbose=2,
    callbacks=[compression.PruningCallback(schedule)],
)
# The masks and the step counter were only needed while training.
pruned = compression.strip_pruning(pruned)
pruned_elbo = keras_vae.metrics.elbo(pruned, x_test, seed=SEED)
print(f"pruned model: test negative ELBO {-pruned_elbo:.2f} nats per image "
      f"({100 * (pruned_elbo - float_elbo) / float_elbo:+.2f}% vs float32)")

# %% [markdown]
# `sparsity_report` counts the exact zeros layer by layer, and what the
# weights would weigh as float32, as int8, and as int8 gzipped (zeros
# compress well: this is where pruning pays off in a download).

# %%
sparsity = compression.sparsity_report(pruned)
display(Markdown(sparsity.to_markdown()))

# %% [markdown]
# ## 3. Quantization-aware training
#
# int8 export maps every weight and activation to 256 levels. Post-training
# quantization (PTQ) picks the activation ranges after the fact from a few
# hundred calibration images. QAT instead fine-tunes with the rounding in
# the forward pass: `quantize_aware` wraps every Dense layer with int8 fake
# quantization following TFLite's scheme (symmetric per-tensor weights,
# asymmetric activations with moving-average ranges), so the weights adapt
# to 8 bits and the exported file uses the ranges learned in training. The
# pruned zeros stay zero: `quantize_aware` keeps them masked while QAT
# fine-tunes. (`QuantizationAwareTraining(start_epoch=...)` can switch the
# fake quantization on later in a run; here it is on from the start.)

# %%
qat_model = compression.quantize_aware(pruned)
qat_model.compile(optimizer=keras.optimizers.Adam(1e-4))
qat_model.fit(
    x_train, epochs=QAT_EPOCHS, batch_size=BATCH_SIZE, verbose=2,
    callbacks=[compression.QuantizationAwareTraining(start_epoch=0)],
)
qat_sparsity = compression.sparsity_report(qat_model).sparsity
print(f"kernel sparsity after QAT: {100 * qat_sparsity:.2f}% "
      f"(before: {100 * sparsity.sparsity:.2f}%)")

# %% [markdown]
# ## 4. Export and verify
#
# Four files from the same data: the float32 model without quantization,
# the float32 model with int8 PTQ, the pruned model with int8 PTQ and the
# pruned + QAT model in int8. Each has `encode`, `decode` and `reconstruct`
# signatures. `verify` runs every signature with the LiteRT interpreter next
# to the Keras model it came from, checks that the ops and tensor types
# match the quantization mode, and reports the change in reconstruction
# negative log-likelihood.

# %%
# PTQ calibrates the activation ranges on training images; the QAT model
# brings its own ranges and needs none.
calibration = x_train[:CALIBRATION_SIZE]
variants = {
    "float32": (model, "none", None),
    "int8 PTQ": (model, "int8", calibration),
    "80% pruned, int8 PTQ": (pruned, "int8", calibration),
    "80% pruned + QAT, int8": (qat_model, "int8", None),
}
files, reports = {}, {}
for index, (name, (source, quantization, data)) in enumerate(variants.items()):
    path = os.path.join(OUTPUT_DIR, f"vae_{index}_{quantization}.tflite")
    files[name] = keras_vae.export.to_tflite(
        source, path, quantization=quantization, representative_data=data,
        overwrite=True,
    )
    reports[name] = keras_vae.export.verify(path, source, x_test[:500])
    print(f"{name}: {path}, {files[name].num_bytes:,} bytes; reconstruction "
          f"NLL {reports[name].nll_delta_pct:+.3f}% vs its Keras model")
display(Markdown(reports["80% pruned + QAT, int8"].to_markdown()))

# %% [markdown]
# ## 5. Size, latency and quality
#
# Every number below comes from the `.tflite` files, run with
# `export/litert_vae.py` (numpy and `ai-edge-litert`, no TensorFlow):
#
# * **size**: bytes on disk, and gzipped (what a download costs; pruned
#   zeros compress well);
# * **latency**: median time of one `reconstruct` call on one image, one
#   thread; **throughput**: images per second in batches of 256;
# * **quality**: test negative ELBO in nats per image, computed from the
#   file's `encode` and `decode` with one posterior sample per image. Every
#   file gets the same noise, so the differences between files are not
#   sampling noise; the last column compares with the float32 file.
#
# Keep in mind that the QAT model was fine-tuned for `QAT_EPOCHS` more
# epochs than the pruned PTQ model: part of its lead is extra training, not
# quantization alone. Pruning costs a few nats here; a longer fine-tuning
# run (`PRUNE_EPOCHS`) wins some of them back.

# %%
def import_litert_runtime():
    """Import `litert_vae` from the repository's `export/` folder."""
    for folder in ("../export", "export", "keras-vae/export"):
        if os.path.exists(os.path.join(folder, "litert_vae.py")):
            sys.path.insert(0, os.path.abspath(folder))
            import litert_vae

            return litert_vae
    raise ImportError(
        "litert_vae.py not found: run this notebook from the repository's "
        "`colab/` folder or root, or clone the repository next to it."
    )


litert_vae = import_litert_runtime()
PIXEL_EPS = 1.0 / 512  # half a step of the int8 output (steps of 1/256)


def file_negative_elbo(device_model, x, seed=SEED, batch_size=250):
    """Mean one-sample negative ELBO of `x` from a LiteRT file, numpy only."""
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, len(x), batch_size):
        x_batch = x[start:start + batch_size]
        pixels = x_batch.reshape(len(x_batch), -1)
        z_mean, z_log_var = device_model.encode(x_batch)
        noise = rng.standard_normal(z_mean.shape).astype("float32")
        z = z_mean + np.exp(0.5 * z_log_var) * noise
        p = np.clip(device_model.decode(z).reshape(len(z), -1),
                    PIXEL_EPS, 1.0 - PIXEL_EPS)
        log_px = np.sum(pixels * np.log(p) + (1 - pixels) * np.log1p(-p), -1)
        kl = 0.5 * np.sum(np.exp(z_log_var) + z_mean**2 - 1.0 - z_log_var, -1)
        values.append(kl - log_px)
    return float(np.mean(np.concatenate(values)))


rows = []
for name, info in files.items():
    device_model = litert_vae.LiteRTVAE(info.path, num_threads=1)
    timing = device_model.benchmark(
        "reconstruct", runs=BENCH_RUNS, throughput_runs=max(10, BENCH_RUNS // 10)
    )
    rows.append({
        "variant": name,
        "bytes": info.num_bytes,
        "gzip_bytes": info.gzip_bytes,
        "latency_median_us": timing["latency_median_us"],
        "throughput_per_s": timing["throughput_per_s"],
        "negative_elbo": file_negative_elbo(device_model, x_test),
        "verify_nll_delta_pct": reports[name].nll_delta_pct,
    })

# Every file sees the same noise, so the differences are not sampling noise.
reference = rows[0]["negative_elbo"]
lines = [
    f"Float32 Keras model: test negative ELBO {-float_elbo:.2f} nats per "
    "image (another draw of the posterior noise).",
    "",
    "| variant | size (kB) | gzip (kB) | latency, batch 1 (µs) "
    "| throughput (images/s) | negative ELBO (nats) | vs float32 file |",
    "|---|---:|---:|---:|---:|---:|---:|",
]
for row in rows:
    lines.append(
        f"| {row['variant']} | {row['bytes'] / 1e3:.0f} | "
        f"{row['gzip_bytes'] / 1e3:.0f} | {row['latency_median_us']:.0f} | "
        f"{row['throughput_per_s']:,.0f} | {row['negative_elbo']:.2f} | "
        f"{100 * (row['negative_elbo'] - reference) / reference:+.2f}% |"
    )
display(Markdown("\n".join(lines)))

# %% [markdown]
# The trade-off: quality against download size and against latency. Down
# and to the left is better.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for axis, key, label in (
    (axes[0], "gzip_bytes", "gzipped size (kB)"),
    (axes[1], "latency_median_us", "batch-1 latency (µs)"),
):
    for row in rows:
        value = row[key] / (1e3 if key == "gzip_bytes" else 1.0)
        axis.scatter(value, row["negative_elbo"], s=40)
        axis.annotate(row["variant"], (value, row["negative_elbo"]),
                      textcoords="offset points", xytext=(5, 5), fontsize=8)
    axis.axhline(reference, color="grey", linestyle="--", linewidth=0.8,
                 label="float32")
    axis.set_xlabel(label)
    axis.set_ylabel("test negative ELBO (nats per image)")
    axis.legend()
fig.suptitle("Compression trade-off (lower is better on both axes)")
fig.tight_layout()
fig.savefig(os.path.join(OUTPUT_DIR, "tradeoff.png"), dpi=100)
plt.show()

# %% [markdown]
# ## 6. On the device: no TensorFlow
#
# Copy `export/litert_vae.py` and the `.tflite` file to the device and
# `pip install numpy ai-edge-litert`. It works as a command (`info`,
# `sample`, `encode`, `decode`, `reconstruct`, `bench`) and as a module.
# Here it runs in a fresh Python process that never imports TensorFlow.

# %%
deploy_name = list(files)[-1]
deploy_path = files[deploy_name].path
runtime = os.path.join(os.path.dirname(litert_vae.__file__), "litert_vae.py")
samples_path = os.path.join(OUTPUT_DIR, "device_samples.npy")
for arguments in (
    ["info"],
    ["sample", "-n", "32", "--seed", "0", "--out", samples_path],
    ["bench", "--threads", "1", "--runs", str(BENCH_RUNS)],
):
    print(f"$ python litert_vae.py {os.path.basename(deploy_path)} "
          + " ".join(arguments))
    completed = subprocess.run(
        [sys.executable, runtime, deploy_path, *arguments],
        capture_output=True, text=True, check=True,
    )
    print(completed.stdout[-1500:])

check = subprocess.run(
    [sys.executable, "-c",
     "import sys; sys.path.insert(0, sys.argv[1]); import litert_vae; "
     "vae = litert_vae.LiteRTVAE(sys.argv[2]); vae.sample(4, seed=0); "
     "print('tensorflow imported:', 'tensorflow' in sys.modules)",
     os.path.dirname(runtime), deploy_path],
    capture_output=True, text=True, check=True,
)
print(check.stdout.strip())
assert "tensorflow imported: False" in check.stdout

samples = np.load(samples_path)
display(Image(keras_vae.plotting.image_grid(
    samples, os.path.join(OUTPUT_DIR, "device_samples.png"),
    title=f"Samples decoded on the device runtime ({deploy_name})",
)))

results = {
    "dataset": DATASET,
    "fast": FAST,
    "epochs": {"float": EPOCHS, "prune": PRUNE_EPOCHS, "qat": QAT_EPOCHS},
    "float_keras_negative_elbo": -float_elbo,
    "pruned_keras_negative_elbo": -pruned_elbo,
    "kernel_sparsity": sparsity.sparsity,
    "kernel_sparsity_after_qat": qat_sparsity,
    "sparsity_report": sparsity.to_dict(),
    "files": rows,
}
with open(os.path.join(OUTPUT_DIR, "results.json"), "w") as handle:
    json.dump(results, handle, indent=2)
print(json.dumps(results, indent=2))

# %% [markdown]
# ## Next
#
# * `export/README.md` in the repository: running the file on Android, iOS,
#   a Raspberry Pi and microcontrollers.
# * `03_anomaly_detection.ipynb`: score images with the ELBO, in Keras and
#   with the int8 file.
