"""Training speed on an accelerator: keras-vae on JAX against PyTorch.

For the machine that has a GPU, JAX and PyTorch but no TensorFlow (keras-vae
does not import TensorFlow on the JAX backend). On the same device, for the
MLP VAE (784-512-256-16) and the conv VAE (`conv_vae`, filters 32-64,
latent 16) on 28x28x1 images, at batch 128 and 1024, it measures training
images per second of:

- keras-vae: `model.fit` with its defaults (JAX, XLA-compiled steps,
  32 steps per execution), numpy input as users pass it;
- PyTorch eager and PyTorch `torch.compile`: the same architecture and the
  same ELBO (Bernoulli log-likelihood summed over pixels plus the analytic
  KL to N(0, I), averaged over the batch, one reparameterised sample),
  Adam 1e-3, the data already on the device (PyTorch's best case).

"Same model" is checked, not assumed: the keras-vae weights are copied into
the PyTorch module and both ELBOs are computed on one batch through the
posterior mean (`parity`, in nats; it must be ~1e-4 or less).

Each framework runs in a fresh child process, so one does not hold device
memory for the other. On a machine without a GPU it runs on the CPU (the
`--quick` settings are what the tests run).

    .venv/bin/python benchmarks/gpu.py                  # full, on the GPU
    .venv/bin/python benchmarks/gpu.py --quick          # tiny, any device

Nothing here has run on a GPU yet (no GPU machine was available); the
README says so until its table comes from a GPU run.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common

MODELS = ("mlp", "conv")
BATCHES = (128, 1024)
FRAMEWORKS = ("keras_vae_jax", "torch_eager", "torch_compile")
IMAGE_SHAPE = (28, 28, 1)
LATENT = 16
MLP_HIDDEN = (512, 256)
CONV_FILTERS = (32, 64)


def _settings(quick):
    if quick:
        return {"examples": 256, "epochs": 2, "batches": (64,),
                "mlp_hidden": (32, 16), "conv_filters": (4, 8),
                "latent": 4}
    return {"examples": 4096 * 4, "epochs": 4, "batches": BATCHES,
            "mlp_hidden": MLP_HIDDEN, "conv_filters": CONV_FILTERS,
            "latent": LATENT}


def _data(examples, seed=0):
    """MNIST-5k images, tiled to `examples` (binary-ish, in [0, 1])."""
    import numpy as np

    from keras_vae import datasets

    (x, _), _ = datasets.load("mnist5k")
    reps = -(-examples // len(x))
    x = np.concatenate([x] * reps)[:examples]
    return np.random.default_rng(seed).permutation(x).astype("float32")


# ------------------------------------------------------------------ keras-vae
def keras_model(kind, settings):
    """The keras-vae model the PyTorch modules mirror."""
    import keras_vae

    if kind == "mlp":
        return keras_vae.models.mlp_vae(
            IMAGE_SHAPE, latent_dim=settings["latent"],
            hidden_units=settings["mlp_hidden"], seed=0)
    return keras_vae.models.conv_vae(
        IMAGE_SHAPE, latent_dim=settings["latent"],
        filters=settings["conv_filters"], seed=0)


def time_keras(kind, batch_size, settings, x):
    """keras-vae `fit` images/s (epochs after the first)."""
    import keras

    model = keras_model(kind, settings)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    seconds = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.start)

    history = model.fit(x, batch_size=batch_size, epochs=settings["epochs"],
                        verbose=0, callbacks=[Timer()])
    steady = seconds[1:] or seconds
    return {"images_per_second": len(x) * len(steady) / sum(steady),
            "first_epoch_seconds": seconds[0],
            "final_elbo": float(history.history["elbo"][-1])}


# -------------------------------------------------------------------- PyTorch
def torch_model(kind, settings):
    """The PyTorch module of the same architecture as `keras_model`."""
    import torch
    from torch import nn
    from torch.nn import functional

    latent = settings["latent"]
    height, width, channels = IMAGE_SHAPE

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            sizes = (height * width * channels, *settings["mlp_hidden"])
            self.encoder = nn.ModuleList(
                nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
            self.z_mean = nn.Linear(sizes[-1], latent)
            self.z_log_var = nn.Linear(sizes[-1], latent)
            back = (latent, *settings["mlp_hidden"][::-1])
            self.decoder = nn.ModuleList(
                nn.Linear(a, b) for a, b in zip(back, back[1:]))
            self.output = nn.Linear(back[-1], height * width * channels)

        def posterior(self, x):
            hidden = x.reshape(len(x), -1)
            for layer in self.encoder:
                hidden = torch.relu(layer(hidden))
            return self.z_mean(hidden), self.z_log_var(hidden)

        def decode(self, z):
            hidden = z
            for layer in self.decoder:
                hidden = torch.relu(layer(hidden))
            return self.output(hidden).reshape(len(z), height, width, channels)

    class Conv(nn.Module):
        # Keras' "same" stride-2 convolution pads (0, 1): one more row and
        # column after, none before; its transposed convolution is the
        # adjoint, cropped to twice the size. Tensors stay NHWC at the
        # boundaries so flattening matches Keras.
        def __init__(self):
            super().__init__()
            filters = settings["conv_filters"]
            widths = (channels, *filters)
            self.encoder = nn.ModuleList(
                nn.Conv2d(a, b, 3, stride=2) for a, b in zip(widths, widths[1:]))
            self.sizes = [(height, width)]
            for _ in filters:
                h, w = self.sizes[-1]
                self.sizes.append((-(-h // 2), -(-w // 2)))
            h, w = self.sizes[-1]
            flat = h * w * filters[-1]
            self.z_mean = nn.Linear(flat, latent)
            self.z_log_var = nn.Linear(flat, latent)
            self.dense = nn.Linear(latent, flat)
            back = filters[::-1]
            self.decoder = nn.ModuleList(
                nn.ConvTranspose2d(a, b, 3, stride=2)
                for a, b in zip((back[0],) + back[:-1], back))
            self.params = nn.Conv2d(back[-1], channels, 3, padding=1)

        def posterior(self, x):
            hidden = x.permute(0, 3, 1, 2)
            for layer in self.encoder:
                hidden = torch.relu(layer(functional.pad(hidden, (0, 1, 0, 1))))
            hidden = hidden.permute(0, 2, 3, 1).reshape(len(x), -1)
            return self.z_mean(hidden), self.z_log_var(hidden)

        def decode(self, z):
            h, w = self.sizes[-1]
            filters = settings["conv_filters"][::-1]
            hidden = torch.relu(self.dense(z)).reshape(len(z), h, w, filters[0])
            hidden = hidden.permute(0, 3, 1, 2)
            sizes = self.sizes[::-1][1:]
            for layer, (h, w) in zip(self.decoder, sizes):
                # The full transposed output has 2n+1 rows; Keras keeps the
                # first 2n, then crops to the encoder's size at that depth.
                hidden = torch.relu(layer(hidden))[:, :, :h, :w]
            return self.params(hidden).permute(0, 2, 3, 1)

    return MLP() if kind == "mlp" else Conv()


def torch_elbo_terms(module, x, noise=True):
    """Per-batch mean of the negative ELBO (Bernoulli, N(0, I) prior)."""
    import torch
    from torch.nn import functional

    z_mean, z_log_var = module.posterior(x)
    z_log_var = z_log_var.clamp(-20.0, 10.0)
    z = z_mean
    if noise:
        z = z + torch.exp(0.5 * z_log_var) * torch.randn_like(z_mean)
    logits = module.decode(z)
    reconstruction = functional.binary_cross_entropy_with_logits(
        logits, x, reduction="none").reshape(len(x), -1).sum(-1)
    kl = 0.5 * (z_mean ** 2 + z_log_var.exp() - 1.0 - z_log_var).sum(-1)
    return (reconstruction + kl).mean()


def copy_keras_weights(model, module):
    """Load the keras-vae model's weights into the PyTorch module."""
    import numpy as np
    import torch

    def dense(layer, linear):
        kernel, bias = (np.asarray(w) for w in layer.get_weights())
        linear.weight.data = torch.tensor(kernel.T.copy())
        linear.bias.data = torch.tensor(bias)

    def conv(layer, target):
        kernel, bias = (np.asarray(w) for w in layer.get_weights())
        # Keras (kh, kw, in, out) and, transposed, (kh, kw, out, in);
        # PyTorch (out, in, kh, kw) and, transposed, (in, out, kh, kw).
        target.weight.data = torch.tensor(
            np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        target.bias.data = torch.tensor(bias)

    encoder = [layer for layer in model.encoder.layers if layer.get_weights()]
    decoder = [layer for layer in model.decoder.layers if layer.get_weights()]
    heads = {layer.name: layer for layer in encoder}
    body = [layer for layer in encoder
            if layer.name not in ("z_mean", "z_log_var")]
    for layer, target in zip(body, module.encoder):
        (dense if isinstance(target, torch.nn.Linear) else conv)(layer, target)
    dense(heads["z_mean"], module.z_mean)
    dense(heads["z_log_var"], module.z_log_var)
    if hasattr(module, "dense"):
        dense(decoder[0], module.dense)
        for layer, target in zip(decoder[1:-1], module.decoder):
            conv(layer, target)
        conv(decoder[-1], module.params)
    else:
        for layer, target in zip(decoder[:-1], module.decoder):
            dense(layer, target)
        dense(decoder[-1], module.output)


def parity(kind, settings, x):
    """|keras-vae ELBO - PyTorch ELBO| in nats, same weights and batch."""
    import numpy as np
    import torch
    from keras import ops

    model = keras_model(kind, settings)
    module = torch_model(kind, settings)
    copy_keras_weights(model, module)
    batch = x[:64]
    z_mean, z_log_var = model.posterior(batch)
    params = model.decoder_params(z_mean)
    reconstruction = model.likelihood.negative_log_prob(batch, params)
    kl = ops.sum(model.prior.kl(z_mean, z_log_var, z_mean), axis=-1)
    keras_value = float(np.mean(ops.convert_to_numpy(reconstruction + kl)))
    with torch.no_grad():
        torch_value = float(torch_elbo_terms(module, torch.tensor(batch),
                                             noise=False))
    return abs(keras_value - torch_value), keras_value


def time_torch(kind, batch_size, settings, x, compiled):
    """PyTorch images/s (epochs after the first), data on the device."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    module = torch_model(kind, settings).to(device)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    data = torch.tensor(x, device=device)

    def step(batch):
        optimizer.zero_grad(set_to_none=True)
        loss = torch_elbo_terms(module, batch)
        loss.backward()
        optimizer.step()
        return loss

    if compiled:
        step = torch.compile(step)
    seconds, loss = [], None
    for _ in range(settings["epochs"]):
        order = torch.randperm(len(data), device=device)
        start = time.perf_counter()
        for begin in range(0, len(data), batch_size):
            loss = step(data[order[begin:begin + batch_size]])
        if device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    steady = seconds[1:] or seconds
    return {"images_per_second": len(x) * len(steady) / sum(steady),
            "first_epoch_seconds": seconds[0],
            "final_elbo": -float(loss), "device": device}


# ------------------------------------------------------------- child / parent
def _child(framework, quick):
    settings = _settings(quick)
    x = _data(settings["examples"])
    rows = []
    if framework == "keras_vae_jax":
        import jax

        device = jax.default_backend()
        for kind in MODELS:
            row = {"model": kind, "parity_nats": None}
            try:
                row["parity_nats"], row["initial_negative_elbo"] = parity(
                    kind, settings, x)
            except ImportError:  # no PyTorch: nothing to compare with
                pass
            for batch_size in settings["batches"]:
                rows.append(dict(row, framework=framework, device=device,
                                 batch_size=batch_size,
                                 **time_keras(kind, batch_size, settings, x)))
    else:
        for kind in MODELS:
            for batch_size in settings["batches"]:
                try:
                    timing = time_torch(kind, batch_size, settings, x,
                                        compiled=framework == "torch_compile")
                except Exception as error:  # e.g. no compiler for inductor
                    timing = {"error": f"{type(error).__name__}: {error}"[:300]}
                rows.append(dict(timing, framework=framework, model=kind,
                                 batch_size=batch_size))
    print(json.dumps({"rows": rows}))


def _run_child(framework, quick, timeout=3600):
    """`gpu.py --child FRAMEWORK` on the default device; its JSON line."""
    import subprocess

    env = _common.child_env("jax")
    # JAX picks the GPU when there is one, and allocates as it goes, so a
    # child never holds device memory it does not use.
    env.pop("JAX_PLATFORMS", None)
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", framework,
         *(["--quick"] if quick else [])],
        capture_output=True, text=True, timeout=timeout, env=env,
        cwd=_common.REPO_DIR)
    if result.returncode != 0:
        raise RuntimeError(
            f"gpu.py child {framework} failed ({result.returncode}):\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    lines = [line for line in result.stdout.splitlines()
             if line.startswith("{")]
    return json.loads(lines[-1])


def benchmark(quick=False, frameworks=FRAMEWORKS, log=print):
    """Every framework in its own child process; rows of images/s."""
    rows = []
    for framework in frameworks:
        if framework != "keras_vae_jax":
            try:
                import torch  # noqa: F401
            except ImportError:
                log(f"  {framework}: skipped, PyTorch is not installed "
                    "(`pip install torch==2.13.0`)")
                continue
        record = _run_child(framework, quick)
        for row in record["rows"]:
            rows.append(row)
            speed = row.get("images_per_second")
            log(f"  {framework} {row['model']} batch {row['batch_size']}: "
                + (f"{speed:.0f} images/s" if speed else row.get("error", "")))
    return {"quick": quick, "rows": rows}


def to_markdown(result):
    lines = ["| model | batch | framework | device | images/s | vs keras-vae |",
             "|---|---|---|---|---|---|"]
    keras_speed = {(r["model"], r["batch_size"]): r["images_per_second"]
                   for r in result["rows"]
                   if r["framework"] == "keras_vae_jax"}
    for row in result["rows"]:
        speed = row.get("images_per_second")
        base = keras_speed.get((row["model"], row["batch_size"]))
        lines.append(
            f"| {row['model']} | {row['batch_size']} | {row['framework']} | "
            f"{row.get('device', '?')} | "
            + (f"{speed:.0f}" if speed else row.get("error", "failed"))
            + " | " + (f"{speed / base:.2f}x" if speed and base else "")
            + " |")
    parity_rows = [r for r in result["rows"]
                   if r["framework"] == "keras_vae_jax"
                   and r.get("parity_nats") is not None]
    if parity_rows:
        worst = max(r["parity_nats"] for r in parity_rows)
        lines += ["", f"Same model, same ELBO: with the keras-vae weights "
                  f"copied into PyTorch the ELBOs differ by at most "
                  f"{worst:.1e} nats."]
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("framework", nargs="?", default=None,
                        help="child only: the framework to time")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS),
                        choices=FRAMEWORKS)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.child:
        _child(args.framework, args.quick)
        return
    result = benchmark(args.quick, args.frameworks)
    print("\n".join(to_markdown(result)))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
