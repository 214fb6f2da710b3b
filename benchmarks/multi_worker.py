"""Multi-worker training on one machine, with a worker killed and restarted.

Starts a local cluster of worker processes that train one keras-vae model
together (TensorFlow: `MultiWorkerMirroredStrategy` through `TF_CONFIG`;
JAX: `keras.distribution.initialize` and `DataParallel`), every callback
keras-vae ships in use (`AtomicBackupAndRestore`, `KLWarmup`,
`StopOnNonFinite`, `PruningCallback`, quantization-aware training). Only
the chief writes `model.keras` and `report.json`, atomically.

The full check (MNIST-5k, 10 epochs, VAE) runs three trainings and
compares their test ELBO:

- one process, no strategy (the reference);
- two workers;
- two workers, one killed (SIGKILL) in the middle of an epoch once a
  checkpoint exists, then the cluster restarted: it resumes from the
  chief's backup.

Each must end within 1 nat of the reference, and every file the chief
wrote must be whole.

    .venv/bin/python benchmarks/multi_worker.py                # full check
    .venv/bin/python benchmarks/multi_worker.py --epochs 2 --train-size 512

The tests use `run_cluster` with tiny settings.
"""

import argparse
import contextlib
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common

WORKER = os.path.abspath(__file__)


# --------------------------------------------------------------- the launcher
def free_ports(count):
    """`count` TCP ports that were free on localhost a moment ago."""
    sockets = []
    for _ in range(count):
        handle = socket.socket()
        handle.bind(("localhost", 0))
        sockets.append(handle)
    ports = [handle.getsockname()[1] for handle in sockets]
    for handle in sockets:
        handle.close()
    return ports


def cluster_env(backend, ports, index):
    """Environment variables that make process `index` join the cluster."""
    if backend == "tensorflow":
        return {"TF_CONFIG": json.dumps({
            "cluster": {"worker": [f"localhost:{port}" for port in ports]},
            "task": {"type": "worker", "index": index},
        })}
    return {
        "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"localhost:{ports[0]}",
        "KERAS_DISTRIBUTION_NUM_PROCESSES": str(len(ports)),
        "KERAS_DISTRIBUTION_PROCESS_ID": str(index),
    }


def _start(backend, options, workers, log_dir, attempt, kill_at_epoch=None):
    ports = free_ports(max(workers, 1))
    processes = []
    for index in range(max(workers, 1)):
        env = _common.child_env(backend)
        if workers:
            env.update(cluster_env(backend, ports, index))
        extra = []
        if kill_at_epoch is not None and index == workers - 1:
            extra = ["--kill-at-epoch", str(kill_at_epoch)]
        log = open(os.path.join(log_dir, f"worker{index}-{attempt}.log"), "w")
        processes.append(subprocess.Popen(
            [sys.executable, WORKER, "--child", *options, *extra],
            stdout=log, stderr=subprocess.STDOUT, env=env,
            cwd=_common.REPO_DIR,
        ))
        log.close()
    return processes


def _wait(processes, timeout):
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return [process.returncode for process in processes]


def _checkpoint_epoch(out_dir):
    try:
        with open(os.path.join(out_dir, "backup",
                               "training_metadata.json")) as handle:
            return int(json.load(handle)["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def _tail(path, lines=40):
    try:
        with open(path) as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return ""


def run_cluster(out_dir, workers=2, backend="tensorflow", epochs=10,
                train_size=None, model="vae", batch_size=128, seed=0,
                hidden_units=(256, 128), kill_at_epoch=None, timeout=1800):
    """Train with `workers` local processes (0: one plain process).

    Args:
        out_dir: str. Folder of the run (model, report, backup, logs).
        workers: int. Cluster size; 0 trains in one process without a
            strategy.
        backend: str. `"tensorflow"` or `"jax"`.
        epochs, train_size, model, batch_size, seed, hidden_units: the
            training (an MLP VAE or CVAE with 16 latent dimensions).
        kill_at_epoch: int or None. The last worker is killed (SIGKILL)
            at the second batch of this epoch (0-based), after the chief
            committed the checkpoints of the epochs before; the others are
            stopped and the whole cluster is started again. It must resume
            from the chief's backup.
        timeout: float. Seconds for each start of the cluster.

    Returns:
        dict: the chief's report, plus `restarts`, `wall_seconds`,
        `worker_elbos` (every worker's test ELBO) and `files_ok`.
    """
    os.makedirs(out_dir, exist_ok=True)
    log_dir = os.path.join(out_dir, "logs")
    os.makedirs(log_dir, exist_ok=True)
    options = ["--out", out_dir, "--epochs", str(epochs), "--model", model,
               "--batch-size", str(batch_size), "--seed", str(seed),
               "--hidden", *[str(units) for units in hidden_units]]
    if train_size:
        options += ["--train-size", str(train_size)]
    started = time.monotonic()
    restarts, killed_code = 0, None
    if kill_at_epoch is not None and workers > 1:
        # The last worker kills itself (SIGKILL) in the middle of epoch
        # `kill_at_epoch`; the others cannot finish a step without it. As a
        # cluster manager would, stop them and start the cluster again.
        processes = _start(backend, options, workers, log_dir, 0,
                           kill_at_epoch)
        killed_code = processes[-1].wait(timeout=timeout)
        _wait(processes, 10)
        restarts = 1
    processes = _start(backend, options, workers, log_dir, restarts)
    codes = _wait(processes, timeout)
    if any(code != 0 for code in codes):
        raise RuntimeError(
            f"workers exited with {codes}; last log lines:\n" + "\n".join(
                _tail(os.path.join(log_dir, f"worker{i}-{restarts}.log"))
                for i in range(len(codes))))
    with open(os.path.join(out_dir, "report.json")) as handle:
        report = json.load(handle)
    elbos = []
    for index in range(len(codes)):
        with open(os.path.join(log_dir, f"worker{index}-{restarts}.log")) as log:
            results = [json.loads(line) for line in log
                       if line.startswith('{"worker_result"')]
        elbos.append(results[-1]["worker_result"]["test_elbo"])
    report.update(restarts=restarts, killed_exit_code=killed_code,
                  worker_elbos=elbos,
                  wall_seconds=round(time.monotonic() - started, 1),
                  files_ok=files_whole(out_dir))
    return report


def files_whole(out_dir):
    """True when the run's files are whole and no temporary is left over."""
    from keras_vae import files

    files.check_keras_file(os.path.join(out_dir, "model.keras"))
    with open(os.path.join(out_dir, "report.json")) as handle:
        json.load(handle)
    leftovers = glob.glob(os.path.join(out_dir, ".tmp-*")) + glob.glob(
        os.path.join(out_dir, "backup", "*"))
    return not leftovers


# ----------------------------------------------------------------- a worker
def _kill_callback(epoch):
    import keras

    def maybe_kill(batch, logs=None):
        if state["epoch"] == epoch and batch == 1:
            os.kill(os.getpid(), signal.SIGKILL)

    state = {"epoch": -1}
    return keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda e, logs=None: state.update(epoch=e),
        on_train_batch_begin=maybe_kill)


def _callbacks(out_dir, epochs, kill_at_epoch=None):
    from keras_vae import callbacks, compression

    extra = [] if kill_at_epoch is None else [_kill_callback(kill_at_epoch)]
    return extra + [
        callbacks.AtomicBackupAndRestore(os.path.join(out_dir, "backup")),
        callbacks.KLWarmup(warmup=max(epochs // 2, 1), unit="epoch"),
        callbacks.StopOnNonFinite(),
        compression.PruningCallback(
            compression.ConstantSparsity(0.3, begin_step=0, frequency=50)),
        compression.QuantizationAwareTraining(start_epoch=epochs - 1),
    ]


def _worker(args):
    import keras
    import numpy as np

    import keras_vae
    from keras_vae import compression, distribute, files

    keras.utils.set_random_seed(args.seed)
    distribution = None
    if "TF_CONFIG" in os.environ:
        distribution = distribute.get_distribution("multi-worker")
    elif "KERAS_DISTRIBUTION_NUM_PROCESSES" in os.environ:
        distribution = distribute.get_distribution("multi-worker")
    (x_train, y_train), (x_test, y_test) = keras_vae.datasets.load("mnist5k")
    if args.train_size:
        x_train, y_train = x_train[:args.train_size], y_train[:args.train_size]
    train_size = len(x_train)
    chief = distribute.is_chief()
    conditional = args.model == "cvae"
    scope = (distribution.scope() if distribution is not None
             else contextlib.nullcontext())
    with scope:
        replicas = distribute.num_replicas()
        # Several JAX processes each feed their share of the global batch.
        x_train, y_train, batch_size = distribute.process_data(
            x_train, args.batch_size, y_train)
        builder = (keras_vae.models.mlp_cvae if conditional
                   else keras_vae.models.mlp_vae)
        extra = {"num_classes": 10} if conditional else {}
        model = builder(x_train.shape[1:], latent_dim=16,
                        hidden_units=tuple(args.hidden), seed=args.seed,
                        **extra)
        model = compression.quantize_aware(model, enabled=False)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        fit_data = (x_train, y_train) if conditional else (x_train,)
        start = time.perf_counter()
        history = model.fit(*fit_data, batch_size=batch_size,
                            epochs=args.epochs, verbose=2 if chief else 0,
                            callbacks=_callbacks(args.out, args.epochs,
                                                 args.kill_at_epoch))
        seconds = time.perf_counter() - start
        test_data = (x_test, y_test) if conditional else (x_test,)
        test = model.evaluate(*test_data, batch_size=500, verbose=0,
                              return_dict=True)
    result = {"test_elbo": float(test["elbo"]), "chief": chief,
              "weights_sum": float(sum(np.abs(w).sum()
                                       for w in model.get_weights()))}
    print(json.dumps({"worker_result": result}), flush=True)
    distribute.save_model(model, os.path.join(args.out, "model.keras"),
                          overwrite=True)
    if chief:
        report = {
            "backend": keras.backend.backend(),
            "replicas": replicas,
            "model": args.model, "epochs": args.epochs,
            "batch_size": args.batch_size, "train_size": train_size,
            "test_elbo": float(test["elbo"]),
            "train_elbo": float(history.history["elbo"][-1]),
            "epochs_run_last_start": len(history.history["elbo"]),
            "train_seconds": round(seconds, 2),
            "images_per_second": round(
                train_size * len(history.history["elbo"]) / seconds, 1),
        }
        files.write_json(os.path.join(args.out, "report.json"), report,
                         overwrite=True)


# ---------------------------------------------------------------- the check
def full_check(out_dir, backend="tensorflow", epochs=10, train_size=None,
               log=print):
    """Reference, 2 workers, 2 workers with a kill: test ELBOs side by side."""
    import shutil

    results = {}
    for name, workers, kill in (("one_process", 0, None),
                                ("two_workers", 2, None),
                                ("two_workers_killed", 2, max(epochs // 2, 1))):
        run_dir = os.path.join(out_dir, name)
        shutil.rmtree(run_dir, ignore_errors=True)
        results[name] = run_cluster(run_dir, workers, backend, epochs,
                                    train_size, kill_at_epoch=kill)
        log(f"  {name}: test ELBO {results[name]['test_elbo']:.2f}, "
            f"restarts {results[name]['restarts']}, "
            f"{results[name]['wall_seconds']} s, files ok "
            f"{results[name]['files_ok']}")
    reference = results["one_process"]["test_elbo"]
    for name in ("two_workers", "two_workers_killed"):
        results[name]["gap_nats"] = abs(results[name]["test_elbo"] - reference)
        results[name]["within_1_nat"] = results[name]["gap_nats"] <= 1.0
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", action="store_true",
                        help="run one worker (used by the launcher)")
    parser.add_argument("--out", default=os.path.join(
        _common.REPO_DIR, "runs", "multi_worker"))
    parser.add_argument("--backend", default="tensorflow",
                        choices=["tensorflow", "jax"])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--model", default="vae", choices=["vae", "cvae"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--kill-at-epoch", type=int, default=None,
                        help="worker only: kill this process in that epoch")
    args = parser.parse_args(argv)
    if args.child:
        _worker(args)
        return
    results = full_check(args.out, args.backend, args.epochs, args.train_size)
    with open(os.path.join(args.out, "multi_worker.json"), "w") as handle:
        json.dump(results, handle, indent=1)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
