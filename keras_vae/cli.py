"""`keras-vae` command line.

    keras-vae demo                      # MLP VAE on MNIST-5k, 30 epochs
    keras-vae train --model conv --epochs 10 --output-dir runs/conv
    keras-vae compress model.keras images.npy images.kvz --mode lossless
    keras-vae decompress model.keras images.kvz restored.npy
    keras-vae distill --teacher-epochs 30 --epochs 30 --output-dir runs/distill
    keras-vae search --max-trials 30 --max-minutes 30 --output-dir runs/search

Every subcommand is two functions and one registry line:

- `_add_<name>(commands)` adds its parser to the `argparse` subparsers and
  returns it (use the `positive_int`, `positive_float` and `finite_float`
  argument types below, so bad values fail before any work starts);
- `_run_<name>(args)` does the work and returns the exit status (0 on
  success);
- `COMMANDS` maps the name to `Command(add_parser, run)`.

A run function reports a user error by raising `ValueError`,
`FileExistsError`, `FileNotFoundError`, `PermissionError`, `ImportError`
or `CLIError`: `main` prints `keras-vae: error: <message>` and exits 2,
never a traceback.
"""

import argparse
import collections
import json
import math
import sys


class CLIError(Exception):
    """A user error that `main` prints as `keras-vae: error: ...` (exit 2)."""


# Errors a user can fix by changing the command or the files; printed, not
# raised. Anything else is a bug and keeps its traceback.
USER_ERRORS = (CLIError, ValueError, FileExistsError, FileNotFoundError,
               NotADirectoryError, IsADirectoryError, PermissionError,
               ImportError)


class _Parser(argparse.ArgumentParser):
    """`argparse` parser whose errors read `keras-vae: error: ...` (exit 2)."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(2, f"keras-vae: error: {message}\n")


def positive_int(text):
    """`argparse` type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer >= 1, received {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"expected an integer >= 1, received {text!r}")
    return value


def finite_float(text):
    """`argparse` type: a finite float (no nan or inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number, received {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(
            f"expected a finite number, received {text!r}")
    return value


def positive_float(text):
    """`argparse` type: a finite float > 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(
            f"expected a number > 0, received {text!r}")
    return value


Command = collections.namedtuple("Command", ["add_parser", "run"])


# --- demo -------------------------------------------------------------------

def _add_demo(commands):
    demo = commands.add_parser(
        "demo", help="train an MLP VAE on MNIST-5k and plot it")
    demo.add_argument("--epochs", type=positive_int, default=30)
    demo.add_argument("--output-dir", default="runs/demo")
    demo.add_argument("--overwrite", action="store_true",
                      help="replace the files of an earlier run in the "
                           "output directory")
    return demo


def _run_demo(args):
    return _train_and_print(dict(
        dataset="mnist5k", model="mlp", epochs=args.epochs,
        output_dir=args.output_dir, overwrite=args.overwrite))


# --- train ------------------------------------------------------------------

def _add_train(commands):
    train = commands.add_parser(
        "train", help="train a VAE and write a run report")
    train.add_argument("--dataset", default="mnist5k")
    train.add_argument("--data-dir", default=None)
    train.add_argument("--model", default="mlp", choices=["mlp", "conv"])
    train.add_argument("--latent-dim", type=positive_int, default=16)
    train.add_argument("--epochs", type=positive_int, default=30)
    train.add_argument("--batch-size", type=positive_int, default=128)
    train.add_argument("--learning-rate", type=positive_float, default=1e-3)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--output-dir", default="runs/train")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the files of an earlier run in the "
                            "output directory")
    train.add_argument(
        "--distribute", default=None,
        choices=("mirrored", "multi-worker", "data-parallel"),
        help="train on several devices or processes: mirrored "
             "(TensorFlow, the GPUs or logical CPUs of this machine), "
             "multi-worker (TensorFlow: one process per worker, TF_CONFIG; "
             "JAX: KERAS_DISTRIBUTION_* variables), data-parallel (JAX, "
             "the devices of this process); --batch-size is the global "
             "batch. See the README's distributed training guide")
    return train


def _run_train(args):
    options = vars(args).copy()
    for name in ("command", "handler"):
        options.pop(name, None)
    return _train_and_print(options)


def _train_and_print(options):
    from keras_vae.datasets import DatasetUnavailableError
    from keras_vae.training import train_and_report

    try:
        # Checks every option and the output folder before training; a NaN
        # stops the run (`StopOnNonFinite`) with a `ValueError`.
        report = train_and_report(**options)
    except DatasetUnavailableError as error:
        raise CLIError(str(error)) from None
    test = report["test"]
    print(
        f"\nTest ({report['dataset']}, {report['model']}, {report['backend']}): "
        f"elbo={test['elbo']:.2f} nats/example (negative ELBO "
        f"{report['negative_elbo']:.2f}), reconstruction_loss="
        f"{test['reconstruction_loss']:.2f}, kl_loss={test['kl_loss']:.2f}"
    )
    print(json.dumps(report["files"], indent=2))
    return 0


# --- compress / decompress ------------------------------------------------

def _add_compress(commands):
    compress = commands.add_parser(
        "compress", help="compress images (.npy) with a VAE into a .kvz stream")
    compress.add_argument("model", help="the VAE, a .keras file")
    compress.add_argument("input", help="images, a .npy array (n, ...): "
                          "binary for a Bernoulli model, uint8 for a "
                          "DiscretizedLogistic one")
    compress.add_argument("output", help="the stream to write (.kvz)")
    compress.add_argument("--mode", choices=("lossless", "lossy"),
                          default="lossless")
    compress.add_argument("--batch-size", type=positive_int, default=128,
                          help="images per network call")
    compress.add_argument("--precision", type=positive_int, default=10,
                          help="lossless: 2**precision latent buckets")
    compress.add_argument("--step", type=positive_float, default=0.25,
                          help="lossy: grid step of the latent codes")
    compress.add_argument("--entropy-model", choices=("adaptive", "prior"),
                          default="adaptive", help="lossy: entropy model")
    compress.add_argument("--pixel-step", type=positive_int, default=None,
                          help="lossy, 8-bit models: also code each pixel "
                          "to within half this grid step (a divisor of 255)")
    compress.add_argument("--overwrite", action="store_true",
                          help="replace an existing output file")
    return compress


def _run_compress(args):
    import numpy as np

    from keras_vae import codec, files

    files.check_writable_destination(args.output, args.overwrite)
    model = _load_codec_model(args.model)
    x = np.load(args.input, allow_pickle=False)
    data = codec.compress(model, x, mode=args.mode, batch_size=args.batch_size,
                          precision=args.precision, step=args.step,
                          entropy_model=args.entropy_model,
                          pixel_step=args.pixel_step)
    files.write_bytes(args.output, data, overwrite=args.overwrite)
    bits = 8.0 * len(data) / max(1, x.size)
    print(f"wrote {args.output}: {len(x)} images in {len(data)} bytes "
          f"({bits:.4f} bits per dimension, {args.mode})")
    return 0


def _add_decompress(commands):
    decompress = commands.add_parser(
        "decompress", help="decode a .kvz stream back into a .npy array")
    decompress.add_argument("model", help="the VAE that compressed it (.keras)")
    decompress.add_argument("input", help="the stream (.kvz)")
    decompress.add_argument("output", help="the .npy file to write")
    decompress.add_argument("--overwrite", action="store_true",
                            help="replace an existing output file")
    return decompress


def _run_decompress(args):
    import io

    import numpy as np

    from keras_vae import codec, files

    files.check_writable_destination(args.output, args.overwrite)
    if not args.output.endswith(".npy"):
        raise CLIError(f"Expected the output to end in .npy. Received: "
                       f"{args.output}")
    model = _load_codec_model(args.model)
    with open(args.input, "rb") as handle:
        x = codec.decompress(model, handle.read())
    buffer = io.BytesIO()
    np.save(buffer, x, allow_pickle=False)
    files.write_bytes(args.output, buffer.getvalue(), overwrite=args.overwrite)
    print(f"wrote {args.output}: shape {x.shape}, dtype {x.dtype}")
    return 0


def _load_codec_model(path):
    if str(path).endswith(".tflite"):
        raise CLIError(
            "keras-vae compress/decompress take a .keras model; run a .tflite "
            "file with the TensorFlow-free runtime: `python "
            f"export/litert_vae.py {path} compress --input x.npy --out "
            "x.kvz`. Received: " + str(path))
    from keras_vae import files

    return files.load_model(path, compile=False)


# --- distill / search -------------------------------------------------------

def _add_distill(commands):
    distill = commands.add_parser(
        "distill", help="distil a small MLP student from a teacher VAE and "
                        "compare it with the same student trained alone")
    distill.add_argument("--dataset", default="mnist5k")
    distill.add_argument("--data-dir", default=None)
    distill.add_argument("--teacher", default=None,
                         help="a teacher .keras file (default: train one)")
    distill.add_argument("--teacher-model", default="mlp",
                         choices=["mlp", "conv"])
    distill.add_argument("--teacher-epochs", type=positive_int, default=30)
    distill.add_argument("--student-hidden", type=positive_int, nargs="+",
                         default=[48], help="the student's hidden widths")
    distill.add_argument("--epochs", type=positive_int, default=30)
    distill.add_argument("--batch-size", type=positive_int, default=128)
    distill.add_argument("--learning-rate", type=positive_float, default=1e-3)
    distill.add_argument("--posterior-weight", type=finite_float, default=1.0)
    distill.add_argument("--output-weight", type=finite_float, default=1.0)
    distill.add_argument("--generated-fraction", type=finite_float,
                         default=0.0)
    distill.add_argument("--no-scratch", action="store_true",
                         help="skip the from-scratch comparison")
    distill.add_argument("--kid-samples", type=positive_int, default=1000,
                         help="samples per model scored by KID")
    distill.add_argument("--seed", type=int, default=0)
    distill.add_argument("--output-dir", default="runs/distill")
    distill.add_argument("--overwrite", action="store_true",
                         help="replace the files of an earlier run")
    return distill


def _run_distill(args):
    from keras_vae.compression.distillation import distill_and_report

    report = distill_and_report(
        dataset=args.dataset, teacher=args.teacher,
        teacher_model=args.teacher_model, teacher_epochs=args.teacher_epochs,
        student_hidden_units=tuple(args.student_hidden), epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.learning_rate,
        posterior_weight=args.posterior_weight,
        output_weight=args.output_weight,
        generated_fraction=args.generated_fraction,
        compare_scratch=not args.no_scratch, num_samples=args.kid_samples,
        seed=args.seed,
        output_dir=args.output_dir, overwrite=args.overwrite,
        data_dir=args.data_dir)
    for name, row in report["models"].items():
        print(f"{name}: {row['params']:,} parameters, test negative ELBO "
              f"{row['negative_elbo']:.2f}")
    print(json.dumps(report["files"], indent=2))
    return 0


def _add_search(commands):
    search = commands.add_parser(
        "search", help="search VAE architectures for quality against size "
                       "and int8 latency (KerasTuner; resumable)")
    search.add_argument("--dataset", default="mnist5k")
    search.add_argument("--data-dir", default=None)
    search.add_argument("--kinds", nargs="+", default=["mlp"],
                        choices=["mlp", "conv"])
    search.add_argument("--max-trials", type=positive_int, default=30)
    search.add_argument("--max-minutes", type=positive_float, default=30.0)
    search.add_argument("--epochs", type=positive_int, default=30)
    search.add_argument("--batch-size", type=positive_int, default=128)
    search.add_argument("--learning-rates", type=positive_float, nargs="+",
                        default=[1e-3],
                        help="Adam learning rates to try (several: searched)")
    search.add_argument("--quality", default="elbo", choices=["elbo", "iwae"])
    search.add_argument("--teacher", default=None,
                        help="distil every candidate from this .keras file")
    search.add_argument("--no-default", action="store_true",
                        help="do not measure the default mlp_vae")
    search.add_argument("--seed", type=int, default=0)
    search.add_argument("--output-dir", default="runs/search")
    search.add_argument("--overwrite", action="store_true",
                        help="start the search over (default: resume)")
    return search


def _run_search(args):
    from keras_vae.search import search_and_report

    report = search_and_report(
        dataset=args.dataset, kinds=tuple(args.kinds),
        max_trials=args.max_trials, max_minutes=args.max_minutes,
        epochs=args.epochs, batch_size=args.batch_size,
        learning_rates=tuple(args.learning_rates),
        teacher=args.teacher, quality=args.quality,
        compare_default=not args.no_default, seed=args.seed,
        output_dir=args.output_dir, overwrite=args.overwrite,
        data_dir=args.data_dir)
    print(f"{len(report['trials'])} trials, Pareto front: "
          f"{', '.join(report['front'])}")
    if "dominating_default" in report:
        print("trials dominating the default mlp_vae: "
              f"{', '.join(report['dominating_default']) or 'none'}")
    print(json.dumps(report["files"], indent=2))
    return 0


# --- registry ---------------------------------------------------------------

COMMANDS = {
    "demo": Command(_add_demo, _run_demo),
    "train": Command(_add_train, _run_train),
    "compress": Command(_add_compress, _run_compress),
    "decompress": Command(_add_decompress, _run_decompress),
    "distill": Command(_add_distill, _run_distill),
    "search": Command(_add_search, _run_search),
}


def build_parser():
    """The `keras-vae` argument parser, one subparser per entry of `COMMANDS`."""
    parser = _Parser(prog="keras-vae", description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        command.add_parser(commands).set_defaults(handler=command.run)
    return parser


def main(argv=None):
    """Run `keras-vae` with `argv` (default `sys.argv[1:]`); return the exit status.

    Args:
        argv: list of str or None. The arguments after the program name.

    Returns:
        int. 0 on success, 2 on a user error (the message is printed to
        stderr as `keras-vae: error: ...`).

    Example:

    >>> from keras_vae import cli
    >>> # cli.main(["train", "--dataset", "digits", "--epochs", "2"])
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse: --help (0) or a bad argument (2)
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        return args.handler(args)
    except USER_ERRORS as error:
        print(f"keras-vae: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
