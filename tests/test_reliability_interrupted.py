"""Interrupted training: a run killed mid-epoch resumes without losing state.

A training subprocess with a backup callback, KL warm-up and pruning is
killed with SIGKILL in the middle of an epoch, then the same training runs
again (in the test process) and resumes from the backup. It must end with
the same warm-up step, beta, pruning step, masks and optimizer step as an
uninterrupted run, and the same final ELBO: within noise with
`keras.callbacks.BackupAndRestore` (which does not save the sampling seed
state), to float rounding with `keras_vae.callbacks.AtomicBackupAndRestore`.
A second kill lands while a checkpoint is being written: the atomic
callback resumes from the previous whole checkpoint. A crash during
quantization-aware training, and one on JAX, resume exactly too. Data is not shuffled,
so the runs see the same batches.
"""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import reliability_log
from backend_runner import run_with_backend

import keras_vae
from keras_vae.callbacks import AtomicBackupAndRestore, KLWarmup
from keras_vae.compression import (
    PolynomialDecay,
    PruningCallback,
    QuantizationAwareTraining,
    is_quantization_aware,
    quantize_aware,
)

MODULE = "interrupted"
# Faults injected (damaged files, failing writers), reported by the module.
FAULTS = []


@pytest.fixture(scope="module", autouse=True)
def report_faults():
    yield
    reliability_log.report(MODULE, faults=len(FAULTS))


class Killer(keras.callbacks.Callback):
    """Announces step `kill_at` by creating `marker`, then waits to be killed."""

    def __init__(self, kill_at=-1, marker=""):
        super().__init__()
        self.kill_at = kill_at
        self.marker = marker

    def on_train_batch_begin(self, batch, logs=None):
        if keras.backend.backend() == "jax":
            self.model.jax_state_sync()
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if step == self.kill_at:
            wait_to_be_killed(self.marker)


class Interrupted(Exception):
    """Stands for a crash inside `fit` (used where no process is killed)."""


def wait_to_be_killed(marker):
    if marker == "raise":
        raise Interrupted()
    open(marker, "w").close()
    # Wait for SIGKILL however long the loaded test process takes to send
    # it; the hour is only a safety net against an orphaned child.
    time.sleep(3600)
    sys.exit("the test did not kill this process")


def train(backup_dir=None, atomic=False, kill_at=-1, kill_in_save=-1,
          marker="", qat=False):
    """Train a small pruned VAE with KL warm-up for 5 epochs of 6 steps.

    Returns its final state. `kill_at` stops at that step and
    `kill_in_save` halfway through writing that checkpoint (atomic
    backup), until the test kills the process; with `marker="raise"` they
    raise `Interrupted` instead. `qat` trains a quantization-aware copy
    with fake quantization switched on from the third epoch.
    """
    keras.utils.set_random_seed(0)
    (x, _), _ = keras_vae.datasets.load("digits")
    x = x[:192]
    model = keras_vae.models.mlp_vae((8, 8, 1), latent_dim=2,
                                     hidden_units=(16,), seed=3)
    if qat:
        model = quantize_aware(model, enabled=False)
    model.compile(optimizer=keras.optimizers.Adam(5e-3))
    warmup = KLWarmup(warmup=20, unit="step")
    pruning = PruningCallback(PolynomialDecay(0.0, 0.5, begin_step=0,
                                              end_step=30, frequency=5))
    callbacks = [warmup, pruning, Killer(kill_at, marker)]
    if qat:
        callbacks.append(QuantizationAwareTraining(start_epoch=2))
    if backup_dir:
        if atomic:
            backup = AtomicBackupAndRestore(str(backup_dir),
                                            delete_checkpoint=False)
            if kill_in_save > 0:
                original = model.save_weights

                def save_weights(path, **kwargs):
                    original(path, **kwargs)
                    if backup._counter == kill_in_save:
                        with open(path, "r+b") as handle:
                            handle.truncate(os.path.getsize(path) // 2)
                        wait_to_be_killed(marker)

                model.save_weights = save_weights
        else:
            backup = keras.callbacks.BackupAndRestore(
                str(backup_dir), delete_checkpoint=False)
        callbacks.insert(0, backup)
    history = model.fit(x, epochs=5, batch_size=32, shuffle=False,
                        verbose=0, callbacks=callbacks)
    if keras.backend.backend() == "jax":
        model.jax_state_sync()
    hook = pruning.hook
    metrics = model.evaluate(x, batch_size=192, verbose=0, return_dict=True)
    return {
        "epochs_run": len(history.history["loss"]),
        "warmup_step": warmup.step,
        "beta": model.beta,
        "iterations": int(keras.ops.convert_to_numpy(
            model.optimizer.iterations)),
        "pruning_step": int(keras.ops.convert_to_numpy(hook.pruning_step)),
        "mask_zeros": [int((keras.ops.convert_to_numpy(m) == 0).sum())
                       for m in hook.masks],
        "train_elbo": float(history.history["elbo"][-1]),
        "test_elbo": float(metrics["elbo"]),
        "weights": model.get_weights(),
        "quantization": bool(is_quantization_aware(model)),
    }


# The killed run: this module's `train` in a fresh process.
CHILD = f"""
import os, sys
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
from test_reliability_interrupted import train
train(os.environ["BACKUP_DIR"], atomic=os.environ.get("ATOMIC") == "1",
      kill_at=int(os.environ.get("KILL_AT", "-1")),
      kill_in_save=int(os.environ.get("KILL_IN_SAVE", "-1")),
      marker=os.environ["MARKER"])
sys.exit("the run was not killed")
"""


def kill_child(tmp_path, **env):
    """Run `train` in a subprocess and SIGKILL it at its kill point."""
    marker = str(tmp_path / f"marker-{time.monotonic_ns()}")
    environment = dict(
        os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3",
        MARKER=marker, **{key: str(value) for key, value in env.items()},
    )
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD], env=environment,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # A safety net against a hung child, not a time limit on the test.
    deadline = time.monotonic() + 1800
    while not os.path.exists(marker):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            _, err = process.communicate()
            raise AssertionError(f"child never reached its kill point:\n{err[-4000:]}")
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def reference():
    """The same training, never interrupted."""
    return train()


def assert_same_schedule_state(resumed, reference):
    assert resumed["warmup_step"] == reference["warmup_step"]
    assert resumed["beta"] == pytest.approx(reference["beta"])
    assert resumed["iterations"] == reference["iterations"]
    assert resumed["pruning_step"] == reference["pruning_step"]
    assert resumed["mask_zeros"] == reference["mask_zeros"]


def test_run_killed_mid_epoch_resumes_with_the_same_schedule_and_elbo(
    tmp_path, reference
):
    backup_dir = tmp_path / "backup"
    # 6 steps per epoch: step 15 is in the middle of the third epoch, before
    # the 20-step warm-up and the 30-step pruning schedule end.
    FAULTS.append("SIGKILL mid-epoch")
    kill_child(tmp_path, BACKUP_DIR=backup_dir, KILL_AT=15)
    assert (backup_dir / "latest.weights.h5").exists()
    resumed = train(backup_dir)
    # Keras resumes at the start of the interrupted epoch (the third).
    assert resumed["epochs_run"] == 3 and reference["epochs_run"] == 5
    assert reference["iterations"] == 30
    assert reference["warmup_step"] == 30 and reference["beta"] == 1.0
    assert reference["pruning_step"] == 30
    assert_same_schedule_state(resumed, reference)
    print(f"\nkilled at step 15, resumed (keras BackupAndRestore): test ELBO "
          f"{resumed['test_elbo']:.4f} vs uninterrupted "
          f"{reference['test_elbo']:.4f}")
    # Keras' callback does not save the sampling seed state, so the resumed
    # epochs draw other noise: equal within that noise only.
    assert resumed["test_elbo"] == pytest.approx(reference["test_elbo"], rel=0.01)


def test_kill_while_writing_a_checkpoint_keeps_the_previous_one(
    tmp_path, reference
):
    backup_dir = tmp_path / "atomic"
    # Checkpoint 3 (end of epoch 3) is cut in half and the process dies.
    FAULTS.append("SIGKILL while writing a checkpoint")
    kill_child(tmp_path, BACKUP_DIR=backup_dir, ATOMIC=1, KILL_IN_SAVE=3)
    names = sorted(os.listdir(backup_dir))
    metadata = json.loads((backup_dir / "training_metadata.json").read_text())
    # The half-written file never took the checkpoint's name.
    assert metadata["weights"] == "ckpt-00000002.weights.h5"
    assert metadata["epoch"] == 2
    assert "ckpt-00000003.weights.h5" not in names
    assert any(name.startswith(".tmp-") for name in names)
    resumed = train(backup_dir, atomic=True)
    assert resumed["epochs_run"] == 3
    assert_same_schedule_state(resumed, reference)
    print(f"\nkilled while writing checkpoint 3, resumed (atomic): test ELBO "
          f"{resumed['test_elbo']:.6f} vs uninterrupted "
          f"{reference['test_elbo']:.6f}")
    # Weights, optimizer, schedules and the seed state all came back: the
    # resumed run is the uninterrupted one, to float rounding.
    assert resumed["test_elbo"] == pytest.approx(reference["test_elbo"], rel=1e-5)
    for a, b in zip(resumed["weights"], reference["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The stale temporary file was removed on restart.
    assert not [n for n in os.listdir(backup_dir) if n.startswith(".tmp-")]


def test_quantization_aware_run_resumes_exactly(tmp_path):
    FAULTS.append("crash mid-epoch during QAT")
    reference = train(qat=True)
    backup_dir = tmp_path / "qat"
    # Step 15 is in the third epoch, the first with fake quantization.
    with pytest.raises(Interrupted):
        train(backup_dir, atomic=True, kill_at=15, marker="raise", qat=True)
    resumed = train(backup_dir, atomic=True, qat=True)
    assert resumed["epochs_run"] == 3
    assert resumed["quantization"] and reference["quantization"]
    assert_same_schedule_state(resumed, reference)
    # Fake-quant ranges and switches are variables: restored exactly.
    for a, b in zip(resumed["weights"], reference["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_interrupted_run_resumes_exactly_on_jax():
    FAULTS.append("crash mid-epoch on JAX")
    output = run_with_backend(
        f"""
        import sys, tempfile
        import numpy as np
        sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
        from test_reliability_interrupted import Interrupted, train

        backup = tempfile.mkdtemp()
        try:
            train(backup, atomic=True, kill_at=15, marker="raise")
            raise SystemExit("not interrupted")
        except Interrupted:
            pass
        resumed, reference = train(backup, atomic=True), train()
        assert resumed["epochs_run"] == 3, resumed["epochs_run"]
        for key in ("warmup_step", "beta", "iterations", "pruning_step",
                    "mask_zeros"):
            assert resumed[key] == reference[key], key
        for a, b in zip(resumed["weights"], reference["weights"]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        print("RESUMED", resumed["test_elbo"], reference["test_elbo"])
        """
    )
    assert "RESUMED" in output


def tiny_model():
    model = keras_vae.models.mlp_vae((8, 8, 1), latent_dim=2,
                                     hidden_units=(8,), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


def test_corrupted_atomic_checkpoint_is_refused_naming_the_file(tmp_path, digits):
    (x, _), _ = digits
    backup_dir = tmp_path / "backup"
    model = tiny_model()
    model.fit(x[:64], epochs=1, batch_size=32, verbose=0,
              callbacks=[AtomicBackupAndRestore(str(backup_dir),
                                                delete_checkpoint=False)])
    metadata = json.loads((backup_dir / "training_metadata.json").read_text())
    checkpoint = backup_dir / metadata["weights"]
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF
    checkpoint.write_bytes(bytes(data))
    FAULTS.extend(["checkpoint byte flipped", "checkpoint metadata garbled"])
    with pytest.raises(ValueError, match="SHA-256") as info:
        tiny_model().fit(
            x[:64], epochs=2, batch_size=32, verbose=0,
            callbacks=[AtomicBackupAndRestore(str(backup_dir))],
        )
    assert str(checkpoint) in str(info.value)
    # Unreadable metadata is refused the same way.
    (backup_dir / "training_metadata.json").write_text("{not json")
    with pytest.raises(ValueError, match="training_metadata.json"):
        tiny_model().fit(
            x[:64], epochs=2, batch_size=32, verbose=0,
            callbacks=[AtomicBackupAndRestore(str(backup_dir))],
        )


def test_atomic_backup_restores_the_sampling_seed_state(tmp_path, digits):
    (x, _), _ = digits
    backup_dir = tmp_path / "backup"
    first = tiny_model()
    first.fit(x[:64], epochs=2, batch_size=32, verbose=0,
              callbacks=[AtomicBackupAndRestore(str(backup_dir),
                                                delete_checkpoint=False)])
    second = tiny_model()
    # epochs=2 with a checkpoint at epoch 2: nothing to train, state loaded.
    second.fit(x[:64], epochs=2, batch_size=32, verbose=0,
               callbacks=[AtomicBackupAndRestore(str(backup_dir))])
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    state = [
        keras.ops.convert_to_numpy(model.seed_generator.state)
        for model in (first, second)
    ]
    np.testing.assert_array_equal(state[0], state[1])
    assert int(keras.ops.convert_to_numpy(second.optimizer.iterations)) == 4
    # The callback deletes its directory after a run that finished.
    assert not backup_dir.exists()


def test_backup_refuses_a_folder_holding_files_it_did_not_write(tmp_path, digits):
    (x, _), _ = digits
    run = tmp_path / "runs" / "exp1"
    run.mkdir(parents=True)
    (run / "model.keras").write_bytes(b"the user's model")
    FAULTS.append("backup_dir holding the user's model.keras")
    with pytest.raises(ValueError, match="did not write") as info:
        tiny_model().fit(x[:64], epochs=1, batch_size=32, verbose=0,
                         callbacks=[AtomicBackupAndRestore(str(run))])
    assert "'model.keras'" in str(info.value)
    assert sorted(os.listdir(run)) == ["model.keras"]
    assert (run / "model.keras").read_bytes() == b"the user's model"


class AddUserFile(keras.callbacks.Callback):
    """Saves a file of the user's into `directory` during training."""

    def __init__(self, directory):
        super().__init__()
        self.directory = directory

    def on_epoch_end(self, epoch, logs=None):
        with open(os.path.join(self.directory, "notes.txt"), "w") as handle:
            handle.write(f"epoch {epoch}")


def test_backup_deletes_only_what_it_wrote(tmp_path, digits):
    (x, _), _ = digits
    # An empty folder it did not create: used, emptied, but kept.
    empty = tmp_path / "empty"
    empty.mkdir()
    tiny_model().fit(x[:64], epochs=2, batch_size=32, verbose=0,
                     callbacks=[AtomicBackupAndRestore(str(empty))])
    assert empty.is_dir() and os.listdir(empty) == []
    # A folder it created, where the user saved a file meanwhile: the
    # checkpoints, metadata and marker go; the user's file and so the
    # folder stay.
    created = tmp_path / "created"
    FAULTS.append("user file saved into the backup folder during fit")
    tiny_model().fit(x[:64], epochs=2, batch_size=32, verbose=0,
                     callbacks=[AtomicBackupAndRestore(str(created)),
                                AddUserFile(str(created))])
    assert sorted(os.listdir(created)) == ["notes.txt"]
    # A folder it marked as its own in an interrupted run is taken again.
    kept = tmp_path / "kept"
    tiny_model().fit(x[:64], epochs=1, batch_size=32, verbose=0,
                     callbacks=[AtomicBackupAndRestore(
                         str(kept), delete_checkpoint=False)])
    assert AtomicBackupAndRestore.MARKER in os.listdir(kept)
    history = tiny_model().fit(
        x[:64], epochs=2, batch_size=32, verbose=0,
        callbacks=[AtomicBackupAndRestore(str(kept))])
    assert len(history.history["loss"]) == 1  # resumed after epoch 1
    assert not kept.exists()


# A limit below this, on a loaded 2-core machine, fails a correct test.
SAFETY_NET_SECONDS = 1800


def _time_limits(tree):
    """(line, what, seconds) of every numeric time limit in a parsed file."""
    import ast

    def number(node):
        if isinstance(node, ast.Constant) and isinstance(
            node.value, (int, float)
        ) and not isinstance(node.value, bool):
            return node.value
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg and (
            "timeout" in node.arg.lower()
        ):
            yield node.value.lineno, f"{node.arg}=", number(node.value)
        elif isinstance(node, ast.keyword) and node.arg == "deadline":
            # hypothesis: a per-example deadline must be switched off.
            value = node.value
            if not (isinstance(value, ast.Constant) and value.value is None):
                yield value.lineno, "deadline=", 0
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args.args + node.args.kwonlyargs
            defaults = ([None] * (len(node.args.args) - len(node.args.defaults))
                        + list(node.args.defaults) + list(node.args.kw_defaults))
            for argument, default in zip(arguments, defaults):
                if "timeout" in argument.arg.lower() and default is not None:
                    yield default.lineno, f"default {argument.arg}", number(default)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and "TIMEOUT" in target.id:
                    yield node.lineno, target.id, number(node.value)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            # `time.monotonic() + N`: a deadline.
            call = node.left
            if (isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr in ("monotonic", "time", "perf_counter")):
                yield node.lineno, f"{call.func.attr}() + N", number(node.right)


def test_time_limits_in_the_tests_are_generous_safety_nets():
    import ast

    directory = os.path.dirname(os.path.abspath(__file__))
    short = []
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(directory, name)) as handle:
            tree = ast.parse(handle.read())
        for line, what, seconds in _time_limits(tree):
            if seconds is not None and seconds < SAFETY_NET_SECONDS:
                short.append(f"{name}:{line} {what}{seconds}")
    # The scan itself can fail: it finds the limits this module sets.
    own = [limit for limit in _time_limits(ast.parse(
        "run(timeout=5)\ndeadline = time.monotonic() + 9\n"))]
    assert sorted(seconds for _, _, seconds in own) == [5, 9]
    assert not short, (
        "time limits a loaded machine can hit; make them safety nets of at "
        f"least {SAFETY_NET_SECONDS} s or remove them: {short}"
    )
