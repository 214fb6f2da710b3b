# %% [markdown]
# # keras-vae: smaller by design with distillation and architecture search
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/keras-vae/keras-vae/blob/main/colab/04_distill_and_search.ipynb)
#
# Pruning and int8 make a given model smaller. This tutorial makes the
# model itself smaller, two ways, and measures the result:
#
# 1. train a big teacher VAE (the default `mlp_vae`, 1.08 million weights),
# 2. **distil** a student with 7% of its weights
#    (`keras_vae.compression.Distiller`) and train the same student alone
#    for the same number of optimizer steps: learning curves, test ELBO,
#    IWAE bound and a sample-quality score (KID),
# 3. export the distilled student to int8 LiteRT and check the file,
# 4. **search** architectures with KerasTuner (`keras_vae.search`): every
#    candidate is trained, scored on quality and timed as an int8 file;
#    the Pareto front shows the best quality for each size and latency.
#
# It runs on a CPU runtime in about 15 minutes. The source of this
# notebook is `colab/04_distill_and_search.py` in the repository.

# %% [markdown]
# ## Setup
#
# On Colab the first cell clones keras-vae and installs it; anywhere else it
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
# Settings, read from environment variables: `KERAS_VAE_DATASET` (`mnist5k`
# by default, offline; `mnist` or `fashion_mnist` through
# tensorflow-datasets) and `KERAS_VAE_FAST=1` (a few hundred images, one or
# two epochs per stage, two search trials: every cell runs in seconds; the
# test suite uses it).

# %%
# Keras picks its backend once, at import: choose it before importing keras.
# Export to LiteRT traces the model with TensorFlow.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FAST = os.environ.get("KERAS_VAE_FAST", "0") == "1"
DATASET = os.environ.get("KERAS_VAE_DATASET", "mnist5k")  # or "mnist", "fashion_mnist"
OUTPUT_DIR = os.environ.get(
    "KERAS_VAE_OUTPUT_DIR", "keras_vae_outputs/04_distill_and_search"
)
SMALL = DATASET == "mnist5k"
TEACHER_EPOCHS = 2 if FAST else (30 if SMALL else 10)
STUDENT_EPOCHS = 2 if FAST else (30 if SMALL else 10)
STUDENT_HIDDEN = (48,)
IWAE_SAMPLES = 10 if FAST else 500
KID_SAMPLES = 200 if FAST else 1000
SEARCH_TRIALS = 2 if FAST else 12
SEARCH_MINUTES = 5 if FAST else 10
SEARCH_EPOCHS = 1 if FAST else 10
BATCH_SIZE = 128
SEED = 0
os.makedirs(OUTPUT_DIR, exist_ok=True)

import json

import keras
import numpy as np
from IPython.display import Image, Markdown, display

import keras_vae
from keras_vae.compression import Distiller
from keras_vae.compression.distillation import build_student

keras.utils.set_random_seed(SEED)
print(f"keras {keras.__version__} ({keras.backend.backend()}), "
      f"keras-vae {keras_vae.__version__}; dataset={DATASET}, fast={FAST}")

# %%
(x_train, y_train), (x_test, y_test) = keras_vae.datasets.load(DATASET)
if FAST:
    x_train, x_test = x_train[:512], x_test[:256]
print("train:", x_train.shape, "test:", x_test.shape)

# %% [markdown]
# ## 1. The teacher
#
# The default `mlp_vae`: encoder 784-512-256, latent 16, mirrored decoder.

# %%
teacher = keras_vae.models.mlp_vae(x_train.shape[1:], seed=SEED)
teacher.compile(optimizer=keras.optimizers.Adam(1e-3))
teacher.fit(x_train, epochs=TEACHER_EPOCHS, batch_size=BATCH_SIZE, verbose=2)
print(f"teacher: {teacher.count_params():,} parameters, test negative ELBO "
      f"{-keras_vae.metrics.elbo(teacher, x_test):.2f}")

# %% [markdown]
# ## 2. Distil a student, and train the same student alone
#
# The student is an MLP 784-48-16 with the teacher's latent size and
# likelihood. `Distiller` trains it on its own negative ELBO plus
#
# * a posterior term, KL(q_teacher(z|x) || q_student(z|x)): the student's
#   encoder learns the teacher's codes;
# * an output term: at a sample of the teacher's posterior, the teacher's
#   decoder probabilities are a soft target for the student's decoder.
#
# The teacher is frozen. Both students start from the same weights and see
# the same number of optimizer steps; `keras_vae.callbacks.LearningCurve`
# records the test negative ELBO after every epoch.

# %%
student = build_student(teacher, STUDENT_HIDDEN, seed=SEED)
alone = build_student(teacher, STUDENT_HIDDEN, seed=SEED)
alone.set_weights(student.get_weights())
print(f"student: {student.count_params():,} parameters "
      f"({100 * student.count_params() / teacher.count_params():.1f}% of the "
      "teacher)")

distiller = Distiller(teacher, student, seed=SEED)
distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
distilled_curve = keras_vae.callbacks.LearningCurve(student, x_test)
distiller.fit(x_train, epochs=STUDENT_EPOCHS, batch_size=BATCH_SIZE,
              callbacks=[distilled_curve], verbose=2)

alone.compile(optimizer=keras.optimizers.Adam(1e-3))
alone_curve = keras_vae.callbacks.LearningCurve(alone, x_test)
alone.fit(x_train, epochs=STUDENT_EPOCHS, batch_size=BATCH_SIZE,
          callbacks=[alone_curve], verbose=2)

teacher_score = -keras_vae.metrics.elbo(teacher, x_test)
display(Image(keras_vae.plotting.learning_curves(
    {name: [([p["steps"] for p in curve.points],
             [p["negative_elbo"] for p in curve.points])]
     for name, curve in (("distilled", distilled_curve),
                         ("alone", alone_curve))},
    os.path.join(OUTPUT_DIR, "learning_curves.png"),
    reference={"teacher": teacher_score},
    title="Student: distilled vs alone, same optimizer steps")))

# %% [markdown]
# ## 3. How good are they?
#
# Three numbers per model, on the test images: the negative ELBO, the
# IWAE bound on the negative log-likelihood (tighter, K samples), and KID,
# a sample-quality score: how far 1,000 samples from the prior are from the
# test images, in the features of a small classifier that keras-vae trains
# once on its embedded MNIST digits and caches (no download). Lower is
# better for all three; KID comes with a standard error, and KIDs compare
# only when computed with the same feature network (its name is printed).

# %%
rows, results = [], {"dataset": DATASET, "fast": FAST,
                     "teacher_epochs": TEACHER_EPOCHS,
                     "student_epochs": STUDENT_EPOCHS, "models": {}}
for name, model in (("teacher", teacher), ("distilled", student),
                    ("alone", alone)):
    iwae = keras_vae.metrics.iwae_nll(model, x_test, num_samples=IWAE_SAMPLES)
    samples = np.asarray(model.sample(KID_SAMPLES, seed=SEED))
    kid = keras_vae.metrics.kid(x_test, samples)
    results["models"][name] = {
        "params": int(model.count_params()),
        "negative_elbo": -keras_vae.metrics.elbo(model, x_test),
        "iwae_nll": iwae["nll"], "kid": kid["kid"],
        "kid_stderr": kid["stderr"]}
    row = results["models"][name]
    rows.append(f"| {name} | {row['params']:,} | {row['negative_elbo']:.2f} "
                f"| {row['iwae_nll']:.2f} | {1e3 * kid['kid']:.1f} ± "
                f"{1e3 * kid['stderr']:.1f} |")
print("feature network:", kid["feature_network"])
display(Markdown(
    "| model | parameters | negative ELBO | IWAE NLL, K=" + str(IWAE_SAMPLES)
    + " | KID x 1000 |\n|---|---:|---:|---:|---:|\n" + "\n".join(rows)))

# %% [markdown]
# ## 4. The student is an ordinary VAE: int8 LiteRT
#
# The Distiller's extra pieces stay in the Distiller; `student` exports,
# prunes and quantizes like any model. Here: full-int8 export, checked
# against the Keras model by `verify`, and its size next to the teacher's.

# %%
files = {}
for name, model in (("teacher", teacher), ("student", student)):
    path = os.path.join(OUTPUT_DIR, f"{name}_int8.tflite")
    info = keras_vae.export.to_tflite(model, path, representative_data=x_train,
                                      overwrite=True)
    files[name] = info.num_bytes
report = keras_vae.export.verify(path, student, x_test)
results["student_int8_bytes"] = files["student"]
results["teacher_int8_bytes"] = files["teacher"]
results["student_int8_nll_delta_pct"] = float(report.nll_delta_pct)
print(f"student int8: {files['student']:,} bytes "
      f"({100 * files['student'] / files['teacher']:.1f}% of the teacher's "
      f"{files['teacher']:,}); reconstruction NLL change "
      f"{report.nll_delta_pct:+.2f}%")

# %% [markdown]
# ## 5. Architecture search
#
# `keras_vae.search.search` runs a KerasTuner random search over the MLP
# builder's hyperparameters (depth, widths, latent size). Each trial trains
# a candidate, scores its test negative ELBO, exports it to int8 and times
# it at batch 1 with LiteRT. The budget is in trials and in minutes; the
# trials live in a KerasTuner project folder, so running the cell again
# resumes the search instead of starting over. The red star is the
# teacher (trained longer than the candidates here: not a fair rival).

# %%
space = keras_vae.search.VAEHyperModel(
    x_train.shape[1:], latent_dims=(8, 16, 32), mlp_depths=(1, 2),
    mlp_widths=(32, 64, 128, 256, 512), seed=SEED)
found = keras_vae.search.search(
    x_train, x_test, hypermodel=space, max_trials=SEARCH_TRIALS,
    max_minutes=SEARCH_MINUTES, epochs=SEARCH_EPOCHS,
    directory=os.path.join(OUTPUT_DIR, "search"), project_name="mlp",
    latency_runs=50 if FAST else 300, seed=SEED, verbose=0)
teacher_costs = keras_vae.search.int8_costs(
    teacher, os.path.join(OUTPUT_DIR, "teacher_costs"), x_train[:500])
reference = {"negative_elbo": teacher_score,
             "params": teacher.count_params(),
             "latency_us": teacher_costs["latency_us"],
             "architecture": f"teacher ({TEACHER_EPOCHS} epochs)"}
display(Image(keras_vae.plotting.pareto(
    found.trials, os.path.join(OUTPUT_DIR, "pareto.png"),
    reference=reference)))
display(Markdown(
    "| trial | architecture | negative ELBO | parameters | int8 latency (us) "
    "|\n|---|---|---:|---:|---:|\n" + "\n".join(
        f"| {r['trial_id']} | {r['architecture']} | {r['negative_elbo']:.2f} "
        f"| {r['params']:,} | {r['latency_us']:.1f} |" for r in found.front)))
results["search"] = {"trials": len(found.trials),
                     "front": [r["architecture"] for r in found.front]}

with open(os.path.join(OUTPUT_DIR, "results.json"), "w") as handle:
    json.dump(results, handle, indent=2)
print(json.dumps(results, indent=2))

# %% [markdown]
# ## Next
#
# * The command line does the same: `keras-vae distill` and
#   `keras-vae search` write the models, the plots and a `report.json`.
# * `02_compress_and_deploy.ipynb`: prune the student to 80% and train it
#   quantization-aware before export.
