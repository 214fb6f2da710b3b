"""How keras-vae training time grows with data set size and batch size.

keras-vae's default `fit` (TensorFlow backend, MLP 784-512-256-16, Adam
1e-3), each run a fresh process:

- data set size: 1k, 2k and 4k MNIST-5k training images, and a synthetic
  60k set (MNIST-5k tiled with pixel noise), batch 128;
- batch size: 32, 64, 128, 256 and 512 on the 4k images.

Reports seconds per epoch (after the first), samples per second, the first
epoch's extra (compilation) time and whether `fit` chose XLA, and draws
`benchmarks/scaling.png`.

    .venv/bin/python benchmarks/scaling.py --epochs 3
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common
import train_speed

SIZES = (1000, 2000, 4000, 60000)
BATCH_SIZES = (32, 64, 128, 256, 512)


def _row(record, **extra):
    row = {key: record[key] for key in (
        "seconds_per_epoch", "samples_per_second",
        "first_epoch_extra_seconds", "jit_compile", "steps_per_execution")}
    row.update(extra)
    return row


def benchmark(epochs=3, sizes=SIZES, batch_sizes=BATCH_SIZES, log=print):
    """Run every setting once; returns the two series."""
    result = {"epochs": epochs, "dataset_size": [], "batch_size": []}
    for size in sizes:
        dataset = "synthetic" if size > 4000 else "mnist5k"
        record = train_speed.run_candidate_in_child(
            "keras_vae", epochs, train_size=size, dataset=dataset)
        result["dataset_size"].append(_row(record, train_size=size,
                                           dataset=dataset, batch_size=128))
        log(f"  scaling n={size:6d}: {record['seconds_per_epoch']:.2f} s/epoch"
            f", {record['samples_per_second']:.0f} samples/s, "
            f"XLA={record['jit_compile']}")
    for batch_size in batch_sizes:
        record = train_speed.run_candidate_in_child(
            "keras_vae", epochs, train_size=4000, batch_size=batch_size)
        result["batch_size"].append(_row(record, train_size=4000,
                                         batch_size=batch_size))
        log(f"  scaling batch={batch_size:4d}: "
            f"{record['samples_per_second']:.0f} samples/s, "
            f"XLA={record['jit_compile']}")
    return result


def plot(result, path):
    """Two panels: seconds per epoch against n, samples/s against batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    sizes = [row["train_size"] for row in result["dataset_size"]]
    seconds = [row["seconds_per_epoch"] for row in result["dataset_size"]]
    left.loglog(sizes, seconds, "o-", label="keras-vae fit")
    if sizes:
        per_example = seconds[0] / sizes[0]
        left.loglog(sizes, [per_example * n for n in sizes], "--",
                    color="grey", label="linear in n")
    left.set_xlabel("training images")
    left.set_ylabel("seconds per epoch")
    left.set_title("Epoch time vs data set size (batch 128)")
    left.legend()
    batches = [row["batch_size"] for row in result["batch_size"]]
    speed = [row["samples_per_second"] for row in result["batch_size"]]
    right.semilogx(batches, speed, "o-", base=2)
    right.set_xlabel("batch size")
    right.set_ylabel("training images per second")
    right.set_title("Throughput vs batch size (4k images)")
    for axis in (left, right):
        axis.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(_common.BENCH_DIR,
                                                      "scaling.png"))
    args = parser.parse_args(argv)
    result = benchmark(args.epochs)
    plot(result, args.out)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
