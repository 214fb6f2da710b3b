"""Test ELBO of the MLP VAE on MNIST-5k, 30 epochs, TF and JAX.

MLP 784-512-256, latent 16, Bernoulli, Adam 1e-3, batch 128. Trains one
model per seed on each backend (each backend in its own process) and writes
`benchmarks/foundation_elbo.md` with the test negative ELBO per seed and
the mean.

    .venv/bin/python benchmarks/foundation_elbo.py --seeds 0 1 2
"""

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time, keras, keras_vae
seeds, epochs = json.loads(sys.argv[1]), int(sys.argv[2])
(x_train, _), (x_test, _) = keras_vae.datasets.load("mnist5k")
rows = []
for seed in seeds:
    keras.utils.set_random_seed(seed)
    model = keras_vae.models.mlp_vae((28, 28, 1), latent_dim=16,
                                     hidden_units=(512, 256), seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    start = time.perf_counter()
    model.fit(x_train, epochs=epochs, batch_size=128, verbose=0)
    seconds = time.perf_counter() - start
    test = model.evaluate(x_test, batch_size=1000, verbose=0, return_dict=True)
    rows.append({"seed": seed, "negative_elbo": -test["elbo"],
                 "train_seconds": seconds})
print(json.dumps(rows))
"""


def run_backend(backend, seeds, epochs):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(seeds), str(epochs)],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "foundation_elbo.md"))
    args = parser.parse_args()
    lines = [
        "| backend | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean |",
        "|---" * (len(args.seeds) + 2) + "|",
    ]
    for backend in ("tensorflow", "jax"):
        rows = run_backend(backend, args.seeds, args.epochs)
        values = [row["negative_elbo"] for row in rows]
        mean = sum(values) / len(values)
        lines.append(f"| {backend} | " + " | ".join(f"{v:.1f}" for v in values)
                     + f" | **{mean:.1f}** |")
        print(backend, json.dumps(rows), flush=True)
    table = "\n".join(lines)
    header = (f"Test negative ELBO (nats per image, lower is better) of the MLP "
              f"VAE on MNIST-5k after {args.epochs} epochs; one-sample ELBO "
              f"on the 1,000 test images.\n\n")
    with open(args.output, "w") as handle:
        handle.write(header + table + "\n")
    print(table)


if __name__ == "__main__":
    main()
