"""The main job: train a VAE on a named data set, evaluate it, plot it."""

import json
import os
import sys
import time

import keras

from keras_vae import datasets, files, metrics, models, plotting

BUILDERS = {"mlp": models.mlp_vae, "conv": models.conv_vae}


def train_and_report(
    dataset="mnist5k",
    model="mlp",
    latent_dim=16,
    epochs=30,
    batch_size=128,
    learning_rate=1e-3,
    seed=0,
    output_dir="runs/demo",
    data_dir=None,
    overwrite=False,
    verbose="auto",
):
    """Train, evaluate on the test split, and write PNGs and a JSON report.

    Writes `reconstructions.png`, `samples.png`, `latent_scatter.png`
    (posterior means of the test set, PCA if the latent has more than two
    dimensions, coloured by label), `latent_traversal.png`, `model.keras`
    and `report.json` to `output_dir`. Refuses to overwrite an existing
    `model.keras` unless `overwrite=True`.

    Returns the report as a dict with the test metrics (`elbo` in nats per
    example, higher is better, and `negative_elbo`).
    """
    if model not in BUILDERS:
        raise ValueError(
            f"Unknown model. Expected one of {sorted(BUILDERS)}. "
            f"Received: model={model!r}"
        )
    model_path = os.path.join(output_dir, "model.keras")
    if os.path.exists(model_path) and not overwrite:
        raise FileExistsError(
            f"{model_path} already exists; pass overwrite=True (CLI: "
            "--overwrite) or choose another output directory."
        )
    if verbose == "auto":
        # A progress bar on a terminal; one line per epoch in logs and CI.
        verbose = 1 if sys.stdout.isatty() else 2
    keras.utils.set_random_seed(seed)
    (x_train, _), (x_test, y_test) = datasets.load(dataset, data_dir=data_dir)
    vae = BUILDERS[model](x_train.shape[1:], latent_dim=latent_dim, seed=seed)
    vae.compile(optimizer=keras.optimizers.Adam(learning_rate))
    start = time.perf_counter()
    # Numpy input: on TensorFlow, `fit` fuses each execution's steps into
    # one XLA computation (see `keras_vae/_fused_training.py`); the order
    # of the batches is seeded by `set_random_seed` above.
    history = vae.fit(
        x_train,
        batch_size=batch_size,
        epochs=epochs,
        verbose=verbose,
    )
    train_seconds = time.perf_counter() - start
    test_metrics = vae.evaluate(
        x_test, batch_size=500, verbose=0, return_dict=True
    )
    os.makedirs(output_dir, exist_ok=True)
    report = {
        "dataset": dataset,
        "model": model,
        "backend": keras.backend.backend(),
        "epochs": epochs,
        "batch_size": batch_size,
        "latent_dim": latent_dim,
        "train_seconds": round(train_seconds, 2),
        "train_elbo": float(history.history["elbo"][-1]),
        "test": {k: float(v) for k, v in test_metrics.items()},
        "negative_elbo": -float(test_metrics["elbo"]),
        "active_units": metrics.active_units(vae, x_test),
        "files": {
            "reconstructions": plotting.reconstruction_grid(
                vae, x_test, os.path.join(output_dir, "reconstructions.png")
            ),
            "samples": plotting.sample_grid(
                vae, os.path.join(output_dir, "samples.png"), seed=seed
            ),
            "latent_scatter": plotting.latent_scatter(
                vae, x_test, os.path.join(output_dir, "latent_scatter.png"),
                labels=y_test,
                title=f"{model} VAE on {dataset}: test posterior means",
            ),
            "latent_traversal": plotting.latent_traversal(
                vae, os.path.join(output_dir, "latent_traversal.png"),
                x=x_test,
            ),
        },
    }
    # Atomic: a run killed while saving never leaves a broken model.keras.
    files.save_model(vae, model_path, overwrite=overwrite)
    report["files"]["model"] = model_path
    with open(os.path.join(output_dir, "report.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    return report
