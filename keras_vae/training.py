"""The main job: train a VAE on a named data set, evaluate it, plot it."""

import contextlib
import math
import numbers
import os
import sys
import time

import keras

from keras_vae import datasets, files, metrics, models, plotting
from keras_vae import distribute as _distribute
from keras_vae.callbacks import StopOnNonFinite

BUILDERS = {"mlp": models.mlp_vae, "conv": models.conv_vae}
#: The files one run writes into its output folder, by report key.
RUN_FILES = {
    "reconstructions": "reconstructions.png",
    "samples": "samples.png",
    "latent_scatter": "latent_scatter.png",
    "latent_traversal": "latent_traversal.png",
    "model": "model.keras",
    "report": "report.json",
}


def _check_count(name, value):
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or value < 1):
        raise ValueError(
            f"Expected `{name}` to be an integer >= 1. Received: "
            f"{name}={value!r}"
        )
    return int(value)


def check_train_options(dataset="mnist5k", model="mlp", latent_dim=16,
                        epochs=30, batch_size=128, learning_rate=1e-3,
                        seed=0):
    """Raise `ValueError` for any option `train_and_report` cannot run with.

    Called before anything is loaded, trained or written.

    Args:
        dataset: str. A name `keras_vae.datasets.load` knows.
        model: str. A key of `BUILDERS`.
        latent_dim: int >= 1.
        epochs: int >= 1.
        batch_size: int >= 1.
        learning_rate: float, finite and > 0.
        seed: int.

    Example:

    >>> from keras_vae import training
    >>> training.check_train_options(epochs=2)
    """
    known = sorted(datasets.EMBEDDED) + list(datasets.TFDS_NAMES)
    if not isinstance(dataset, str) or dataset.lower() not in known:
        raise ValueError(
            f"Unknown data set. Expected one of {known}. Received: "
            f"dataset={dataset!r}"
        )
    if model not in BUILDERS:
        raise ValueError(
            f"Unknown model. Expected one of {sorted(BUILDERS)}. "
            f"Received: model={model!r}"
        )
    for name, value in (("latent_dim", latent_dim), ("epochs", epochs),
                        ("batch_size", batch_size)):
        _check_count(name, value)
    if (isinstance(learning_rate, bool)
            or not isinstance(learning_rate, numbers.Real)
            or not math.isfinite(learning_rate) or learning_rate <= 0):
        raise ValueError(
            "Expected `learning_rate` to be a finite number > 0. Received: "
            f"learning_rate={learning_rate!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"Expected `seed` to be an integer. Received: seed={seed!r}")


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
    stop_on_non_finite=True,
    distribute=None,
):
    """Train, evaluate on the test split, and write PNGs and a JSON report.

    Writes `reconstructions.png`, `samples.png`, `latent_scatter.png`
    (posterior means of the test set, PCA if the latent has more than two
    dimensions, coloured by label), `latent_traversal.png`, `model.keras`
    and `report.json` to `output_dir`.

    Before loading or training anything, every option is checked
    (`check_train_options`) and so is every destination: an existing run
    file is refused unless `overwrite=True`, a symbolic link always (no file
    is written through a link), and an output folder under a file or not
    writable. The output folder is then claimed for the run
    (`keras_vae.files.claim_folder`): a second run into the same folder is
    refused at once and writes nothing. Every file is written atomically.
    A run that fails before its first file leaves no folder behind.

    Args:
        dataset: str. Data set name (see `keras_vae.datasets.load`).
        model: str. `"mlp"` or `"conv"`.
        latent_dim: int. Latent dimensions.
        epochs: int. Training epochs, >= 1.
        batch_size: int. Batch size, >= 1.
        learning_rate: float. Adam learning rate, finite and > 0.
        seed: int. Seed of weights, batch order and sampling.
        output_dir: str. Folder for the run files.
        data_dir: str or None. tensorflow-datasets data directory.
        overwrite: bool. Replace the files of an earlier run in
            `output_dir`.
        verbose: `"auto"`, 0, 1 or 2. Keras progress output.
        stop_on_non_finite: bool. Train with
            `keras_vae.callbacks.StopOnNonFinite`: a NaN or inf stops the
            run with `NonFiniteLossError` (a `ValueError`) and nothing is
            written.
        distribute: str or None. Train on several devices or processes
            (`keras_vae.distribute.NAMES`: `"mirrored"`, `"multi-worker"`,
            `"data-parallel"`); `batch_size` is then the global batch. In
            multi-worker training only the chief writes files; the other
            workers train with it and return the report without files.

    Returns:
        dict. The report, with the test metrics (`elbo` in nats per
        example, higher is better, and `negative_elbo`).

    Example:

    >>> from keras_vae.training import train_and_report
    >>> # report = train_and_report("digits", epochs=2, output_dir="runs/d")
    """
    check_train_options(dataset, model, latent_dim, epochs, batch_size,
                        learning_rate, seed)
    distribution = None
    if distribute is not None:
        # First: a multi-worker strategy must exist before TensorFlow runs.
        distribution = _distribute.get_distribution(distribute)
        if not _distribute.is_chief():
            return _train_and_write(
                dataset, model, int(latent_dim), int(epochs), int(batch_size),
                float(learning_rate), int(seed), data_dir, overwrite,
                verbose, stop_on_non_finite, None, distribution,
            )
    paths = {key: os.path.join(output_dir, name)
             for key, name in RUN_FILES.items()}
    for path in paths.values():
        files.check_writable_destination(path, overwrite)
    if verbose == "auto":
        # A progress bar on a terminal; one line per epoch in logs and CI.
        verbose = 1 if sys.stdout.isatty() else 2
    with files.claim_folder(output_dir):
        # Again under the claim: a run that just finished here wrote files.
        for path in paths.values():
            files.check_writable_destination(path, overwrite)
        return _train_and_write(
            dataset, model, int(latent_dim), int(epochs), int(batch_size),
            float(learning_rate), int(seed), data_dir, overwrite, verbose,
            stop_on_non_finite, paths, distribution,
        )


def _train_and_write(dataset, model, latent_dim, epochs, batch_size,
                     learning_rate, seed, data_dir, overwrite, verbose,
                     stop_on_non_finite, paths, distribution=None):
    keras.utils.set_random_seed(seed)
    (x_train, _), (x_test, y_test) = datasets.load(dataset, data_dir=data_dir)
    # Under a distribution the model is built, trained and evaluated in its
    # scope (`keras_vae.distribute`); `batch_size` is the global batch.
    with (distribution.scope() if distribution is not None
          else contextlib.nullcontext()):
        replicas = _distribute.num_replicas()
        vae = BUILDERS[model](x_train.shape[1:], latent_dim=latent_dim,
                              seed=seed)
        vae.compile(optimizer=keras.optimizers.Adam(learning_rate))
        # Checked once per execution: `fit` keeps its fast multi-step
        # path, and an error names the execution's range of steps.
        callbacks = ([StopOnNonFinite(every_step=False)]
                     if stop_on_non_finite else [])
        # On JAX: this process's share of the global batch, every batch
        # divisible by the devices (`keras_vae.distribute.process_data`).
        x_fit, _, fit_batch_size = _distribute.process_data(
            x_train, batch_size)
        start = time.perf_counter()
        # Numpy input: on TensorFlow, `fit` fuses each execution's steps
        # into one XLA computation (see `keras_vae/_fused_training.py`);
        # the order of the batches is seeded by `set_random_seed` above.
        history = vae.fit(
            x_fit,
            batch_size=fit_batch_size,
            epochs=epochs,
            verbose=verbose if paths is not None else 0,
            callbacks=callbacks,
        )
        train_seconds = time.perf_counter() - start
        test_metrics = vae.evaluate(
            x_test, batch_size=500, verbose=0, return_dict=True
        )
    report = {
        "dataset": dataset,
        "model": model,
        "backend": keras.backend.backend(),
        "epochs": epochs,
        "batch_size": batch_size,
        "latent_dim": latent_dim,
        "learning_rate": learning_rate,
        "train_seconds": round(train_seconds, 2),
        "train_elbo": float(history.history["elbo"][-1]),
        "test": {k: float(v) for k, v in test_metrics.items()},
        "negative_elbo": -float(test_metrics["elbo"]),
        "active_units": metrics.active_units(vae, x_test),
        "replicas": replicas,
    }
    if paths is None:
        # Not the chief: join its save of the model, write nothing.
        _distribute.save_weights_elsewhere(vae)
        report["files"] = {}
        return report
    report.update({
        "files": {
            "reconstructions": plotting.reconstruction_grid(
                vae, x_test, paths["reconstructions"]
            ),
            "samples": plotting.sample_grid(vae, paths["samples"], seed=seed),
            "latent_scatter": plotting.latent_scatter(
                vae, x_test, paths["latent_scatter"], labels=y_test,
                title=f"{model} VAE on {dataset}: test posterior means",
            ),
            "latent_traversal": plotting.latent_traversal(
                vae, paths["latent_traversal"], x=x_test,
            ),
        },
    })
    # Atomic: a run killed while saving never leaves a broken model.keras.
    report["files"]["model"] = files.save_model(
        vae, paths["model"], overwrite=overwrite
    )
    files.write_json(paths["report"], report, overwrite=overwrite)
    return report
