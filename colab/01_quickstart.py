# %% [markdown]
# # keras-vae quickstart: train a VAE on MNIST in a few minutes
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/keras-vae/keras-vae/blob/main/colab/01_quickstart.ipynb)
#
# This tutorial trains a variational autoencoder (VAE) with `keras_vae`, then
# looks at what it learned:
#
# 1. load MNIST (5,000 real digits that ship with the package, so nothing is
#    downloaded; switch to the full 70,000-image MNIST or Fashion-MNIST with
#    one setting),
# 2. build an MLP VAE and train it with plain `model.fit`,
# 3. look at reconstructions, samples from the prior and the latent space,
# 4. measure the evidence lower bound (ELBO), the importance-weighted (IWAE)
#    bound on the negative log-likelihood and the number of active latent
#    units,
# 5. save the model to a `.keras` file and load it back.
#
# It runs on a CPU runtime; a GPU runtime is faster with the full data sets.
# The source of this notebook is `colab/01_quickstart.py` in the repository.

# %% [markdown]
# ## Setup
#
# On Colab the first cell installs keras-vae from GitHub; anywhere else it
# does nothing (install the package with `pip install -e .` from a clone).

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
# Settings. `KERAS_VAE_DATASET` picks the data: `mnist5k` (default, offline),
# or `mnist` / `fashion_mnist` (the full sets, downloaded by
# tensorflow-datasets; this works on Colab). `KERAS_VAE_FAST=1` shrinks the
# data and the number of epochs so the notebook runs in seconds: the test
# suite uses it to check that every cell still works.

# %%
# Keras picks its backend once, at import: choose it before importing keras.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FAST = os.environ.get("KERAS_VAE_FAST", "0") == "1"
DATASET = os.environ.get("KERAS_VAE_DATASET", "mnist5k")  # or "mnist", "fashion_mnist"
OUTPUT_DIR = os.environ.get("KERAS_VAE_OUTPUT_DIR", "keras_vae_outputs/01_quickstart")
EPOCHS = 2 if FAST else (30 if DATASET == "mnist5k" else 10)
IWAE_SAMPLES = 10 if FAST else 1000
LATENT_DIM = 16
SEED = 0
os.makedirs(OUTPUT_DIR, exist_ok=True)

import json

import keras
import numpy as np
from IPython.display import Image, Markdown, display

import keras_vae

keras.utils.set_random_seed(SEED)
print(f"keras {keras.__version__} ({keras.backend.backend()}), "
      f"keras-vae {keras_vae.__version__}; dataset={DATASET}, fast={FAST}")

# %% [markdown]
# ## 1. Data
#
# `keras_vae.datasets.load` returns `(x_train, y_train), (x_test, y_test)`
# with float32 images of shape `(n, 28, 28, 1)` in [0, 1] and integer labels.

# %%
(x_train, y_train), (x_test, y_test) = keras_vae.datasets.load(DATASET)
if FAST:
    x_train, y_train = x_train[:512], y_train[:512]
    x_test, y_test = x_test[:256], y_test[:256]
print("train:", x_train.shape, "test:", x_test.shape,
      "pixel range:", float(x_train.min()), float(x_train.max()))

# %% [markdown]
# ## 2. Build and train a VAE
#
# `mlp_vae` builds an encoder (image -> `[z_mean, z_log_var]`), a mirrored
# decoder (z -> Bernoulli logits of every pixel) and wraps them in
# `keras_vae.VAE`, a `keras.Model` whose `fit` minimises the negative ELBO.
# The training logs report `elbo` in nats per image (higher is better),
# split into the reconstruction term and the KL divergence to the prior.

# %%
model = keras_vae.models.mlp_vae(
    x_train.shape[1:], latent_dim=LATENT_DIM, hidden_units=(512, 256), seed=SEED
)
model.encoder.summary()
model.compile(optimizer=keras.optimizers.Adam(1e-3))
history = model.fit(
    x_train,
    epochs=EPOCHS,
    batch_size=128,
    validation_data=(x_test,),
    verbose=2,
)

# %%
import matplotlib.pyplot as plt

fig, axis = plt.subplots(figsize=(6, 3.5))
epochs = np.arange(1, len(history.history["elbo"]) + 1)
axis.plot(epochs, history.history["elbo"], label="train")
axis.plot(epochs, history.history["val_elbo"], label="test")
axis.set_xlabel("epoch")
axis.set_ylabel("ELBO (nats per image)")
axis.set_title("Training curve (higher is better)")
axis.legend()
plt.show()

# %% [markdown]
# ## 3. What did it learn?
#
# `keras_vae.plotting` writes PNG figures. Reconstructions go through the
# posterior mean: odd rows are test images, even rows what the model made of
# them.

# %%
display(Image(keras_vae.plotting.reconstruction_grid(
    model, x_test, os.path.join(OUTPUT_DIR, "reconstructions.png"))))

# %% [markdown]
# Samples: draw z from the prior N(0, I) and decode. `model.sample(n, seed=...)`
# returns pixel probabilities; the same seed gives the same images.

# %%
display(Image(keras_vae.plotting.sample_grid(
    model, os.path.join(OUTPUT_DIR, "samples.png"), num_samples=32)))

# %% [markdown]
# The latent space: posterior means of the test images, projected on their
# first two principal components and coloured by digit. Then a traversal:
# start from the code of one test image and sweep one latent dimension at a
# time (the dimensions whose posterior mean varies most over the data).

# %%
display(Image(keras_vae.plotting.latent_scatter(
    model, x_test, os.path.join(OUTPUT_DIR, "latent_scatter.png"),
    labels=y_test)))
display(Image(keras_vae.plotting.latent_traversal(
    model, os.path.join(OUTPUT_DIR, "latent_traversal.png"), x=x_test,
    max_dims=6)))

# %% [markdown]
# ## 4. How good is it?
#
# * `metrics.elbo`: the evidence lower bound, nats per image (higher is
#   better); `-elbo` is the "negative ELBO" usually quoted for MNIST.
# * `metrics.iwae_nll`: the importance-weighted bound with K samples
#   (Burda et al., 2016), a tighter upper bound on the negative
#   log-likelihood -log p(x); it is always below the negative ELBO.
# * `metrics.active_units`: how many latent dimensions the encoder actually
#   uses (the others collapsed to the prior).

# %%
test_elbo = keras_vae.metrics.elbo(model, x_test)
iwae = keras_vae.metrics.iwae_nll(model, x_test, num_samples=IWAE_SAMPLES)
active = keras_vae.metrics.active_units(model, x_test)
results = {
    "dataset": DATASET,
    "fast": FAST,
    "epochs": EPOCHS,
    "negative_elbo": -test_elbo,
    "iwae_nll": iwae["nll"],
    "iwae_stderr": iwae["stderr"],
    "iwae_samples": IWAE_SAMPLES,
    "bits_per_dim": iwae["bits_per_dim"],
    "active_units": active,
    "latent_dim": LATENT_DIM,
}
display(Markdown(
    "| metric | value |\n|---|---:|\n"
    f"| negative ELBO (nats per image) | {-test_elbo:.2f} |\n"
    f"| IWAE NLL, K={IWAE_SAMPLES} (nats per image) | {iwae['nll']:.2f} ± {iwae['stderr']:.2f} |\n"
    f"| bits per dimension | {iwae['bits_per_dim']:.4f} |\n"
    f"| active units | {active} of {LATENT_DIM} |"
))

# %% [markdown]
# ## 5. Save and load
#
# A `keras_vae.VAE` is a registered Keras object: it saves to one `.keras`
# file and loads back with `keras.saving.load_model`, with no custom objects
# to pass.

# %%
path = os.path.join(OUTPUT_DIR, "vae.keras")
model.save(path)
restored = keras.saving.load_model(path)
difference = np.max(np.abs(
    np.asarray(restored.reconstruct(x_test[:64]))
    - np.asarray(model.reconstruct(x_test[:64]))
))
print(f"saved {path} ({os.path.getsize(path) / 1e6:.2f} MB); "
      f"max reconstruction difference after loading: {difference:.2e}")
results["reload_max_abs_difference"] = float(difference)

with open(os.path.join(OUTPUT_DIR, "results.json"), "w") as handle:
    json.dump(results, handle, indent=2)
print(json.dumps(results, indent=2))

# %% [markdown]
# ## Next
#
# * `02_compress_and_deploy.ipynb`: prune to 80% sparsity, quantization-aware
#   training, int8 LiteRT export, and running the file without TensorFlow.
# * `03_anomaly_detection.ipynb`: use the ELBO as an anomaly score.
