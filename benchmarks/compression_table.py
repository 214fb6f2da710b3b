"""Prune, then QAT, on MNIST-5k: quality, exact zeros, int8 quality.

For each model (MLP VAE 784-512-256, latent 16, pruned to 80%; `conv_vae`
pruned to 50%) it trains `--pretrain` epochs, saves the model with its
optimizer state, and continues twice from that file for `--finetune`
epochs: once plain (the unpruned reference, same total number of epochs)
and once with `PruningCallback(PolynomialDecay(0 -> target))` whose
`end_step` is `--prune-end` of the fine-tuning steps (`--prune-min-size`
leaves smaller kernels dense). It reports the test negative ELBO of both
(one sample per image, the same noise, 1,000 test images), the relative
gap, and the exact zeros of every pruned kernel after `strip_pruning`.

Then QAT: the stripped pruned model gets `quantize_aware`
and `--qat-epochs` epochs at learning rate 1e-4; the int8 `.tflite` of that
model (QAT ranges, no calibration) is compared with post-training int8 of
the same pruned model (calibrated on 500 training images): file
reconstruction NLL on the test set (from `keras_vae.export.verify`), bytes
and gzip bytes, and the kernel zeros after QAT.

    nice -n 10 .venv/bin/python benchmarks/compression_table.py --models mlp

writes `benchmarks/compression_table.md` and `.json`; `--render a.json
b.json` rebuilds the table from the JSON of several runs (the committed
table: the four commands it lists).
"""

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras_vae
from keras_vae import compression
from keras_vae.export import to_tflite, verify

HERE = os.path.dirname(os.path.abspath(__file__))
BATCH = 128


def build(kind, seed):
    if kind == "mlp":
        return keras_vae.models.mlp_vae((28, 28, 1), latent_dim=16,
                                        hidden_units=(512, 256), seed=seed)
    return keras_vae.models.conv_vae((28, 28, 1), latent_dim=16, seed=seed)


def negative_elbo(model, x_test):
    # A fixed seed for the evaluation noise: both models see the same draws.
    terms = model.compute_terms(x_test, seed=1234)
    return float(np.mean(keras.ops.convert_to_numpy(
        terms["reconstruction"] + terms["kl"])))


def run(kind, target, args, x_train, x_test, workdir):
    keras.utils.set_random_seed(args.seed)
    model = build(kind, args.seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    start = time.perf_counter()
    model.fit(x_train, epochs=args.pretrain, batch_size=BATCH, verbose=0)
    path = os.path.join(workdir, f"{kind}_pretrained.keras")
    model.save(path)

    keras.utils.set_random_seed(args.seed + 1)
    dense = keras.saving.load_model(path)
    dense.fit(x_train, epochs=args.finetune, batch_size=BATCH, verbose=0)

    keras.utils.set_random_seed(args.seed + 1)
    pruned = keras.saving.load_model(path)
    steps = args.finetune * -(-len(x_train) // BATCH)
    # The last mask update must fall on `end_step` to reach the target.
    end_step = int(args.prune_end * steps) // args.frequency * args.frequency
    schedule = compression.PolynomialDecay(
        0.0, target, begin_step=0, end_step=end_step,
        frequency=args.frequency)
    # Optionally leave small kernels (the 16-unit latent heads and the
    # decoder's first layer, ~1% of an MLP's weights) dense: cutting a
    # 16-wide bottleneck costs far more than the bytes it saves.
    def large(layer):
        return int(np.prod(layer.kernel.shape)) >= args.prune_min_size

    pruned.fit(x_train, epochs=args.finetune, batch_size=BATCH, verbose=0,
               callbacks=[compression.PruningCallback(schedule, layers=large)])
    stripped = compression.strip_pruning(pruned)
    report = compression.sparsity_report(stripped)
    train_seconds = time.perf_counter() - start

    # Required: at least floor(target * n) of the n weights of every
    # pruned kernel are exactly zero (TF-MOT keeps round(n * (1 - target))).
    chosen = [layer for layer in compression.prunable_layers(stripped).values()
              if large(layer)]
    kernels_ok = all(
        int(np.sum(keras.ops.convert_to_numpy(layer.kernel) == 0))
        >= int(np.floor(target * np.prod(layer.kernel.shape) + 1e-6))
        for layer in chosen
    )
    pruned_names = [layer.name for layer in chosen]
    row = {
        "model": kind,
        "settings": {"pretrain": args.pretrain, "finetune": args.finetune,
                     "prune_end": args.prune_end,
                     "prune_min_size": args.prune_min_size,
                     "qat_epochs": args.qat_epochs,
                     "frequency": args.frequency, "seed": args.seed},
        "kernels_ok": kernels_ok,
        "pruned_layers": pruned_names,
        "target_sparsity": target,
        "epochs": args.pretrain + args.finetune,
        "dense_negative_elbo": negative_elbo(dense, x_test),
        "pruned_negative_elbo": negative_elbo(stripped, x_test),
        "min_kernel_sparsity": min(r["kernel_sparsity"] for r in report.rows
                                   if r["layer"].split("/")[-1] in pruned_names),
        "total_kernel_sparsity": report.sparsity,
        "sparsity_report": report.to_dict(),
        "sparsity_table": report.to_markdown(),
        "train_seconds": train_seconds,
    }
    row["gap_pct"] = 100.0 * (row["pruned_negative_elbo"]
                              / row["dense_negative_elbo"] - 1.0)

    # Post-training int8 of the pruned model vs QAT after pruning.
    calibration = compression.representative_arrays(x_train, 500)
    ptq_path = os.path.join(workdir, f"{kind}_ptq.tflite")
    to_tflite(stripped, ptq_path, representative_data=calibration,
              overwrite=True)
    ptq = verify(ptq_path, stripped, x_test)

    keras.utils.set_random_seed(args.seed + 2)
    qat = compression.quantize_aware(stripped)
    qat.compile(optimizer=keras.optimizers.Adam(1e-4))
    qat.fit(x_train, epochs=args.qat_epochs, batch_size=BATCH, verbose=0)
    qat_report = compression.sparsity_report(compression.strip_pruning(qat))
    qat_path = os.path.join(workdir, f"{kind}_qat.tflite")
    to_tflite(qat, qat_path, overwrite=True)
    qat_verify = verify(qat_path, qat, x_test)
    zeros_kept = all(
        after["zeros"] >= before["zeros"]
        for before, after in zip(report.rows, qat_report.rows)
    )
    row.update({
        "float_pruned_nll": ptq.keras_nll,
        "ptq_int8_nll": ptq.tflite_nll,
        "ptq_int8_bytes": ptq.file.num_bytes,
        "ptq_int8_gzip_bytes": ptq.file.gzip_bytes,
        "qat_keras_nll": qat_verify.keras_nll,
        "qat_int8_nll": qat_verify.tflite_nll,
        "qat_int8_bytes": qat_verify.file.num_bytes,
        "qat_int8_gzip_bytes": qat_verify.file.gzip_bytes,
        "qat_negative_elbo": negative_elbo(qat, x_test),
        "qat_min_kernel_sparsity": min(r["kernel_sparsity"] for r in qat_report.rows
                                       if r["layer"].split("/")[-1] in pruned_names),
        "qat_zeros_kept": zeros_kept,
        "qat_dtype_problems": list(qat_verify.dtype_problems),
        "ptq_dtype_problems": list(ptq.dtype_problems),
    })
    return row


DEFAULTS = {"pretrain": 10, "finetune": 20, "prune_end": 0.4, "qat_epochs": 2,
            "frequency": 10, "seed": 0, "prune_min_size": 0}


def _command(row):
    settings = {**DEFAULTS, **row.get("settings", {})}
    return (
        "nice -n 10 .venv/bin/python benchmarks/compression_table.py "
        f"--models {row['model']} --pretrain {settings['pretrain']} "
        f"--finetune {settings['finetune']} --prune-end "
        f"{settings['prune_end']} --prune-min-size "
        f"{settings['prune_min_size']} --qat-epochs "
        f"{settings['qat_epochs']} --frequency {settings['frequency']} "
        f"--seed {settings['seed']}"
    )


def _label(row):
    size = {**DEFAULTS, **row.get("settings", {})}["prune_min_size"]
    return f"{row['model']} (all kernels)" if not size else (
        f"{row['model']} (kernels >= {size:,} weights)")


def to_markdown(rows):
    lines = [
        "# Compression on MNIST-5k",
        "",
        "Reproduce (TensorFlow backend, CPU), one command per model; "
        "`--models mlp conv` runs both into one table:",
        "",
        "```bash",
        *[_command(row) for row in rows],
        "```",
        "",
        "Pre-training, then fine-tuning from the same saved model "
        "(optimizer state included): plain (reference, same total epochs) "
        "or with `PruningCallback(PolynomialDecay(0 -> target))` whose "
        "`end_step` is `--prune-end` of the fine-tuning steps (rounded down "
        "to the update frequency); the rest of the fine-tuning recovers at "
        "the target sparsity. "
        "Test negative ELBO in nats per image (1,000 "
        "test images, one sample per image with the same noise for both "
        "models). Sparsity counts exact zeros after `strip_pruning`; a "
        "kernel of n weights passes with at least floor(target * n) zeros "
        "(TF-MOT keeps round(n * (1 - target)) weights, so 80% of an odd "
        "count can leave a fraction of one weight more).",
        "",
        "## Pruning: quality and exact zeros",
        "",
        "| model | target | pruned kernels | epochs (pre + fine-tune) | "
        "-ELBO unpruned | -ELBO pruned | gap | min sparsity of pruned "
        "kernels | sparsity of all kernels | pass |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        settings = {**DEFAULTS, **r.get("settings", {})}
        ok = r["gap_pct"] <= 3.0 and r["kernels_ok"]
        lines.append(
            f"| {_label(r)} | {r['target_sparsity']:.0%} | "
            f"{', '.join(r.get('pruned_layers', ['all']))} | "
            f"{settings['pretrain']} + {settings['finetune']} | "
            f"{r['dense_negative_elbo']:.2f} | {r['pruned_negative_elbo']:.2f} | "
            f"{r['gap_pct']:+.2f}% | {r['min_kernel_sparsity']:.4%} | "
            f"{r['total_kernel_sparsity']:.2%} | {'yes' if ok else 'NO'} |"
        )
    lines += [
        "",
        "## QAT after pruning vs post-training int8",
        "",
        "QAT: `quantize_aware(strip_pruning(pruned))`, `--qat-epochs` "
        "epochs at Adam 1e-4, exported with its own ranges. PTQ: the same "
        "pruned model, calibrated on 500 training images. NLL is the "
        "reconstruction negative log-likelihood of the `.tflite` file's "
        "`reconstruct` signature on the test set (nats per image, lower is "
        "better).",
        "",
        "| model | float pruned NLL | PTQ int8 NLL | QAT int8 NLL | QAT <= PTQ "
        "| zeros kept by QAT | min kernel sparsity after QAT | PTQ bytes / "
        "gzip | QAT bytes / gzip |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {_label(r)} | {r['float_pruned_nll']:.2f} | "
            f"{r['ptq_int8_nll']:.2f} | {r['qat_int8_nll']:.2f} | "
            f"{'yes' if r['qat_int8_nll'] <= r['ptq_int8_nll'] else 'NO'} | "
            f"{'yes' if r['qat_zeros_kept'] else 'NO'} | "
            f"{r['qat_min_kernel_sparsity']:.2%} | "
            f"{r['ptq_int8_bytes']:,} / {r['ptq_int8_gzip_bytes']:,} | "
            f"{r['qat_int8_bytes']:,} / {r['qat_int8_gzip_bytes']:,} |"
        )
    for r in rows:
        lines += ["", f"## `sparsity_report` of the pruned {_label(r)}", "",
                  r["sparsity_table"]]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pretrain", type=int, default=10)
    parser.add_argument("--finetune", type=int, default=20)
    parser.add_argument("--prune-end", type=float, default=0.4,
                        help="fraction of the fine-tuning steps after which "
                             "the sparsity stays at its target")
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--prune-min-size", type=int, default=0,
                        help="prune only kernels with at least this many "
                             "weights (0: every Dense/Conv kernel)")
    parser.add_argument("--frequency", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", default=["mlp", "conv"])
    parser.add_argument("--output", default=os.path.join(HERE, "compression_table.md"))
    parser.add_argument("--render", nargs="+", metavar="JSON",
                        help="only write the table from the JSON rows of "
                             "earlier runs (one per model)")
    args = parser.parse_args()
    if args.render:
        rows = []
        for path in args.render:
            with open(path) as handle:
                rows.extend(json.load(handle))
        with open(args.output, "w") as handle:
            handle.write(to_markdown(rows))
        with open(os.path.splitext(args.output)[0] + ".json", "w") as handle:
            json.dump(rows, handle, indent=1)
        print(open(args.output).read())
        return
    (x_train, _), (x_test, _) = keras_vae.datasets.load("mnist5k")
    targets = {"mlp": 0.8, "conv": 0.5}
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for kind in args.models:
            rows.append(run(kind, targets[kind], args, x_train, x_test, workdir))
            print(json.dumps({k: v for k, v in rows[-1].items()
                              if k not in ("sparsity_report", "sparsity_table")}),
                  flush=True)
    with open(args.output, "w") as handle:
        handle.write(to_markdown(rows))
    with open(os.path.splitext(args.output)[0] + ".json", "w") as handle:
        json.dump(rows, handle, indent=1)
    print(open(args.output).read())


if __name__ == "__main__":
    main()
