"""Training under `keras.distribution` on JAX: DataParallel over two devices.

One child process with two host devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=2`) runs every check and
reports JSON: data-parallel training against one device, the pruning masks,
gradient accumulation through keras-vae's JAX train step, the distribution
helpers, and `keras-vae train --distribute data-parallel`.
"""

import json
import os

import numpy as np
import pytest
from backend_runner import run_with_backend

DATA_PARALLEL_CHECKS = r'''
import contextlib, json, os, tempfile

import jax
import keras
import numpy as np

import keras_vae
from keras_vae import cli, compression, distribute

results = {"devices": len(jax.devices())}
rng = np.random.default_rng(0)
x = (rng.uniform(size=(320, 8, 8, 1)) > 0.5).astype("float32")
labels = rng.integers(0, 3, size=320)


def build(conditional):
    if conditional:
        return keras_vae.models.mlp_cvae(
            (8, 8, 1), num_classes=3, latent_dim=2, hidden_units=(16,), seed=3)
    return keras_vae.models.mlp_vae(
        (8, 8, 1), latent_dim=2, hidden_units=(16,), seed=3)


def train_20_steps(distribution, conditional, prune, initial=None):
    scope = (distribution.scope() if distribution is not None
             else contextlib.nullcontext())
    with scope:
        model = build(conditional)
        if initial is not None:
            model.set_weights(initial)
        initial = [w.copy() for w in model.get_weights()]
        # Plain SGD: an update proportional to the gradient shows a wrong
        # averaging over replicas (Adam would hide any constant factor) and
        # keeps float rounding small (Adam turns the rounding noise of a
        # near-zero gradient into a full-size step).
        model.compile(optimizer=keras.optimizers.SGD(1e-3))
        callbacks = [compression.PruningCallback(
            compression.ConstantSparsity(0.5, 0, frequency=5))] if prune else []
        data = (x, labels) if conditional else (x,)
        history = model.fit(*data, batch_size=16, epochs=1, verbose=0,
                            shuffle=False, callbacks=callbacks)
        masks = [np.asarray(mask) for hook in compression.pruning_hooks(model)
                 for mask in hook.masks]
    devices = len(model.trainable_variables[0].value.sharding.device_set)
    return initial, model, masks, history.history, devices


data_parallel = distribute.get_distribution("data-parallel")
with data_parallel.scope():
    results["replicas_in_scope"] = distribute.num_replicas()
for name, conditional, prune in (("vae_pruned", False, True),
                                 ("cvae", True, False)):
    initial, one, one_masks, one_history, _ = train_20_steps(
        None, conditional, prune)
    _, two, two_masks, two_history, devices = train_20_steps(
        data_parallel, conditional, prune, initial)
    results[name] = {
        "variable_devices": devices,
        "iterations": [int(one.optimizer.iterations),
                       int(two.optimizer.iterations)],
        "weights_allclose": all(
            np.allclose(a, b, rtol=1e-5, atol=1e-7)
            for a, b in zip(one.get_weights(), two.get_weights())),
        "moved": max(float(np.max(np.abs(a - b)))
                     for a, b in zip(initial, two.get_weights())),
        "mask_count": len(two_masks),
        "masks_equal": len(one_masks) == len(two_masks) and all(
            np.array_equal(a, b) for a, b in zip(one_masks, two_masks)),
        "elbo": [one_history["elbo"][-1], two_history["elbo"][-1]],
    }

# Gradient accumulation: 4 micro-batches of 32 make the update of one
# batch of 128. The reparameterisation noise is set to zero so that both
# see the same noise (the noise of 4 draws of 32 rows is not that of one
# draw of 128 rows).
distribute.normal_for_global_batch = (
    lambda shape, dtype="float32", seed=None: keras.ops.zeros(shape, dtype))
big = rng.uniform(size=(128, 8, 8, 1)).astype("float32")


def one_update(batch_size, accumulation):
    keras.utils.set_random_seed(0)  # the same initial weights
    model = build(False)
    model.compile(optimizer=keras.optimizers.SGD(
        0.5, gradient_accumulation_steps=accumulation))
    initial = [w.copy() for w in model.get_weights()]
    model.fit(big, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return initial, model.get_weights()


initial, accumulated = one_update(32, 4)
_, large = one_update(128, None)
results["accumulation"] = {
    "allclose": all(np.allclose(a, b, rtol=1e-5, atol=1e-7)
                    for a, b in zip(accumulated, large)),
    "moved": max(float(np.max(np.abs(a - b)))
                 for a, b in zip(initial, accumulated)),
}

try:
    distribute.get_distribution("mirrored")
    results["mirrored_on_jax"] = "accepted"
except ValueError as error:
    results["mirrored_on_jax"] = str(error)

output = os.path.join(tempfile.mkdtemp(), "cli_run")
code = cli.main(["train", "--dataset", "digits", "--epochs", "1",
                 "--batch-size", "64", "--latent-dim", "2",
                 "--distribute", "data-parallel", "--output-dir", output])
with open(os.path.join(output, "report.json")) as handle:
    report = json.load(handle)
results["cli"] = {"code": code, "replicas": report.get("replicas"),
                  "files": sorted(os.listdir(output))}
print("RESULTS" + json.dumps(results))
'''


@pytest.fixture(scope="module")
def data_parallel():
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = (
        flags + " --xla_force_host_platform_device_count=2").strip()
    try:
        output = run_with_backend(DATA_PARALLEL_CHECKS, backend="jax",
                                  timeout=1800)
    finally:
        if flags:
            os.environ["XLA_FLAGS"] = flags
        else:
            del os.environ["XLA_FLAGS"]
    line = [line for line in output.splitlines()
            if line.startswith("RESULTS")][-1]
    results = json.loads(line[len("RESULTS"):])
    assert results["devices"] == 2
    return results


@pytest.mark.parametrize("name", ["vae_pruned", "cvae"])
def test_data_parallel_on_two_devices_trains_like_one_device(
        data_parallel, name):
    run = data_parallel[name]
    assert run["variable_devices"] == 2  # the model really is distributed
    assert run["iterations"] == [20, 20]
    assert run["moved"] > 1e-3
    assert run["weights_allclose"], run
    np.testing.assert_allclose(run["elbo"][0], run["elbo"][1], rtol=1e-5)


def test_data_parallel_pruning_masks_equal_one_device(data_parallel):
    run = data_parallel["vae_pruned"]
    assert run["mask_count"] >= 2
    assert run["masks_equal"]


def test_gradient_accumulation_4x32_equals_batch_128_on_jax(data_parallel):
    run = data_parallel["accumulation"]
    assert run["moved"] > 1e-3
    assert run["allclose"]


def test_distribution_helpers_on_jax(data_parallel):
    assert data_parallel["replicas_in_scope"] == 2
    message = data_parallel["mirrored_on_jax"]
    assert "data-parallel" in message and "Received: distribute='mirrored'" in (
        message)


def test_cli_train_distribute_data_parallel(data_parallel):
    run = data_parallel["cli"]
    assert run["code"] == 0
    assert run["replicas"] == 2
    assert "model.keras" in run["files"]


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("RUN_SLOW") != "1",
                    reason="starts 4 JAX processes; set RUN_SLOW=1")
def test_two_jax_processes_resume_after_a_killed_process(tmp_path):
    import sys

    bench = os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "benchmarks")
    sys.path.insert(0, bench)
    try:
        import multi_worker
    finally:
        sys.path.remove(bench)
    # jax.distributed on localhost, gloo CPU collectives, every callback;
    # process 1 is killed in epoch 1 and both are started again.
    report = multi_worker.run_cluster(
        str(tmp_path / "run"), workers=2, backend="jax", epochs=3,
        train_size=128, batch_size=64, hidden_units=(16,), kill_at_epoch=1,
        timeout=1800)
    assert report["replicas"] == 2
    assert report["restarts"] == 1 and report["killed_exit_code"] == -9
    assert report["epochs_run_last_start"] == 2
    assert report["worker_elbos"][0] == report["worker_elbos"][1]
    assert report["files_ok"]
    assert np.isfinite(report["test_elbo"])
