# %% [markdown]
# # keras-vae: anomaly detection with the ELBO, in Keras and in int8 LiteRT
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/keras-vae/keras-vae/blob/main/colab/03_anomaly_detection.ipynb)
#
# A VAE trained only on "normal" data gives those data a high likelihood;
# anything unlike them gets a low one. Here the normal data are the MNIST
# digits 0-9 except one (7 by default), and the anomalies are the held-out
# digit. This tutorial
#
# 1. trains an MLP VAE on the normal digits only,
# 2. scores every test image with the negative ELBO and with the tighter
#    importance-weighted bound (IWAE), both in nats per image,
# 3. picks a threshold on held-out normal images (5% false alarms),
#    reports the ROC-AUC, and shows the most anomalous images,
# 4. exports the model to an int8 LiteRT (TFLite) file and computes the same
#    scores with the TensorFlow-free runtime from `export/`, to see what the
#    8-bit model on a device would flag.
#
# It runs on a CPU runtime in a few minutes. The source of this notebook is
# `colab/03_anomaly_detection.py` in the repository.

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
# Settings, read from environment variables so the same notebook runs as a
# quick check and as the full tutorial:
#
# * `KERAS_VAE_DATASET`: `mnist5k` (default: 5,000 real digits shipped with
#   the package, offline), or `mnist` / `fashion_mnist` (full sets through
#   tensorflow-datasets; this works on Colab).
# * `KERAS_VAE_ANOMALY_CLASS`: the class left out of training (default 7).
# * `KERAS_VAE_FAST=1`: a few hundred images and two epochs, so every cell
#   runs in seconds (the test suite uses it).

# %%
# Keras picks its backend once, at import: choose it before importing keras.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FAST = os.environ.get("KERAS_VAE_FAST", "0") == "1"
DATASET = os.environ.get("KERAS_VAE_DATASET", "mnist5k")  # or "mnist", "fashion_mnist"
ANOMALY_CLASS = int(os.environ.get("KERAS_VAE_ANOMALY_CLASS", "7"))
OUTPUT_DIR = os.environ.get(
    "KERAS_VAE_OUTPUT_DIR", "keras_vae_outputs/03_anomaly_detection"
)
EPOCHS = 2 if FAST else (30 if DATASET == "mnist5k" else 10)
IWAE_SAMPLES = 5 if FAST else 200
CALIBRATION_SIZE = 100 if FAST else 500  # images that calibrate int8
FALSE_ALARM_RATE = 0.05
LATENT_DIM = 16
SEED = 0
os.makedirs(OUTPUT_DIR, exist_ok=True)

import json

import keras
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display
from sklearn import metrics as sk_metrics

import keras_vae

keras.utils.set_random_seed(SEED)
print(f"keras {keras.__version__} ({keras.backend.backend()}), "
      f"keras-vae {keras_vae.__version__}; dataset={DATASET}, "
      f"anomaly class={ANOMALY_CLASS}, fast={FAST}")

# %% [markdown]
# ## 1. Normal and anomalous data
#
# Training uses only the normal classes. A tenth of the normal training
# images is held out to set the threshold; the test set keeps every class,
# so about one test image in ten is an anomaly.

# %%
(x_train, y_train), (x_test, y_test) = keras_vae.datasets.load(DATASET)
x_normal = x_train[y_train != ANOMALY_CLASS]
order = np.random.default_rng(SEED).permutation(len(x_normal))
num_threshold = len(x_normal) // 10
x_threshold = x_normal[order[:num_threshold]]
x_fit = x_normal[order[num_threshold:]]
if FAST:
    x_fit, x_threshold = x_fit[:512], x_threshold[:128]
    x_test, y_test = x_test[:300], y_test[:300]
is_anomaly = (y_test == ANOMALY_CLASS).astype("int64")
print(f"train on {len(x_fit)} normal images, threshold from "
      f"{len(x_threshold)} held-out normal images; test: "
      f"{int(is_anomaly.sum())} anomalies among {len(x_test)} images")

# %% [markdown]
# ## 2. Train a VAE on the normal data
#
# The same model as in the quickstart: an MLP encoder and decoder,
# Bernoulli pixels, 16 latent dimensions. The validation ELBO is measured on
# the held-out normal images.

# %%
model = keras_vae.models.mlp_vae(
    x_fit.shape[1:], latent_dim=LATENT_DIM, hidden_units=(512, 256), seed=SEED
)
model.compile(optimizer=keras.optimizers.Adam(1e-3))
history = model.fit(
    x_fit, epochs=EPOCHS, batch_size=128, validation_data=(x_threshold,),
    verbose=2,
)

# %% [markdown]
# ## 3. Anomaly scores
#
# Two scores, both in nats per image, higher meaning more anomalous:
#
# * the **negative ELBO** (`keras_vae.metrics.elbo`, one posterior sample):
#   cheap, what training minimised;
# * the **IWAE bound** on -log p(x) (`keras_vae.metrics.iwae_nll` with K
#   importance samples): closer to the true negative log-likelihood and less
#   noisy, at K times the decoder cost.
#
# The threshold is the 95th percentile of the score on held-out normal
# images, so about 5% of normal images raise a false alarm.

# %%
def keras_scores(x):
    """Negative ELBO and IWAE NLL of every image, from the Keras model."""
    _, elbo = keras_vae.metrics.elbo(model, x, seed=SEED, return_per_example=True)
    iwae = keras_vae.metrics.iwae_nll(
        model, x, num_samples=IWAE_SAMPLES, seed=SEED, return_per_example=True
    )
    return {"negative ELBO": -elbo, f"IWAE (K={IWAE_SAMPLES})": iwae["per_example"]}


def evaluate(test_scores, threshold_scores):
    """ROC-AUC, threshold and detection rates of each score."""
    rows = {}
    for name, scores in test_scores.items():
        threshold = float(np.quantile(threshold_scores[name], 1 - FALSE_ALARM_RATE))
        flagged = scores > threshold
        rows[name] = {
            "roc_auc": float(sk_metrics.roc_auc_score(is_anomaly, scores)),
            "average_precision": float(
                sk_metrics.average_precision_score(is_anomaly, scores)
            ),
            "threshold": threshold,
            "detection_rate": float(flagged[is_anomaly == 1].mean()),
            "false_alarm_rate": float(flagged[is_anomaly == 0].mean()),
        }
    return rows


def show(rows, title):
    lines = [
        f"**{title}**", "",
        "| score | ROC-AUC | average precision | threshold (nats) "
        "| anomalies flagged | normal images flagged |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['roc_auc']:.3f} | {row['average_precision']:.3f} "
            f"| {row['threshold']:.1f} | {100 * row['detection_rate']:.1f}% "
            f"| {100 * row['false_alarm_rate']:.1f}% |"
        )
    display(Markdown("\n".join(lines)))


test_scores = keras_scores(x_test)
threshold_scores = keras_scores(x_threshold)
keras_rows = evaluate(test_scores, threshold_scores)
show(keras_rows, "Float32 Keras model")

# %% [markdown]
# How the scores of normal and anomalous test images overlap, and the ROC
# curve of each score (the area under it is the ROC-AUC: 1 separates
# perfectly, 0.5 is chance).

# %%
iwae_name = f"IWAE (K={IWAE_SAMPLES})"
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
bins = np.linspace(*np.quantile(test_scores[iwae_name], [0.0, 0.995]), 50)
left.hist(test_scores[iwae_name][is_anomaly == 0], bins, alpha=0.6,
          density=True, label="normal")
left.hist(test_scores[iwae_name][is_anomaly == 1], bins, alpha=0.6,
          density=True, label=f"anomaly ({ANOMALY_CLASS})")
left.axvline(keras_rows[iwae_name]["threshold"], color="k", linestyle="--",
             label="threshold")
left.set_xlabel(f"{iwae_name} score (nats per image)")
left.set_ylabel("density")
left.legend()
for name, scores in test_scores.items():
    fpr, tpr, _ = sk_metrics.roc_curve(is_anomaly, scores)
    right.plot(fpr, tpr, label=f"{name} (AUC {keras_rows[name]['roc_auc']:.3f})")
right.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
right.set_xlabel("false alarm rate")
right.set_ylabel("detection rate")
right.set_title("ROC curves")
right.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# A caveat that holds for every likelihood-based detector: the score also
# measures how *complex* an image is. A digit with few lit pixels (the 1
# above all) costs far fewer nats than one with many strokes, whether or not
# the model saw its class in training, so a held-out class is only as easy
# to flag as its images are costly compared with the normal ones. The mean
# score of each test class, next to its mean number of lit pixels, shows
# how much of the separation is left for novelty.

# %%
classes = np.unique(y_test)
mean_score = [test_scores[iwae_name][y_test == c].mean() for c in classes]
lit_pixels = [(x_test[y_test == c] > 0.5).sum(axis=(1, 2, 3)).mean() for c in classes]
fig, axis = plt.subplots(figsize=(7, 3.5))
colours = ["tab:red" if c == ANOMALY_CLASS else "tab:blue" for c in classes]
axis.bar(classes, mean_score, color=colours)
for c, score, pixels in zip(classes, mean_score, lit_pixels):
    axis.annotate(f"{pixels:.0f} px", (c, score), ha="center",
                  textcoords="offset points", xytext=(0, 3), fontsize=8)
axis.set_xticks(classes)
axis.set_xlabel("test class (red: never seen in training)")
axis.set_ylabel(f"mean {iwae_name} score (nats)")
axis.set_title("Mean score per class, with the mean number of lit pixels")
fig.tight_layout()
plt.show()

# %% [markdown]
# The 16 test images with the highest IWAE score, with their class and
# score (the held-out class in red). Normal images among them are usually
# unusual or badly written digits.

# %%
def show_images(images, captions, colours, title, path):
    columns = 8
    rows = int(np.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.3, rows * 2.0),
                             squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, caption, colour in zip(axes.flat, images, captions, colours):
        axis.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
        axis.set_title(caption, fontsize=8, color=colour)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.show()


most_anomalous = np.argsort(-test_scores[iwae_name])[:16]
show_images(
    x_test[most_anomalous],
    [f"class {y_test[i]}\n{test_scores[iwae_name][i]:.0f} nats"
     for i in most_anomalous],
    ["tab:red" if is_anomaly[i] else "black" for i in most_anomalous],
    f"Most anomalous test images (IWAE score; red: class {ANOMALY_CLASS})",
    os.path.join(OUTPUT_DIR, "most_anomalous.png"),
)

# %% [markdown]
# ## 4. The same scores from an int8 LiteRT file
#
# `keras_vae.export.to_tflite` writes one `.tflite` file with `encode`,
# `decode` and `reconstruct` signatures, weights and activations in int8
# (calibrated on normal training images); `keras_vae.export.verify` runs it
# with the LiteRT interpreter next to the Keras model.

# %%
tflite_path = os.path.join(OUTPUT_DIR, "vae_int8.tflite")
tflite_file = keras_vae.export.to_tflite(
    model, tflite_path, quantization="int8",
    representative_data=x_fit[:CALIBRATION_SIZE], overwrite=True,
)
report = keras_vae.export.verify(tflite_path, model, x_test[:500])
display(Markdown(report.to_markdown()))

# %% [markdown]
# On the device there is no TensorFlow: `export/litert_vae.py` needs numpy
# and `ai-edge-litert` only. The scores are a few lines of numpy around its
# `encode` and `decode`: draw K codes z ~ q(z | x) on the host, decode them,
# and combine log p(x | z) + log p(z) - log q(z | x). The file's pixel
# probabilities come in steps of 1/256, so they are clipped to
# [1/512, 1 - 1/512] before taking logs.

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
device_model = litert_vae.LiteRTVAE(tflite_path, num_threads=1)
PIXEL_EPS = 1.0 / 512


def log_normal(z, mean, log_var):
    return -0.5 * np.sum(
        np.log(2 * np.pi) + log_var + (z - mean) ** 2 / np.exp(log_var), axis=-1
    )


def device_scores(x, num_samples=IWAE_SAMPLES, seed=SEED, batch_size=250):
    """Negative ELBO and IWAE NLL of every image from the LiteRT file."""
    rng = np.random.default_rng(seed)
    negative_elbo, iwae = [], []
    for start in range(0, len(x), batch_size):
        x_batch = x[start:start + batch_size]
        pixels = x_batch.reshape(len(x_batch), -1)
        z_mean, z_log_var = device_model.encode(x_batch)
        log_px, log_weights = [], []
        for _ in range(num_samples):
            noise = rng.standard_normal(z_mean.shape).astype("float32")
            z = z_mean + np.exp(0.5 * z_log_var) * noise
            p = device_model.decode(z).reshape(len(z), -1)
            p = np.clip(p, PIXEL_EPS, 1.0 - PIXEL_EPS)
            log_px.append(np.sum(
                pixels * np.log(p) + (1.0 - pixels) * np.log1p(-p), axis=-1
            ))
            log_weights.append(
                log_px[-1] + log_normal(z, 0.0, 0.0)
                - log_normal(z, z_mean, z_log_var)
            )
        # The ELBO as in Keras: one sample's log p(x | z) and the exact KL.
        kl = 0.5 * np.sum(np.exp(z_log_var) + z_mean**2 - 1.0 - z_log_var, -1)
        negative_elbo.append(kl - log_px[0])
        log_weights = np.stack(log_weights, axis=1).astype("float64")
        top = log_weights.max(axis=1)
        iwae.append(-(top + np.log(np.mean(np.exp(log_weights - top[:, None]), 1))))
    return {"negative ELBO": np.concatenate(negative_elbo),
            iwae_name: np.concatenate(iwae)}


device_test_scores = device_scores(x_test)
device_threshold_scores = device_scores(x_threshold)
device_rows = evaluate(device_test_scores, device_threshold_scores)
show(device_rows, "int8 LiteRT file, scored without TensorFlow")

# %% [markdown]
# Does the 8-bit model rank the images like the float one? The rank
# correlation of the two IWAE scores, how many of the float model's flags the
# int8 model raises too, and the mean score shift in nats.

# %%
from scipy import stats

float_flags = test_scores[iwae_name] > keras_rows[iwae_name]["threshold"]
device_flags = device_test_scores[iwae_name] > device_rows[iwae_name]["threshold"]
agreement = {
    "spearman": float(stats.spearmanr(
        test_scores[iwae_name], device_test_scores[iwae_name]
    ).statistic),
    "same_decision": float(np.mean(float_flags == device_flags)),
    "mean_shift_nats": float(np.mean(
        device_test_scores[iwae_name] - test_scores[iwae_name]
    )),
}
lines = [
    "| | float32 Keras | int8 LiteRT |", "|---|---:|---:|",
]
for name in test_scores:
    lines.append(
        f"| ROC-AUC, {name} | {keras_rows[name]['roc_auc']:.3f} "
        f"| {device_rows[name]['roc_auc']:.3f} |"
    )
lines += [
    f"| anomalies flagged ({iwae_name}) | "
    f"{100 * keras_rows[iwae_name]['detection_rate']:.1f}% | "
    f"{100 * device_rows[iwae_name]['detection_rate']:.1f}% |",
    "",
    f"Spearman rank correlation of the IWAE scores: {agreement['spearman']:.4f}; "
    f"same decision on {100 * agreement['same_decision']:.1f}% of the test "
    f"images; int8 scores are {agreement['mean_shift_nats']:+.2f} nats higher "
    f"on average. The int8 file is {tflite_file.num_bytes / 1e3:.0f} kB.",
]
display(Markdown("\n".join(lines)))

results = {
    "dataset": DATASET,
    "fast": FAST,
    "anomaly_class": ANOMALY_CLASS,
    "epochs": EPOCHS,
    "iwae_samples": IWAE_SAMPLES,
    "num_test": int(len(x_test)),
    "num_anomalies": int(is_anomaly.sum()),
    "keras": keras_rows,
    "int8_litert": device_rows,
    "agreement": agreement,
    "tflite_bytes": int(tflite_file.num_bytes),
    "verify_nll_delta_pct": report.nll_delta_pct,
}
with open(os.path.join(OUTPUT_DIR, "results.json"), "w") as handle:
    json.dump(results, handle, indent=2)
print(json.dumps(results, indent=2))

# %% [markdown]
# ## Next
#
# * Try another held-out class (`KERAS_VAE_ANOMALY_CLASS=1` shows the
#   simple-image caveat) or Fashion-MNIST (`KERAS_VAE_DATASET=fashion_mnist`).
# * `02_compress_and_deploy.ipynb` prunes and quantizes the model further
#   and measures size and latency on the device runtime.
