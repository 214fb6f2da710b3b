# %% [markdown]
# # keras-vae: the VAE as a data compressor
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/keras-vae/keras-vae/blob/main/colab/05_vae_as_a_compressor.ipynb)
#
# The negative ELBO of a VAE is a code length: with bits-back coding an
# image costs about -ELBO / ln 2 bits. `keras_vae.codec` turns that into
# bytes on disk. This tutorial:
#
# 1. trains a VAE on binarised MNIST and compresses the test digits
#    **losslessly** with bits-back ANS (BB-ANS), at the rate of the model's
#    negative ELBO, then restores every bit;
# 2. does the same for 8-bit digits with the `DiscretizedLogistic`
#    likelihood;
# 3. compares both with gzip, bz2, lzma and PNG on the same images;
# 4. compresses **lossily** with quantised latent codes: a rate-distortion
#    curve and the reconstructions;
# 5. shows what the stream's header protects against (another model, a
#    corrupted byte);
# 6. compresses with the int8 `.tflite` file and the TensorFlow-free
#    runtime, as a device would.
#
# It runs on a CPU runtime in a few minutes. The source of this notebook is
# `colab/05_vae_as_a_compressor.py` in the repository.

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
# Settings: `KERAS_VAE_FAST=1` uses a few hundred images and two epochs so
# every cell runs in seconds (the test suite uses it).

# %%
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FAST = os.environ.get("KERAS_VAE_FAST", "0") == "1"
OUTPUT_DIR = os.environ.get("KERAS_VAE_OUTPUT_DIR",
                            "keras_vae_outputs/05_vae_as_a_compressor")
EPOCHS = 2 if FAST else 100
NUM_TEST = 64 if FAST else 1000
SEED = 0
os.makedirs(OUTPUT_DIR, exist_ok=True)

import bz2
import gzip
import io
import json
import lzma

import keras
import numpy as np
from IPython.display import Markdown, display

import keras_vae
from keras_vae import codec

keras.utils.set_random_seed(SEED)
print(f"keras {keras.__version__} ({keras.backend.backend()}), "
      f"keras-vae {keras_vae.__version__}; fast={FAST}")

# %% [markdown]
# ## 1. Data
#
# MNIST-5k ships with the package. Binarised MNIST is "pixel > 127"; 8-bit
# MNIST keeps the grey levels as uint8. The networks see pixels in [0, 1].

# %%
(x_train, _), (x_test, _) = keras_vae.datasets.load("mnist5k")
if FAST:
    x_train = x_train[:512]
levels_train = np.rint(x_train * 255).astype(np.uint8)
levels_test = np.rint(x_test[:NUM_TEST] * 255).astype(np.uint8)
binary_train = (levels_train > 127).astype("float32")
binary_test = levels_test > 127
PIXELS = int(np.prod(binary_test.shape[1:]))
print("binary test:", binary_test.shape, binary_test.dtype,
      "| 8-bit test:", levels_test.shape, levels_test.dtype)

# %% [markdown]
# ## 2. Lossless: bits-back coding of binarised digits
#
# A Bernoulli VAE is trained as usual. `codec.compress(model, x)` then codes
# the images with BB-ANS: for each batch it *pops* latent codes z from the
# stream under q(z | x) (taking bits from what is already there), pushes
# the pixels under p(x | z) and pushes z under the prior. The bits taken
# for z come back when the receiver decodes, so an image costs about its
# negative ELBO. Only the very first pop has nothing to take from: that
# start-up cost is paid once per stream and reported separately.

# %%
def train(likelihood, x):
    keras.utils.set_random_seed(SEED)
    model = keras_vae.models.mlp_vae(
        (28, 28, 1), latent_dim=32, hidden_units=(512, 256),
        likelihood=likelihood, seed=SEED)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(x, epochs=EPOCHS, batch_size=128, verbose=0)
    return model


def negative_elbo_bits_per_pixel(model, x, samples=10):
    values = []
    for seed in range(samples):
        terms = model.compute_terms(np.asarray(x, "float32"), seed=seed)
        values.append(keras.ops.convert_to_numpy(
            terms["reconstruction"] + terms["kl"]))
    return float(np.mean(values)) / (np.log(2) * PIXELS)


binary_model = train("bernoulli", binary_train)
stream = codec.compress(binary_model, binary_test)
restored = codec.decompress(binary_model, stream)
header = codec.describe(stream)
binary_row = {
    "exact": bool(np.array_equal(restored, binary_test)),
    "bpp_file": 8 * len(stream) / binary_test.size,
    "bpp_net": (8 * header["payload_bytes"] - header["startup_bits"])
    / binary_test.size,
    "negative_elbo_bpp": negative_elbo_bits_per_pixel(binary_model, binary_test),
    "startup_bits": header["startup_bits"],
    "header_bytes": header["header_bytes"],
}
print(json.dumps(binary_row, indent=1))

# %% [markdown]
# ## 3. Lossless: 8-bit digits
#
# For grey levels the decoder emits a location and a scale per pixel and
# `DiscretizedLogistic` puts on each of the 256 levels the mass of a
# logistic over that level's bin (the edge levels take the tails). uint8
# images go in and come out.

# %%
levels_model = train("discretized_logistic",
                     (levels_train / 255.0).astype("float32"))
stream8 = codec.compress(levels_model, levels_test)
restored8 = codec.decompress(levels_model, stream8)
header8 = codec.describe(stream8)
levels_row = {
    "exact": bool(np.array_equal(restored8, levels_test)
                  and restored8.dtype == np.uint8),
    "bpp_file": 8 * len(stream8) / levels_test.size,
    "bpp_net": (8 * header8["payload_bytes"] - header8["startup_bits"])
    / levels_test.size,
    "negative_elbo_bpp": negative_elbo_bits_per_pixel(levels_model,
                                                      levels_test / 255.0),
}
print(json.dumps(levels_row, indent=1))

# %% [markdown]
# ## 4. Against the usual compressors
#
# The same images with gzip, bz2 and lzma on one byte per pixel, and PNG
# per image (Pillow; 1-bit PNG for binary data). `benchmarks/codec_table.py`
# adds packed bits, JPEG-XL and WebP lossless and sheets of images.

# %%
from PIL import Image


def png_bytes(images, mode):
    total = 0
    for image in images.reshape(-1, 28, 28):
        buffer = io.BytesIO()
        Image.fromarray(image > 0 if mode == "1" else image).save(
            buffer, format="PNG", optimize=True)
        total += len(buffer.getvalue())
    return total


def standard(images, mode):
    raw = images.astype(np.uint8).tobytes()
    sizes = {"gzip": len(gzip.compress(raw, 9, mtime=0)),
             "bz2": len(bz2.compress(raw, 9)),
             "lzma": len(lzma.compress(raw, preset=9)),
             "PNG": png_bytes(images.astype(np.uint8), mode)}
    return {name: 8 * size / images.size for name, size in sizes.items()}


table = {"binarised": {"keras-vae bits-back": binary_row["bpp_file"],
                       **standard(binary_test, "1")},
         "8-bit": {"keras-vae bits-back": levels_row["bpp_file"],
                   **standard(levels_test, "L")}}
lines = ["| codec | binarised (bits/pixel) | 8-bit (bits/pixel) |",
         "|---|---|---|"]
for name in table["binarised"]:
    lines.append(f"| {name} | {table['binarised'][name]:.3f} | "
                 f"{table['8-bit'][name]:.3f} |")
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## 5. Lossy: latent codes
#
# `mode="lossy"` keeps only the posterior means, quantised on a grid of
# `step` prior standard deviations, and codes the integers under a
# Gaussian entropy model with one scale per latent dimension (one header
# byte each). Decoding returns the decoder's mean. A coarser grid is
# fewer bits and a blurrier digit.

# %%
import matplotlib.pyplot as plt

steps = (2.0, 1.0, 0.5, 0.25, 0.1)
curve = []
reconstructions = {}
for step in steps:
    lossy = codec.compress(levels_model, levels_test, mode="lossy", step=step)
    decoded = codec.decompress(levels_model, lossy)
    mse = np.mean((decoded.astype(float) - levels_test) ** 2, axis=(1, 2, 3))
    psnr = float(np.mean(10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))))
    curve.append({"step": step, "bits_per_image": 8 * len(lossy) / len(levels_test),
                  "psnr": psnr})
    reconstructions[step] = decoded[:8]

fig, axis = plt.subplots(figsize=(5.5, 3.5))
axis.plot([p["bits_per_image"] for p in curve], [p["psnr"] for p in curve], "o-")
for point in curve:
    axis.annotate(f"step {point['step']:g}",
                  (point["bits_per_image"], point["psnr"]), fontsize=8)
axis.set_xlabel("bits per image")
axis.set_ylabel("PSNR (dB)")
axis.set_title("keras-vae latent codes, 8-bit MNIST")
fig.tight_layout()
fig.savefig(os.path.join(OUTPUT_DIR, "rate_distortion.png"))
plt.show()

# %%
fig, axes = plt.subplots(len(steps) + 1, 8, figsize=(8, len(steps) + 1.5))
for column in range(8):
    axes[0, column].imshow(levels_test[column, ..., 0], cmap="gray")
    for row, step in enumerate(steps, start=1):
        axes[row, column].imshow(reconstructions[step][column, ..., 0],
                                 cmap="gray", vmin=0, vmax=255)
for axis in axes.ravel():
    axis.set_xticks([])
    axis.set_yticks([])
axes[0, 0].set_ylabel("original", fontsize=8)
for row, point in enumerate(curve, start=1):
    axes[row, 0].set_ylabel(f"{point['bits_per_image']:.0f} bits", fontsize=8)
fig.tight_layout()
fig.savefig(os.path.join(OUTPUT_DIR, "reconstructions.png"))
plt.show()

# %% [markdown]
# ## 6. What the header protects against
#
# Every stream starts with a small header: magic bytes, format version,
# the model's fingerprint (a hash of its architecture and weights), shape,
# dtype, mode, parameters and CRC32 checksums. Decoding with another model
# or a damaged stream raises a `ValueError`; a lossless stream also carries
# a digest of the data, so a receiver whose network computes different
# numbers gets an error, never wrong pixels.

# %%
print(json.dumps(header, indent=1))
damaged = bytearray(stream)
damaged[len(damaged) // 2] ^= 0x01
errors = {}
for name, model, data in (("corrupted byte", binary_model, bytes(damaged)),
                          ("truncated", binary_model, stream[:-7]),
                          ("another model", levels_model, stream)):
    try:
        codec.decompress(model, data)
        errors[name] = "decoded"
    except ValueError as error:
        errors[name] = str(error)
    print(f"{name}: {errors[name][:110]}...")

# %% [markdown]
# ## 7. On a device: the int8 file and the TensorFlow-free runtime
#
# Bits-back needs the sender and the receiver to compute the same network
# outputs bit for bit. An int8 `.tflite` file does, on the same LiteRT
# build and CPU kind: the runtime `export/litert_vae.py` (numpy,
# ai-edge-litert and constriction) compresses and decompresses with the
# file's `encode` and `decode` signatures.

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
tflite_path = os.path.join(OUTPUT_DIR, "binary_int8.tflite")
keras_vae.export.to_tflite(binary_model, tflite_path,
                           representative_data=binary_train[:500],
                           overwrite=True)
device = litert_vae.LiteRTVAE(tflite_path, num_threads=1)
device_stream = litert_vae.compress(device, binary_test)
device_restored = litert_vae.decompress(device, device_stream)
device_row = {"exact": bool(np.array_equal(device_restored, binary_test)),
              "bpp_file": 8 * len(device_stream) / binary_test.size}
print(json.dumps(device_row))

# %%
results = {
    "fast": FAST,
    "epochs": EPOCHS,
    "binary": binary_row,
    "levels": levels_row,
    "standard": table,
    "lossy": curve,
    "errors": errors,
    "int8_runtime": device_row,
}
with open(os.path.join(OUTPUT_DIR, "results.json"), "w") as handle:
    json.dump(results, handle, indent=1)
print(f"wrote {OUTPUT_DIR}/results.json")
