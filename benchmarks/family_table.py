"""Issue 3, acceptance 2: the model family on MNIST-5k, one command.

Trains `mlp_vae` (784-512-256), `conv_vae` (Conv 32-64, transpose decoder)
and the conditional `mlp_cvae` on the 4,000 MNIST-5k training digits with
the README's settings (latent 16, Bernoulli, Adam 1e-3, batch 128, 30
epochs, seed 0), then reports on the 1,000 test digits: the ELBO from
`model.evaluate` and from `keras_vae.metrics.elbo`, the IWAE NLL with
K = 500 (nats and bits/dim), active units and the reconstruction error.
Writes `benchmarks/family_table.md` (and `.json`) and the PNG plots of each
model to `runs/family/<model>/`.

    .venv/bin/python benchmarks/family_table.py            # ~30-60 min on 2 CPU cores
    .venv/bin/python benchmarks/family_table.py --epochs 2 --iwae-samples 50  # smoke run
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import keras_vae

HERE = os.path.dirname(os.path.abspath(__file__))

BUILDERS = {
    "mlp_vae": lambda seed: keras_vae.models.mlp_vae(
        (28, 28, 1), latent_dim=16, hidden_units=(512, 256), seed=seed),
    "conv_vae": lambda seed: keras_vae.models.conv_vae(
        (28, 28, 1), latent_dim=16, filters=(32, 64), seed=seed),
    "mlp_cvae": lambda seed: keras_vae.models.mlp_cvae(
        (28, 28, 1), num_classes=10, latent_dim=16, hidden_units=(512, 256),
        seed=seed),
}


def run_one(name, data, epochs, iwae_samples, seed, plot_dir):
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    model = BUILDERS[name](seed)
    conditional = isinstance(model, keras_vae.CVAE)
    labels = y_test if conditional else None
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    dataset = keras_vae.datasets.to_dataset(
        x_train, 128, seed=seed, y=y_train if conditional else None)
    start = time.perf_counter()
    model.fit(dataset, epochs=epochs, verbose=0)
    train_seconds = time.perf_counter() - start
    if conditional:
        evaluated = model.evaluate(x_test, y_test, batch_size=500, verbose=0,
                                   return_dict=True)
    else:
        evaluated = model.evaluate(x_test, batch_size=500, verbose=0,
                                   return_dict=True)
    start = time.perf_counter()
    iwae = keras_vae.metrics.iwae_nll(model, x_test, num_samples=iwae_samples,
                                      labels=labels, seed=seed)
    iwae_seconds = time.perf_counter() - start
    row = {
        "model": name,
        "params": model.count_params(),
        "train_seconds": round(train_seconds, 1),
        "seconds_per_epoch": round(train_seconds / epochs, 2),
        "evaluate_elbo": float(evaluated["elbo"]),
        "elbo": keras_vae.metrics.elbo(model, x_test, labels=labels, seed=seed),
        "iwae_nll": iwae["nll"],
        "iwae_stderr": iwae["stderr"],
        "iwae_bits_per_dim": iwae["bits_per_dim"],
        "iwae_seconds": round(iwae_seconds, 1),
        "active_units": keras_vae.metrics.active_units(model, x_test, labels=labels),
        "reconstruction_mse": keras_vae.metrics.reconstruction_error(
            model, x_test, labels=labels),
    }
    directory = os.path.join(plot_dir, name)
    keras_vae.plotting.reconstruction_grid(
        model, x_test, os.path.join(directory, "reconstructions.png")
    ) if not conditional else keras_vae.plotting.image_grid(
        np.concatenate([x_test[:8], np.asarray(model.reconstruct(x_test[:8], y_test[:8]))]),
        os.path.join(directory, "reconstructions.png"),
        title="Test images (top) and reconstructions given their label (bottom)")
    if conditional:
        samples = model.sample(80, labels=np.repeat(np.arange(10), 8), seed=seed)
        keras_vae.plotting.image_grid(
            np.asarray(samples), os.path.join(directory, "samples.png"),
            title="Samples per class (one row per digit 0-9)")
    else:
        keras_vae.plotting.sample_grid(model, os.path.join(directory, "samples.png"),
                                       seed=seed)
    keras_vae.plotting.latent_scatter(
        model, x_test, os.path.join(directory, "latent_scatter.png"), labels=y_test,
        title=f"{name}: posterior means of the test digits (PCA)")
    keras_vae.plotting.latent_traversal(
        model, os.path.join(directory, "latent_traversal.png"), x=x_test,
        labels=y_test if conditional else None)
    return row


def to_markdown(rows, epochs, iwae_samples):
    lines = [
        f"MNIST-5k test set (1,000 digits), {epochs} epochs, latent 16, "
        f"Bernoulli, Adam 1e-3, batch 128, seed 0, backend "
        f"{keras.backend.backend()}. Nats per example; lower NLL is better. "
        f"`mlp_cvae` bounds log p(x | y) (the label is given), so it is not "
        f"comparable one-to-one with the unconditional models.",
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
    lines += [
        "",
        f"Produced by `.venv/bin/python benchmarks/family_table.py --epochs "
        f"{epochs} --iwae-samples {iwae_samples}` "
        f"(models: {', '.join(row['model'] for row in rows)}). {check}",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--iwae-samples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", default=list(BUILDERS),
                        choices=list(BUILDERS))
    parser.add_argument("--output", default=os.path.join(HERE, "family_table.md"))
    parser.add_argument("--plot-dir", default="runs/family")
    args = parser.parse_args(argv)
    data = keras_vae.datasets.load("mnist5k")
    rows = []
    for name in args.models:
        rows.append(run_one(name, data, args.epochs, args.iwae_samples,
                            args.seed, args.plot_dir))
        print(json.dumps(rows[-1]), flush=True)
        if not rows[-1]["iwae_nll"] <= -rows[-1]["elbo"]:
            print(f"WARNING: {name}: IWAE NLL above -ELBO", flush=True)
        # Written after every model, so a long run that is stopped early
        # still leaves the rows it finished.
        table = to_markdown(rows, args.epochs, args.iwae_samples)
        with open(args.output, "w") as handle:
            handle.write(table)
        with open(os.path.splitext(args.output)[0] + ".json", "w") as handle:
            json.dump(rows, handle, indent=2)
    print(table)


if __name__ == "__main__":
    main()
