"""Training speed: keras-vae `fit` against the usual ways, side by side.

Same data (MNIST-5k: 4,000 training and 1,000 test images), architecture
(MLP 784-512-256-16 encoder, mirrored decoder, Bernoulli likelihood), batch
size (128), optimizer (Adam 1e-3) and number of epochs for every
candidate:

- `keras_vae`: `keras_vae.models.mlp_vae(...)`, `compile(optimizer=Adam)`
  and `fit(x_train)` with the defaults a user gets (TensorFlow backend).
- `keras_vae_jax`: the same on the JAX backend.
- `reference_keras`: a plain Keras 3 subclassed VAE with a
  `tf.GradientTape` `train_step`, sigmoid decoder and `binary_crossentropy`,
  fed numpy arrays, as in the well-known Keras VAE example.
- `reference_keras_xla`: the same with `jit_compile=True` spelled out.
- `reference_torch`: the same MLP VAE in PyTorch eager with a `DataLoader`,
  as in the PyTorch examples' VAE, initialised like Keras' `Dense`
  (Glorot-uniform, zero bias) so that it reaches the same test ELBO.
- options, to measure the defaults: `keras_vae_no_xla` (keras-vae with
  `jit_compile=False`) and `keras_vae_bf16` (keras-vae under the
  `mixed_bfloat16` dtype policy: mixed precision on this CPU).

The conditional row (`--only cvae`) trains `keras_vae.models.mlp_cvae` on
MNIST-5k images and their digit labels, fed numpy `(x, y)`, two ways:
`cvae_keras_vae` with keras-vae's `compile` defaults (32 steps per
execution, XLA, the fused path) and `cvae_keras_loop`, the same model
through Keras' own loop as a plain `keras.Model` gets it on this CPU
(`steps_per_execution=1`, `jit_compile=False`). It reports the steady
speed-up and the whole `fit` wall time, compilation included.

    .venv/bin/python benchmarks/train_speed.py --only cvae --epochs 20 --repeats 3

Each run is a fresh child process, the candidates alternate within every
repeat (A, B, C, A, B, C, ...) so that a busy machine slows all of them
alike, and the report gives ratios of the same run. Per run: seconds per
epoch (median of the epochs after the first), samples per second, the
first epoch's extra time (compilation and tracing), the one-sample test
ELBO in nats per image after the last epoch, and the peak resident memory.

    .venv/bin/python benchmarks/train_speed.py --epochs 20 --repeats 3

`--profile` instead times the parts of one training step (matmuls alone,
forward and backward, the Adam update, the whole step with and without
XLA) to show where the time goes.

`--whole-fit` measures what a user waits for: the wall time of the whole
default `fit` call, compilation included, in a fresh process (the first
`fit`), then of a second `fit` of the same model in the same process,
which must not compile again. Rows: the MLP VAE on TensorFlow and JAX
against PyTorch eager, the MLP CVAE (numpy `(x, y)`) on both backends and
the conv VAE on TensorFlow (on JAX only with `--rows conv_jax`: JAX's
CPU convolutions are several times slower). Every candidate runs
`--repeats` fresh processes per epoch count, interleaved, and the table gives the best of them and the ratio
of PyTorch's best to ours. `--cache` says which XLA compilation cache the
children use: `user` (the cache a user has, `~/.cache/keras_vae/xla`,
warm after the first run), `cold` (an empty one per process: the first
`fit` ever) or `off`; each record notes whether its cache was warm.

    .venv/bin/python benchmarks/train_speed.py --whole-fit --fit-epochs 10 30 --repeats 2
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

# Interpreter start, nearly: imports of the candidate's framework count
# from here (`import_seconds` of the whole-fit records).
_PROCESS_START = time.perf_counter()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common

ARCHITECTURE = {"latent_dim": 16, "hidden_units": (512, 256)}
BATCH_SIZE = 128
LEARNING_RATE = 1e-3
CANDIDATES = ("keras_vae", "reference_keras", "reference_keras_xla",
              "reference_torch", "keras_vae_jax")
OPTIONAL_CANDIDATES = ("keras_vae_no_xla", "keras_vae_bf16")
CVAE_CANDIDATES = ("cvae_keras_vae", "cvae_keras_loop")
NUM_CLASSES = 10
# The CVAE's target: keras-vae's defaults at least this much faster.
CVAE_TARGET_SPEEDUP = 1.3
CVAE_README_MARKERS = ("<!-- cvae_speed:start -->", "<!-- cvae_speed:end -->")
# 20 epochs of 32 steps: past keras-vae's XLA threshold (300 steps), as
# for any real training run, and enough for the test ELBOs to settle.
DEFAULT_EPOCHS = 20
TORCH_VERSION = "2.13.0"
# Whole-fit rows (`--whole-fit`): candidates ending in `_jax` run on JAX.
WHOLE_FIT_ROWS = {
    "mlp": ("keras_vae", "keras_vae_jax", "reference_torch"),
    "cvae": ("cvae_keras_vae", "cvae_keras_vae_jax"),
    "conv": ("conv_keras_vae",),
    # Opt-in: JAX's CPU convolutions make this row take hours at 30 epochs.
    "conv_jax": ("conv_keras_vae_jax",),
}
DEFAULT_WHOLE_FIT_ROWS = ("mlp", "cvae", "conv")
WHOLE_FIT_EPOCHS = (10, 30)
WHOLE_FIT_CACHES = ("user", "cold", "off")
CACHE_ENV = "KERAS_VAE_COMPILATION_CACHE"


# ----------------------------------------------------------------- data
def load_data(train_size=None, test_size=None, dataset="mnist5k"):
    """Training and test images as float32 NHWC arrays in [0, 1].

    `dataset="synthetic"` tiles MNIST-5k (with fresh pixel noise) up to
    `train_size` images, for the scaling benchmark.
    """
    import numpy as np

    import keras_vae

    (x_train, _), (x_test, _) = keras_vae.datasets.load("mnist5k")
    if dataset == "synthetic" and train_size and train_size > len(x_train):
        rng = np.random.default_rng(0)
        reps = -(-train_size // len(x_train))
        x_train = np.concatenate([x_train] * reps)[:train_size]
        noise = rng.uniform(0.0, 0.05, size=x_train.shape).astype("float32")
        x_train = np.clip(x_train + noise, 0.0, 1.0).astype("float32")
    elif train_size:
        x_train = x_train[:train_size]
    if test_size:
        x_test = x_test[:test_size]
    return x_train, x_test


def load_labelled_data():
    """MNIST-5k images (float32, [0, 1]) with their digit labels."""
    import keras_vae

    return keras_vae.datasets.load("mnist5k")


def _steady(epoch_seconds):
    steady = epoch_seconds[1:] or epoch_seconds
    return statistics.median(steady)


def _record(name, epoch_seconds, n_train, test_elbo, **extra):
    steady = _steady(epoch_seconds)
    record = {
        "candidate": name,
        "epoch_seconds": epoch_seconds,
        "seconds_per_epoch": steady,
        "samples_per_second": n_train / steady,
        "first_epoch_extra_seconds": max(epoch_seconds[0] - steady, 0.0),
        "test_elbo": float(test_elbo),
        "peak_rss_mb": _common.peak_rss_mb(),
    }
    record.update(extra)
    return record


# ------------------------------------------------------------ keras-vae
def train_keras_vae(x_train, x_test, epochs, seed=0, batch_size=BATCH_SIZE,
                    compile_kwargs=None, fit_kwargs=None, dtype_policy=None):
    """keras-vae with the defaults users get; returns the timing record."""
    import keras

    import keras_vae

    keras.utils.set_random_seed(seed)
    if dtype_policy:
        keras.config.set_dtype_policy(dtype_policy)
    model = keras_vae.models.mlp_vae(
        x_train.shape[1:], seed=seed, **ARCHITECTURE
    )
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                  **(compile_kwargs or {}))
    timer = EpochTimer()
    model.fit(x_train, epochs=epochs, batch_size=batch_size, verbose=0,
              callbacks=[timer], **(fit_kwargs or {}))
    test = model.evaluate(x_test, batch_size=1000, verbose=0,
                          return_dict=True)
    return _record(
        "keras_vae", timer.seconds, len(x_train), test["elbo"],
        backend=keras.backend.backend(),
        jit_compile=bool(model.jit_compile),
        steps_per_execution=int(model.steps_per_execution),
        dtype_policy=keras.config.dtype_policy().name,
    )


def train_cvae(epochs, seed=0, batch_size=BATCH_SIZE, keras_loop=False):
    """The MLP CVAE on numpy `(x, y)`: keras-vae defaults or Keras' loop."""
    import keras

    import keras_vae

    (x_train, y_train), (x_test, y_test) = load_labelled_data()
    keras.utils.set_random_seed(seed)
    model = keras_vae.models.mlp_cvae(
        x_train.shape[1:], NUM_CLASSES, seed=seed, **ARCHITECTURE)
    # Keras' own loop: what `keras.Model.compile` resolves to on a CPU
    # (no XLA on CPU-only TensorFlow, one step per execution).
    loop = dict(steps_per_execution=1, jit_compile=False) if keras_loop else {}
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), **loop)
    timer = EpochTimer()
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size,
              verbose=0, callbacks=[timer])
    fit_seconds = time.perf_counter() - start
    test = model.evaluate(x_test, y_test, batch_size=1000, verbose=0,
                          return_dict=True)
    return _record(
        "cvae_keras_loop" if keras_loop else "cvae_keras_vae", timer.seconds,
        len(x_train), test["elbo"], fit_seconds=fit_seconds,
        fused="make_fused_train_function" in getattr(
            model.train_function, "__qualname__", ""),
        jit_compile=bool(model.jit_compile),
        steps_per_execution=int(model.steps_per_execution),
    )


def benchmark_cvae(epochs=DEFAULT_EPOCHS, repeats=3, seed=0, log=print):
    """The CVAE row: both ways alternately, ratios within each repeat."""
    records = []
    for repeat in range(repeats):
        for name in CVAE_CANDIDATES:
            record = run_candidate_in_child(name, epochs, seed=seed + repeat)
            record["repeat"] = repeat
            records.append(record)
            log(f"  train {name:22s} repeat {repeat}: "
                f"{record['samples_per_second']:8.0f} samples/s, fit "
                f"{record['fit_seconds']:.1f} s (fused: {record['fused']}), "
                f"test ELBO {record['test_elbo']:.1f}")
    by_repeat = {}
    for record in records:
        by_repeat.setdefault(record["repeat"], {})[record["candidate"]] = record
    speedups = [pair["cvae_keras_vae"]["samples_per_second"]
                / pair["cvae_keras_loop"]["samples_per_second"]
                for pair in by_repeat.values() if len(pair) == 2]
    fit_ratios = [pair["cvae_keras_loop"]["fit_seconds"]
                  / pair["cvae_keras_vae"]["fit_seconds"]
                  for pair in by_repeat.values() if len(pair) == 2]
    table = {}
    for name in CVAE_CANDIDATES:
        rows = [r for r in records if r["candidate"] == name]
        table[name] = {
            key: _common.summary([row[key] for row in rows])
            for key in ("samples_per_second", "seconds_per_epoch",
                        "fit_seconds", "first_epoch_extra_seconds",
                        "test_elbo", "peak_rss_mb")
        }
    return {"epochs": epochs, "repeats": repeats, "batch_size": BATCH_SIZE,
            "records": records, "candidates": table,
            "speedup": _common.summary(speedups),
            "fit_time_ratio": _common.summary(fit_ratios),
            "target": CVAE_TARGET_SPEEDUP}


def _epoch_timer_class():
    import keras

    class _EpochTimer(keras.callbacks.Callback):
        """Wall-clock seconds of every epoch of `fit`."""

        def __init__(self):
            super().__init__()
            self.seconds = []
            self._start = None

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    return _EpochTimer


def EpochTimer():
    """A Keras callback collecting the seconds of every epoch."""
    return _epoch_timer_class()()


# ------------------------------------------- reference (a): Keras example
def build_reference_keras(input_shape, latent_dim=16, hidden_units=(512, 256),
                          seed=0):
    """The Keras example's VAE with an MLP: GradientTape, sigmoid, BCE."""
    import math

    import keras
    import tensorflow as tf
    from keras import layers, ops

    class Sampling(layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.seed_generator = keras.random.SeedGenerator(seed)

        def call(self, inputs):
            z_mean, z_log_var = inputs
            epsilon = keras.random.normal(ops.shape(z_mean),
                                          seed=self.seed_generator)
            return z_mean + ops.exp(0.5 * z_log_var) * epsilon

    inputs = keras.Input(shape=input_shape)
    hidden = layers.Flatten()(inputs)
    for units in hidden_units:
        hidden = layers.Dense(units, activation="relu")(hidden)
    z_mean = layers.Dense(latent_dim, name="z_mean")(hidden)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(hidden)
    z = Sampling()([z_mean, z_log_var])
    encoder = keras.Model(inputs, [z_mean, z_log_var, z], name="encoder")

    latent_inputs = keras.Input(shape=(latent_dim,))
    hidden = latent_inputs
    for units in hidden_units[::-1]:
        hidden = layers.Dense(units, activation="relu")(hidden)
    hidden = layers.Dense(math.prod(input_shape), activation="sigmoid")(hidden)
    outputs = layers.Reshape(input_shape)(hidden)
    decoder = keras.Model(latent_inputs, outputs, name="decoder")

    class ReferenceVAE(keras.Model):
        def __init__(self, encoder, decoder, **kwargs):
            super().__init__(**kwargs)
            self.encoder = encoder
            self.decoder = decoder
            self.total_loss_tracker = keras.metrics.Mean(name="total_loss")
            self.reconstruction_loss_tracker = keras.metrics.Mean(
                name="reconstruction_loss")
            self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")

        @property
        def metrics(self):
            return [self.total_loss_tracker,
                    self.reconstruction_loss_tracker, self.kl_loss_tracker]

        def losses_for(self, data):
            z_mean, z_log_var, z = self.encoder(data)
            reconstruction = self.decoder(z)
            reconstruction_loss = ops.mean(ops.sum(
                keras.losses.binary_crossentropy(data, reconstruction),
                axis=(1, 2)))
            kl_loss = -0.5 * (1 + z_log_var - ops.square(z_mean)
                              - ops.exp(z_log_var))
            kl_loss = ops.mean(ops.sum(kl_loss, axis=1))
            return reconstruction_loss, kl_loss

        def train_step(self, data):
            with tf.GradientTape() as tape:
                reconstruction_loss, kl_loss = self.losses_for(data)
                total_loss = reconstruction_loss + kl_loss
            grads = tape.gradient(total_loss, self.trainable_weights)
            self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
            self.total_loss_tracker.update_state(total_loss)
            self.reconstruction_loss_tracker.update_state(reconstruction_loss)
            self.kl_loss_tracker.update_state(kl_loss)
            return {m.name: m.result() for m in self.metrics}

    return ReferenceVAE(encoder, decoder)


def train_reference_keras(x_train, x_test, epochs, seed=0,
                          batch_size=BATCH_SIZE, jit_compile="auto"):
    """Reference (a): the Keras example's way, fed numpy arrays."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build_reference_keras(x_train.shape[1:], seed=seed,
                                  **ARCHITECTURE)
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                  jit_compile=jit_compile)
    timer = EpochTimer()
    model.fit(x_train, epochs=epochs, batch_size=batch_size, verbose=0,
              callbacks=[timer])
    reconstruction, kl = model.losses_for(x_test)
    test_elbo = -(float(reconstruction) + float(kl))
    name = "reference_keras" if jit_compile == "auto" else "reference_keras_xla"
    return _record(name, timer.seconds, len(x_train), test_elbo,
                   jit_compile=bool(model.jit_compile))


# ------------------------------------------- reference (b): PyTorch eager
def ensure_torch():
    """Import torch, installing the CPU wheel into this venv if missing.

    Only the benchmark needs torch; it is never a keras-vae dependency.
    """
    try:
        import torch
    except ImportError:
        import subprocess

        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet",
             f"torch=={TORCH_VERSION}"],
            check=True,
        )
    import torch

    return torch


def train_reference_torch(x_train, x_test, epochs, seed=0,
                          batch_size=BATCH_SIZE):
    """Reference (b): the same MLP VAE in PyTorch eager."""
    torch = ensure_torch()
    trainer = _TorchTrainer(x_train, seed, batch_size)
    epoch_seconds = trainer.fit(epochs)
    return _record("reference_torch", epoch_seconds, len(x_train),
                   trainer.test_elbo(x_test),
                   torch_threads=torch.get_num_threads())


class _TorchTrainer:
    """The PyTorch examples' VAE training loop, callable more than once."""

    def __init__(self, x_train, seed=0, batch_size=BATCH_SIZE):
        torch = self.torch = ensure_torch()
        torch.manual_seed(seed)
        self.model = build_reference_torch(x_train.shape[1:], **ARCHITECTURE)
        self.optimizer = torch.optim.Adam(self.model.parameters(),
                                          lr=LEARNING_RATE)
        data = torch.from_numpy(x_train.reshape(len(x_train), -1))
        self.loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(data), batch_size=batch_size,
            shuffle=True)

    def losses(self, logits, x, mu, log_var):
        from torch.nn import functional

        bce = functional.binary_cross_entropy_with_logits(
            logits, x, reduction="sum")
        kld = -0.5 * self.torch.sum(1 + log_var - mu.pow(2) - log_var.exp())
        return bce, kld

    def fit(self, epochs):
        """Train `epochs` epochs; return the seconds of each."""
        epoch_seconds = []
        self.model.train()
        for _ in range(epochs):
            start = time.perf_counter()
            for (x,) in self.loader:
                self.optimizer.zero_grad()
                logits, mu, log_var = self.model(x)
                bce, kld = self.losses(logits, x, mu, log_var)
                loss = (bce + kld) / len(x)
                loss.backward()
                self.optimizer.step()
            epoch_seconds.append(time.perf_counter() - start)
        return epoch_seconds

    def test_elbo(self, x_test):
        """One-sample ELBO in nats per image."""
        self.model.eval()
        with self.torch.no_grad():
            x = self.torch.from_numpy(x_test.reshape(len(x_test), -1))
            logits, mu, log_var = self.model(x)
            bce, kld = self.losses(logits, x, mu, log_var)
        return -float(bce + kld) / len(x)


def build_reference_torch(input_shape, latent_dim=16, hidden_units=(512, 256),
                          deterministic=False):
    """The MLP VAE as a `torch.nn.Module` returning `(logits, mu, log_var)`.

    With `deterministic=True` the module returns the reconstruction
    probabilities through the posterior mean (for inference timing).
    """
    import math

    torch = ensure_torch()
    from torch import nn

    features = math.prod(input_shape)

    def mlp(sizes):
        layers = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        return nn.Sequential(*layers)

    class TorchVAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = mlp((features, *hidden_units))
            self.mu = nn.Linear(hidden_units[-1], latent_dim)
            self.log_var = nn.Linear(hidden_units[-1], latent_dim)
            self.decoder = mlp((latent_dim, *hidden_units[::-1]))
            self.out = nn.Linear(hidden_units[0], features)
            # Keras' Dense initialisation (Glorot-uniform kernel, zero
            # bias), so both frameworks start from the same distribution
            # and reach the same test ELBO after the same epochs.
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.xavier_uniform_(module.weight)
                    nn.init.zeros_(module.bias)

        def forward(self, x):
            x = x.reshape(x.shape[0], -1)
            hidden = self.encoder(x)
            mu, log_var = self.mu(hidden), self.log_var(hidden)
            if deterministic:
                return torch.sigmoid(self.out(self.decoder(mu)))
            z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
            return self.out(self.decoder(z)), mu, log_var

    return TorchVAE()


# --------------------------------------------------------------- driver
def run_candidate(name, epochs, seed=0, train_size=None, batch_size=BATCH_SIZE,
                  dataset="mnist5k", compile_kwargs=None):
    """Train one candidate in this process and return its record."""
    if name in CVAE_CANDIDATES:
        return train_cvae(epochs, seed, batch_size,
                          keras_loop=name == "cvae_keras_loop")
    x_train, x_test = load_data(train_size, dataset=dataset)
    if name in ("keras_vae", "keras_vae_jax"):
        return train_keras_vae(x_train, x_test, epochs, seed, batch_size,
                               compile_kwargs=compile_kwargs)
    if name == "keras_vae_no_xla":
        return train_keras_vae(x_train, x_test, epochs, seed, batch_size,
                               compile_kwargs={**(compile_kwargs or {}),
                                               "jit_compile": False})
    if name == "keras_vae_bf16":
        return train_keras_vae(x_train, x_test, epochs, seed, batch_size,
                               compile_kwargs=compile_kwargs,
                               dtype_policy="mixed_bfloat16")
    if name == "reference_keras":
        return train_reference_keras(x_train, x_test, epochs, seed, batch_size)
    if name == "reference_keras_xla":
        return train_reference_keras(x_train, x_test, epochs, seed, batch_size,
                                     jit_compile=True)
    if name == "reference_torch":
        return train_reference_torch(x_train, x_test, epochs, seed, batch_size)
    raise ValueError(
        f"Unknown candidate. Expected one of "
        f"{CANDIDATES + OPTIONAL_CANDIDATES + CVAE_CANDIDATES}. "
        f"Received: name={name!r}")


def run_candidate_in_child(name, epochs, seed=0, train_size=None,
                           batch_size=BATCH_SIZE, dataset="mnist5k",
                           compile_kwargs=None):
    """Run `run_candidate` in a fresh process (JAX for `keras_vae_jax`)."""
    backend = "jax" if name.endswith("_jax") else "tensorflow"
    args = ["--candidate", name, "--epochs", epochs, "--seed", seed,
            "--batch-size", batch_size, "--dataset", dataset,
            "--compile", json.dumps(compile_kwargs or {})]
    if train_size:
        args += ["--train-size", train_size]
    record = _common.run_child("train_speed", args, backend=backend)
    record["candidate"] = name
    return record


def benchmark(epochs=DEFAULT_EPOCHS, repeats=3, candidates=CANDIDATES,
              seed=0, train_size=None, log=print):
    """Alternate the candidates `repeats` times; return records and summary.

    A candidate that fails (e.g. an unsupported dtype policy) is recorded
    with its error instead of stopping the benchmark.
    """
    records, failures = [], {}
    for repeat in range(repeats):
        for name in candidates:
            if name in failures:
                continue
            try:
                record = run_candidate_in_child(name, epochs, seed=seed + repeat,
                                                train_size=train_size)
            except RuntimeError as error:
                failures[name] = str(error).strip().splitlines()[-1][-300:]
                log(f"  train {name:22s} failed: {failures[name]}")
                continue
            record["repeat"] = repeat
            records.append(record)
            log(f"  train {name:22s} repeat {repeat}: "
                f"{record['samples_per_second']:8.0f} samples/s, "
                f"first epoch +{record['first_epoch_extra_seconds']:.2f} s, "
                f"test ELBO {record['test_elbo']:.1f}")
    return {"epochs": epochs, "repeats": repeats, "batch_size": BATCH_SIZE,
            "train_size": train_size or 4000, "records": records,
            "failures": failures, "summary": summarize(records)}


def summarize(records):
    """Per-candidate min/median/max and the same-repeat speed ratios."""
    by_name = {}
    for record in records:
        by_name.setdefault(record["candidate"], []).append(record)
    table = {}
    for name, rows in by_name.items():
        table[name] = {
            key: _common.summary([row[key] for row in rows])
            for key in ("samples_per_second", "seconds_per_epoch",
                        "first_epoch_extra_seconds", "test_elbo",
                        "peak_rss_mb")
        }
    ratios = {}
    if "keras_vae" in by_name:
        ours = {r["repeat"]: r for r in by_name["keras_vae"] if "repeat" in r}
        for name, rows in by_name.items():
            if name == "keras_vae":
                continue
            values = [ours[r["repeat"]]["samples_per_second"]
                      / r["samples_per_second"]
                      for r in rows if r.get("repeat") in ours]
            if values:
                ratios[name] = _common.summary(values)
    return {"candidates": table, "keras_vae_speedup": ratios}


def cvae_markdown(cvae):
    """The conditional VAE row: keras-vae defaults vs Keras' own loop."""
    labels = {
        "cvae_keras_vae": "keras-vae `fit` defaults (32 steps per execution, "
                          "XLA, fused)",
        "cvae_keras_loop": "Keras' own loop (`steps_per_execution=1`, "
                           "`jit_compile=False`)",
    }
    lines = [
        "#### Conditional VAE (`mlp_cvae`, numpy `(x, y)`)",
        "",
        f"`keras_vae.models.mlp_cvae` 784(+10)-512-256-16, the same "
        f"settings, {cvae['epochs']} epochs on the 4,000 MNIST-5k training "
        f"images and labels, {cvae['repeats']} repeats, alternating. Whole "
        "`fit` is the wall time of the call, compilation included "
        "(`python benchmarks/train_speed.py --only cvae`).",
        "",
        "| candidate | images/s | s/epoch | whole `fit` s | first-epoch "
        "extra s | test ELBO |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in cvae["candidates"].items():
        lines.append(
            f"| {labels.get(name, name)} | "
            f"{_common.mmm(row['samples_per_second'])}"
            f" | {_common.mmm(row['seconds_per_epoch'], '{:.3f}')}"
            f" | {_common.mmm(row['fit_seconds'], '{:.1f}')}"
            f" | {_common.mmm(row['first_epoch_extra_seconds'], '{:.1f}')}"
            f" | {_common.mmm(row['test_elbo'], '{:.1f}')} |")
    speedup = cvae["speedup"]["median"]
    target = cvae.get("target", CVAE_TARGET_SPEEDUP)
    verdict = "**met**" if speedup >= target else "**missed**"
    lines += [
        "",
        f"- keras-vae defaults vs Keras' own loop: {speedup:.2f}x images/s "
        f"(target >= {target}x: {verdict}); whole `fit` "
        f"{cvae['fit_time_ratio']['median']:.2f}x faster, compilation "
        "included.",
        "",
    ]
    return lines


# ------------------------------------------------------------ whole fit
def whole_fit(name, epochs, seed=0):
    """First and second `fit` of one candidate in this (fresh) process.

    Returns a record with `first_fit_seconds` (the whole `fit` call:
    tracing, compilation, every epoch), `second_fit_seconds` (the same
    `fit` again on the same model), the seconds of every epoch of both,
    the test ELBO after the first fit and whether the XLA compilation
    cache held entries when the process started (`cache_warm`).
    """
    cache = os.environ.get(CACHE_ENV, "user")
    cache_warm = _cache_has_entries()
    if name == "reference_torch":
        x_train, x_test = load_data()
        import_seconds = time.perf_counter() - _PROCESS_START
        trainer = _TorchTrainer(x_train, seed)
        fits = []
        for _ in range(2):
            start = time.perf_counter()
            epoch_seconds = trainer.fit(epochs)
            fits.append((time.perf_counter() - start, epoch_seconds))
            if len(fits) == 1:
                test_elbo = trainer.test_elbo(x_test)
        extra = {"torch_threads": trainer.torch.get_num_threads()}
    else:
        import keras

        import keras_vae

        kind = name.split("_")[0] if name.startswith(("cvae", "conv")) \
            else "mlp"
        if kind == "cvae":
            (x_train, y_train), (x_test, y_test) = load_labelled_data()
        else:
            x_train, x_test = load_data()
            y_train = y_test = None
        import_seconds = time.perf_counter() - _PROCESS_START
        keras.utils.set_random_seed(seed)
        if kind == "cvae":
            model = keras_vae.models.mlp_cvae(
                x_train.shape[1:], NUM_CLASSES, seed=seed, **ARCHITECTURE)
        elif kind == "conv":
            model = keras_vae.models.conv_vae(x_train.shape[1:], latent_dim=16,
                                              seed=seed)
        else:
            model = keras_vae.models.mlp_vae(x_train.shape[1:], seed=seed,
                                             **ARCHITECTURE)
        model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE))
        fits = []
        for _ in range(2):
            timer = EpochTimer()
            start = time.perf_counter()
            model.fit(x_train, y_train, epochs=epochs, batch_size=BATCH_SIZE,
                      verbose=0, callbacks=[timer])
            fits.append((time.perf_counter() - start, timer.seconds))
            if len(fits) == 1:
                test_elbo = model.evaluate(
                    x_test, y_test, batch_size=1000, verbose=0,
                    return_dict=True)["elbo"]
        extra = {
            "backend": keras.backend.backend(),
            "jit_compile": bool(model.jit_compile),
            "steps_per_execution": int(model.steps_per_execution),
            "fused": "make_fused_train_function" in getattr(
                model.train_function, "__qualname__", ""),
        }
    (first, first_epochs), (second, second_epochs) = fits
    return _record(
        name, first_epochs, len(x_train), test_elbo, epochs=epochs,
        first_fit_seconds=first, second_fit_seconds=second,
        second_epoch_seconds=second_epochs, import_seconds=import_seconds,
        cache=cache, cache_warm=cache_warm, **extra)


def _cache_has_entries():
    """True when the XLA cache this process will use already holds files."""
    value = os.environ.get(CACHE_ENV)
    if value is not None and value.strip().lower() in (
            "", "0", "off", "false", "no", "none"):
        return False
    root = value or os.path.join(
        os.environ.get("XDG_CACHE_HOME")
        or os.path.join(os.path.expanduser("~"), ".cache"),
        "keras_vae", "xla")
    return any(files for _, _, files in os.walk(root))


def benchmark_whole_fit(epoch_counts=WHOLE_FIT_EPOCHS, repeats=2,
                        rows=DEFAULT_WHOLE_FIT_ROWS, cache="user", seed=0,
                        log=print):
    """Whole-fit wall times, fresh processes interleaved, best of `repeats`.

    For each epoch count, every candidate of `rows` runs once per repeat
    (A, B, C, A, B, C, ...), each in a fresh process with the XLA cache
    chosen by `cache` (see the module docstring).
    """
    if cache not in WHOLE_FIT_CACHES:
        raise ValueError(f"Expected `cache` in {WHOLE_FIT_CACHES}. "
                         f"Received: cache={cache!r}")
    names = [name for row in rows for name in WHOLE_FIT_ROWS[row]]
    records = []
    saved = os.environ.get(CACHE_ENV)
    try:
        for epochs in epoch_counts:
            for repeat in range(repeats):
                for name in names:
                    folder = None
                    if cache == "cold":
                        folder = tempfile.mkdtemp(prefix="keras_vae_xla_")
                        os.environ[CACHE_ENV] = folder
                    elif cache == "off":
                        os.environ[CACHE_ENV] = "off"
                    try:
                        record = _run_whole_fit_child(name, epochs, seed)
                    finally:
                        if folder:
                            shutil.rmtree(folder, ignore_errors=True)
                    record["repeat"] = repeat
                    records.append(record)
                    log(f"  whole fit {name:20s} {epochs:3d} epochs, repeat "
                        f"{repeat}: first {record['first_fit_seconds']:6.2f}"
                        f" s, second {record['second_fit_seconds']:6.2f} s, "
                        f"{record['samples_per_second']:7.0f} samples/s, "
                        f"test ELBO {record['test_elbo']:.1f}, cache "
                        f"{'warm' if record['cache_warm'] else 'cold'}")
    finally:
        if saved is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = saved
    return {"epoch_counts": list(epoch_counts), "repeats": repeats,
            "cache": cache, "records": records,
            "summary": summarize_whole_fit(records)}


def _run_whole_fit_child(name, epochs, seed):
    backend = "jax" if name.endswith("_jax") else "tensorflow"
    record = _common.run_child(
        "train_speed", ["--whole-fit-child", "--candidate", name,
                        "--epochs", epochs, "--seed", seed], backend=backend)
    record["candidate"] = name
    return record


def summarize_whole_fit(records):
    """Per (epochs, candidate): best and median times, ratios to PyTorch."""
    groups = {}
    for record in records:
        groups.setdefault((record["epochs"], record["candidate"]),
                          []).append(record)
    rows = []
    for (epochs, name), group in groups.items():
        torch_rows = groups.get((epochs, "reference_torch"))
        first = [r["first_fit_seconds"] for r in group]
        row = {
            "epochs": epochs, "candidate": name,
            "first_fit_best": min(first),
            "first_fit_median": statistics.median(first),
            "second_fit_best": min(r["second_fit_seconds"] for r in group),
            "seconds_per_epoch": statistics.median(
                r["seconds_per_epoch"] for r in group),
            "test_elbo": statistics.median(r["test_elbo"] for r in group),
            "cache_warm": [r["cache_warm"] for r in group],
            "runs": len(group),
        }
        # PyTorch runs the MLP VAE only: the other rows have no ratio.
        if torch_rows and name in WHOLE_FIT_ROWS["mlp"][:-1]:
            best_torch = min(r["first_fit_seconds"] for r in torch_rows)
            row["torch_over_ours_first_fit"] = best_torch / row[
                "first_fit_best"]
            row["torch_over_ours_second_fit"] = min(
                r["second_fit_seconds"] for r in torch_rows) / row[
                "second_fit_best"]
        rows.append(row)
    return rows


def whole_fit_table(summary):
    """The whole-fit summary as a Markdown table."""
    lines = [
        "| epochs | candidate | first fit, best (s) | first fit, median (s) "
        "| second fit, best (s) | PyTorch / ours, first fit "
        "| PyTorch / ours, second fit | s/epoch (steady) | test ELBO "
        "| cache warm |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in summary:
        ratio = row.get("torch_over_ours_first_fit")
        ratio2 = row.get("torch_over_ours_second_fit")
        lines.append(
            f"| {row['epochs']} | {row['candidate']} "
            f"| {row['first_fit_best']:.2f} | {row['first_fit_median']:.2f} "
            f"| {row['second_fit_best']:.2f} "
            f"| {'' if ratio is None else f'{ratio:.2f}x'} "
            f"| {'' if ratio2 is None else f'{ratio2:.2f}x'} "
            f"| {row['seconds_per_epoch']:.3f} | {row['test_elbo']:.1f} "
            f"| {'/'.join('y' if w else 'n' for w in row['cache_warm'])} |")
    return "\n".join(lines)


# -------------------------------------------------------------- profile
def flops_per_image(input_features=784, latent_dim=16,
                    hidden_units=ARCHITECTURE["hidden_units"]):
    """Matmul FLOPs of one training example (forward and backward).

    Forward: one multiply-add per kernel entry. Backward: the kernel
    gradient of every layer and the input gradient of every layer but the
    first (the data needs none). Elementwise work is left out.
    """
    sizes = [input_features, *hidden_units]
    encoder = list(zip(sizes[:-1], sizes[1:])) + [(hidden_units[-1],
                                                   2 * latent_dim)]
    back = [latent_dim, *hidden_units[::-1], input_features]
    decoder = list(zip(back[:-1], back[1:]))
    macs = sum(a * b for a, b in encoder + decoder)
    first = input_features * hidden_units[0]
    return 2 * (3 * macs - first)


def profile_step(rounds=5, calls=20):
    """Where the time of one keras-vae training step goes (TF backend).

    Times compiled functions on one constant batch of 128 images, each
    alone: the six matmuls of forward and backward, forward + backward with
    the loss, the Adam update, and the whole step, with and without XLA.
    Returns microseconds per image (min and median over `rounds`).
    """
    import keras
    import numpy as np
    import tensorflow as tf
    from keras import ops

    import keras_vae

    keras.utils.set_random_seed(0)
    x = tf.constant(np.random.default_rng(0).uniform(
        size=(BATCH_SIZE, 28, 28, 1)).astype("float32"))
    model = keras_vae.models.mlp_vae((28, 28, 1), seed=0, **ARCHITECTURE)
    optimizer = keras.optimizers.Adam(LEARNING_RATE)
    optimizer.build(model.trainable_variables)
    variables = model.trainable_variables
    constant_grads = [tf.fill(v.shape, 1e-3) for v in variables]
    # The MLP's kernels, the two posterior heads as one (256, 32) matmul.
    units = ARCHITECTURE["hidden_units"]
    latent = ARCHITECTURE["latent_dim"]
    shapes = [(784, units[0]), (units[0], units[1]), (units[1], 2 * latent),
              (latent, units[1]), (units[1], units[0]), (units[0], 784)]
    kernels = [tf.Variable(tf.random.normal(shape, stddev=0.05))
               for shape in shapes]

    def matmuls():
        # Forward, then per layer the kernel gradient and (but for the
        # first layer) the input gradient: the matmul work of one step.
        h, inputs = tf.reshape(x, (BATCH_SIZE, -1)), []
        for kernel in kernels:
            h = h[:, : kernel.shape[0]]
            inputs.append(h)
            h = tf.matmul(h, kernel)
        g, grads = tf.ones_like(h), []
        for index in range(len(kernels) - 1, -1, -1):
            # Every gradient is returned, so none is optimised away.
            grads.append(tf.matmul(inputs[index], g, transpose_a=True))
            if index:
                g = tf.matmul(g, kernels[index], transpose_b=True)
                if g.shape[-1] != kernels[index - 1].shape[-1]:
                    g = tf.pad(g, [[0, 0], [0, kernels[index - 1].shape[-1]
                                            - g.shape[-1]]])
        return grads

    def forward_backward():
        with tf.GradientTape() as tape:
            terms = model.compute_terms(x, training=True)
            loss = (ops.mean(terms["reconstruction"])
                    + ops.mean(terms["kl"]))
        return tape.gradient(loss, variables)

    def adam():
        optimizer.apply(constant_grads, variables)
        return optimizer.iterations

    def step():
        optimizer.apply(forward_backward(), variables)
        return optimizer.iterations

    parts = {
        "matmuls_fwd_bwd_xla": (matmuls, True),
        "forward_backward": (forward_backward, False),
        "forward_backward_xla": (forward_backward, True),
        "adam_update": (adam, False),
        "adam_update_xla": (adam, True),
        "train_step": (step, False),
        "train_step_xla": (step, True),
    }
    compiled = {name: tf.function(fn, jit_compile=jit)
                for name, (fn, jit) in parts.items()}
    for fn in compiled.values():
        tf.nest.map_structure(lambda t: t.numpy(), fn())
    times = {name: [] for name in compiled}
    for _ in range(rounds):
        for name, fn in compiled.items():
            start = time.perf_counter()
            for _ in range(calls):
                out = fn()
            tf.nest.map_structure(lambda t: t.numpy(), out)
            seconds = time.perf_counter() - start
            times[name].append(seconds / calls / BATCH_SIZE * 1e6)
    flops = flops_per_image()
    result = {
        "us_per_image": {name: _common.summary(v) for name, v in times.items()},
        "flops_per_image": flops,
        "params": int(sum(np.prod(v.shape) for v in variables)),
    }
    best = min(times["matmuls_fwd_bwd_xla"])
    result["matmul_gflops"] = flops / best / 1e3
    result["ceiling_images_per_s"] = 1e6 / best
    return result


def _child_main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--candidate", default="keras_vae")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--compile", default="{}")
    parser.add_argument("--whole-fit-child", action="store_true")
    args = parser.parse_args(argv)
    if args.profile:
        return _common.emit(profile_step())
    if args.whole_fit_child:
        return _common.emit(whole_fit(args.candidate, args.epochs, args.seed))
    _common.emit(run_candidate(
        args.candidate, args.epochs, args.seed, args.train_size,
        args.batch_size, args.dataset, json.loads(args.compile)))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--child" in argv:
        return _child_main(argv)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES))
    parser.add_argument("--only", choices=["cvae"], default=None,
                        help="run only the conditional VAE row")
    parser.add_argument("--readme", action="store_true",
                        help="with --only cvae: write its table between the "
                             "cvae_speed markers of README.md")
    parser.add_argument("--profile", action="store_true",
                        help="time the parts of one training step instead")
    parser.add_argument("--whole-fit", action="store_true",
                        help="whole-fit wall times (first and second fit) "
                             "against PyTorch eager instead")
    parser.add_argument("--fit-epochs", type=int, nargs="+",
                        default=list(WHOLE_FIT_EPOCHS),
                        help="epoch counts of --whole-fit")
    parser.add_argument("--rows", nargs="+", choices=list(WHOLE_FIT_ROWS),
                        default=list(DEFAULT_WHOLE_FIT_ROWS),
                        help="rows of --whole-fit")
    parser.add_argument("--cache", choices=WHOLE_FIT_CACHES, default="user",
                        help="XLA compilation cache of --whole-fit children")
    parser.add_argument("--json", default=None,
                        help="also write the --whole-fit records here")
    args = parser.parse_args(argv)
    if args.whole_fit:
        result = benchmark_whole_fit(args.fit_epochs, args.repeats,
                                     args.rows, args.cache)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(result, handle, indent=1)
        print(whole_fit_table(result["summary"]))
        return
    if args.profile:
        print(json.dumps(_common.run_child("train_speed", ["--profile"]),
                         indent=1))
        return
    if args.only == "cvae":
        result = benchmark_cvae(args.epochs, args.repeats)
        print(json.dumps({key: result[key] for key in
                          ("candidates", "speedup", "fit_time_ratio",
                           "target")}, indent=1))
        markdown = cvae_markdown(result)
        print("\n".join(markdown))
        if args.readme:
            markdown.append(
                f"Measured {_common.now()} with `.venv/bin/python benchmarks/"
                f"train_speed.py --only cvae --epochs {args.epochs} "
                f"--repeats {args.repeats} --readme`.")
            _common.update_readme("\n".join(markdown[2:]) + "\n",
                                  CVAE_README_MARKERS)
        return
    result = benchmark(args.epochs, args.repeats, args.candidates)
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
