"""The model family on MNIST-5k, one command: quality, and int8 on device.

Trains every builder on the 4,000 MNIST-5k training digits with the
README's settings (latent 16, Bernoulli, Adam 1e-3, batch 128, 30 epochs,
seed 0): `mlp_vae` (784-512-256), `conv_vae` (Conv 32-64, transpose
decoder), `conv1d_vae` (MNIST rows: each digit as a sequence of 28 rows of
28 pixels, Conv1D 32-64), the conditional `mlp_cvae` and `conv_cvae`, and
`mlp_vae` with the learned mixture-of-Gaussians prior (10 components).
Then, on the 1,000 test digits:

- quality: the ELBO from `model.evaluate` and from `keras_vae.metrics.elbo`,
  the IWAE NLL with K = 500 (nats and bits/dim), active units and the
  reconstruction error (skipped with `--export-only`);
- device: each model is written as a full-int8 `.tflite` file
  (`keras_vae.export.to_tflite`, calibrated on 500 training digits, with
  their labels for the conditional models) and checked with
  `keras_vae.export.verify` (conditional models with the test labels): the
  file's reconstruction NLL against the float Keras model, which must stay
  within 1% for the MLPs and 2% for the convolutional models.

Writes `benchmarks/family_table.md` (and `.json`) and the PNG plots of each
model to `runs/family/<model>/`.

    .venv/bin/python benchmarks/family_table.py                # everything
    .venv/bin/python benchmarks/family_table.py --export-only --readme  # int8 table
    .venv/bin/python benchmarks/family_table.py --epochs 2 --iwae-samples 50  # smoke run
"""

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import _common
import keras

import keras_vae
from keras_vae.export import to_tflite, verify

HERE = os.path.dirname(os.path.abspath(__file__))
README_MARKERS = ("<!-- family_int8:start -->", "<!-- family_int8:end -->")
IMAGE = (28, 28, 1)
# MNIST rows for the 1-D model: 28 steps of 28 features.
ROWS = (28, 28)

#: name -> (builder(seed), input shape, int8 NLL bound in % of float Keras).
BUILDERS = {
    "mlp_vae": (lambda seed: keras_vae.models.mlp_vae(
        IMAGE, latent_dim=16, hidden_units=(512, 256), seed=seed), IMAGE, 1.0),
    "conv_vae": (lambda seed: keras_vae.models.conv_vae(
        IMAGE, latent_dim=16, filters=(32, 64), seed=seed), IMAGE, 2.0),
    "conv1d_vae": (lambda seed: keras_vae.models.conv1d_vae(
        ROWS, latent_dim=16, filters=(32, 64), likelihood="bernoulli",
        seed=seed), ROWS, 2.0),
    "mlp_cvae": (lambda seed: keras_vae.models.mlp_cvae(
        IMAGE, num_classes=10, latent_dim=16, hidden_units=(512, 256),
        seed=seed), IMAGE, 1.0),
    "conv_cvae": (lambda seed: keras_vae.models.conv_cvae(
        IMAGE, num_classes=10, latent_dim=16, filters=(32, 64), seed=seed),
        IMAGE, 2.0),
    "mlp_vae_mixture": (lambda seed: keras_vae.models.mlp_vae(
        IMAGE, latent_dim=16, hidden_units=(512, 256), prior="mixture",
        seed=seed), IMAGE, 1.0),
}


def train(name, data, epochs, seed):
    (x_train, y_train), _ = data
    keras.utils.set_random_seed(seed)
    build, shape, _ = BUILDERS[name]
    model = build(seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    dataset = keras_vae.datasets.to_dataset(
        x_train.reshape((-1, *shape)), 128, seed=seed,
        y=y_train if model.is_conditional else None)
    start = time.perf_counter()
    model.fit(dataset, epochs=epochs, verbose=0)
    return model, time.perf_counter() - start


def quality_row(model, x_test, y_test, epochs, iwae_samples, seed):
    """ELBO, IWAE NLL, active units and reconstruction error on the test set."""
    labels = y_test if model.is_conditional else None
    if model.is_conditional:
        evaluated = model.evaluate(x_test, y_test, batch_size=500, verbose=0,
                                   return_dict=True)
    else:
        evaluated = model.evaluate(x_test, batch_size=500, verbose=0,
                                   return_dict=True)
    start = time.perf_counter()
    iwae = keras_vae.metrics.iwae_nll(model, x_test, num_samples=iwae_samples,
                                      labels=labels, seed=seed)
    return {
        "evaluate_elbo": float(evaluated["elbo"]),
        "elbo": keras_vae.metrics.elbo(model, x_test, labels=labels, seed=seed),
        "iwae_nll": iwae["nll"],
        "iwae_stderr": iwae["stderr"],
        "iwae_bits_per_dim": iwae["bits_per_dim"],
        "iwae_seconds": round(time.perf_counter() - start, 1),
        "active_units": keras_vae.metrics.active_units(model, x_test,
                                                       labels=labels),
        "reconstruction_mse": keras_vae.metrics.reconstruction_error(
            model, x_test, labels=labels),
    }


def export_row(name, model, data, directory):
    """Full-int8 export and `verify` against the float Keras model."""
    (x_train, y_train), (x_test, y_test) = data
    shape, bound = BUILDERS[name][1:]
    x_train, x_test = x_train.reshape((-1, *shape)), x_test.reshape((-1, *shape))
    calibration = ((x_train[:500], y_train[:500]) if model.is_conditional
                   else x_train[:500])
    path = os.path.join(directory, f"{name}_int8.tflite")
    info = to_tflite(model, path, representative_data=calibration,
                     overwrite=True)
    report = verify(path, model, x_test,
                    labels=y_test if model.is_conditional else None)
    return {
        "int8_bytes": info.num_bytes,
        "int8_gzip_bytes": info.gzip_bytes,
        "keras_reconstruction_nll": report.keras_nll,
        "int8_reconstruction_nll": report.tflite_nll,
        "int8_nll_delta_pct": report.nll_delta_pct,
        "int8_bound_pct": bound,
        "int8_within_bound": bool(abs(report.nll_delta_pct) <= bound),
        "int8_prior": (info.metadata.get("prior") or {}).get("class_name"),
    }


def plots(name, model, data, plot_dir, seed):
    _, (x_test, y_test) = data
    shape = BUILDERS[name][1]
    x_test = x_test.reshape((-1, *shape))
    labels = y_test if model.is_conditional else None
    directory = os.path.join(plot_dir, name)
    keras_vae.plotting.reconstruction_grid(
        model, x_test, os.path.join(directory, "reconstructions.png"),
        labels=labels)
    keras_vae.plotting.sample_grid(
        model, os.path.join(directory, "samples.png"), seed=seed)
    keras_vae.plotting.latent_scatter(
        model, x_test, os.path.join(directory, "latent_scatter.png"),
        labels=y_test,
        title=f"{name}: posterior means of the test digits (PCA)")
    keras_vae.plotting.latent_traversal(
        model, os.path.join(directory, "latent_traversal.png"), x=x_test,
        labels=labels)


def run_one(name, data, args, directory):
    model, seconds = train(name, data, args.epochs, args.seed)
    row = {"model": name, "params": model.count_params(),
           "train_seconds": round(seconds, 1),
           "seconds_per_epoch": round(seconds / args.epochs, 2)}
    if not args.export_only:
        _, (x_test, y_test) = data
        x_test = x_test.reshape((-1, *BUILDERS[name][1]))
        row.update(quality_row(model, x_test, y_test, args.epochs,
                               args.iwae_samples, args.seed))
        plots(name, model, data, args.plot_dir, args.seed)
    row.update(export_row(name, model, data, directory))
    return row


def _quality_markdown(rows, epochs, iwae_samples):
    lines = [
        f"MNIST-5k test set (1,000 digits), {epochs} epochs, latent 16, "
        f"Bernoulli, Adam 1e-3, batch 128, seed 0, backend "
        f"{keras.backend.backend()}. Nats per example; lower NLL is better. "
        "The conditional models bound log p(x | y) (the label is given), so "
        "they are not comparable one-to-one with the unconditional ones.",
        "",
        f"| model | params | test ELBO (evaluate) | test ELBO (metrics.elbo) | "
        f"IWAE NLL K={iwae_samples} | bits/dim | active units (of 16) | "
        f"recon. MSE | train s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['params']:,} | {row['evaluate_elbo']:.2f} | "
            f"{row['elbo']:.2f} | {row['iwae_nll']:.2f} ± {row['iwae_stderr']:.2f} | "
            f"{row['iwae_bits_per_dim']:.4f} | {row['active_units']} | "
            f"{row['reconstruction_mse']:.4f} | {row['train_seconds']:.0f} |"
        )
    below = [row["model"] for row in rows if row["iwae_nll"] <= -row["elbo"]]
    above = [row["model"] for row in rows if row["model"] not in below]
    check = (
        "IWAE NLL <= -ELBO (the importance-weighted bound is the tighter "
        f"one) for: {', '.join(below) or 'none'}."
    )
    if above:
        check += f" NOT below -ELBO for: {', '.join(above)}."
    return lines + ["", check, ""]


def _export_markdown(rows, epochs):
    lines = [
        f"Full-int8 LiteRT file of each model ({epochs} epochs; calibrated "
        "on 500 training digits, conditional models with their labels), "
        "checked with `keras_vae.export.verify` on the 1,000 test digits: "
        "mean reconstruction NLL (nats) of the float Keras model and of the "
        "file; bound: 1% for the MLPs, 2% for the convolutional models. "
        "`conv1d_vae` reads each digit as 28 rows of 28 pixels.",
        "",
        "| model | int8 bytes | gzip bytes | Keras NLL | int8 file NLL | "
        "Δ NLL % | bound | within |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['int8_bytes']:,} | "
            f"{row['int8_gzip_bytes']:,} | {row['keras_reconstruction_nll']:.2f} | "
            f"{row['int8_reconstruction_nll']:.2f} | "
            f"{row['int8_nll_delta_pct']:+.3f} | {row['int8_bound_pct']:.0f}% | "
            f"{'yes' if row['int8_within_bound'] else '**NO**'} |"
        )
    return lines + [""]


def to_markdown(rows, args):
    lines = []
    if not args.export_only:
        lines += _quality_markdown(rows, args.epochs, args.iwae_samples)
    lines += _export_markdown(rows, args.epochs)
    command = "benchmarks/family_table.py" + (
        " --export-only" if args.export_only else
        f" --iwae-samples {args.iwae_samples}") + f" --epochs {args.epochs}"
    lines.append(
        f"Produced by `.venv/bin/python {command}` (models: "
        f"{', '.join(row['model'] for row in rows)}).")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--iwae-samples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", default=list(BUILDERS),
                        choices=list(BUILDERS))
    parser.add_argument("--export-only", action="store_true",
                        help="train and check the int8 files only (no IWAE, "
                        "no plots)")
    parser.add_argument("--output", default=None,
                        help="Markdown table (default: benchmarks/"
                        "family_table.md, or family_export_table.md with "
                        "--export-only)")
    parser.add_argument("--plot-dir", default="runs/family")
    parser.add_argument("--readme", action="store_true",
                        help="also write the int8 table between the "
                        "family_int8 markers of README.md")
    args = parser.parse_args(argv)
    if args.output is None:
        name = "family_export_table.md" if args.export_only else "family_table.md"
        args.output = os.path.join(HERE, name)
    data = keras_vae.datasets.load("mnist5k")
    directory = tempfile.mkdtemp(prefix="family_int8_")
    rows = []
    for name in args.models:
        rows.append(run_one(name, data, args, directory))
        print(json.dumps(rows[-1]), flush=True)
        if not rows[-1]["int8_within_bound"]:
            print(f"WARNING: {name}: int8 NLL past its bound", flush=True)
        # Written after every model, so a long run that is stopped early
        # still leaves the rows it finished.
        table = to_markdown(rows, args)
        with open(args.output, "w") as handle:
            handle.write(table)
        with open(os.path.splitext(args.output)[0] + ".json", "w") as handle:
            json.dump(rows, handle, indent=2)
    print(table)
    if args.readme:
        lines = _export_markdown(rows, args.epochs)
        lines.append(f"Measured {_common.now()} with `KERAS_BACKEND="
                     "tensorflow .venv/bin/python benchmarks/family_table.py "
                     f"--export-only --epochs {args.epochs} --readme`.")
        _common.update_readme("\n".join(lines) + "\n", README_MARKERS)


if __name__ == "__main__":
    main()
