"""`keras-vae` command line.

    keras-vae demo                      # MLP VAE on MNIST-5k, 30 epochs
    keras-vae train --model conv --epochs 10 --output-dir runs/conv
"""

import argparse
import json
import sys


def _parser():
    parser = argparse.ArgumentParser(prog="keras-vae", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="train an MLP VAE on MNIST-5k and plot it")
    demo.add_argument("--epochs", type=int, default=30)
    demo.add_argument("--output-dir", default="runs/demo")
    train = commands.add_parser("train", help="train a VAE and write a run report")
    train.add_argument("--dataset", default="mnist5k")
    train.add_argument("--data-dir", default=None)
    train.add_argument("--model", default="mlp", choices=["mlp", "conv"])
    train.add_argument("--latent-dim", type=int, default=16)
    train.add_argument("--epochs", type=int, default=30)
    train.add_argument("--batch-size", type=int, default=128)
    train.add_argument("--learning-rate", type=float, default=1e-3)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--output-dir", default="runs/train")
    for sub in (demo, train):
        sub.add_argument("--overwrite", action="store_true",
                         help="replace an existing model.keras in the output directory")
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    from keras_vae.training import train_and_report

    options = vars(args).copy()
    command = options.pop("command")
    if command == "demo":
        options.update(dataset="mnist5k", model="mlp")
    try:
        report = train_and_report(**options)
    except (ValueError, FileExistsError) as error:
        print(f"keras-vae: error: {error}", file=sys.stderr)
        return 2
    test = report["test"]
    print(
        f"\nTest ({report['dataset']}, {report['model']}, {report['backend']}): "
        f"elbo={test['elbo']:.2f} nats/example (negative ELBO "
        f"{report['negative_elbo']:.2f}), reconstruction_loss="
        f"{test['reconstruction_loss']:.2f}, kl_loss={test['kl_loss']:.2f}"
    )
    print(json.dumps(report["files"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
