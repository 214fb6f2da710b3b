"""Architecture search on MNIST-5k: what beats the default `mlp_vae`?

Runs `keras_vae.search.search` over MLP VAEs (depth 1-2, widths 32-1024,
latent 8-32; every candidate trained 30 epochs, scored on the 1,000 test
digits) with a budget of 30 trials or 30 minutes, whichever comes first,
and measures the default `mlp_vae` (784-512-256-16) the same way. A trial
dominates the default when its test negative ELBO is no worse and it has
fewer parameters and a lower LiteRT int8 latency at batch 1. The
latencies of the default and of every dominating trial are then timed
again side by side (alternating rounds, median), so the comparison does
not hinge on when each trial ran.

    .venv/bin/python benchmarks/search_table.py            # full (~35 min)
    .venv/bin/python benchmarks/search_table.py --quick --out-dir /tmp/s
    .venv/bin/python benchmarks/search_table.py --render benchmarks/search_table.json

writes `search_table.md`, `search_table.json` and `search_pareto.png` to
`--out-dir` (default `benchmarks/`), the KerasTuner project to
`runs/search_table/` (a rerun resumes it; `--overwrite` starts over)
and, for full runs, the table between the `search_table` markers of
README.md.
"""

import argparse
import datetime
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

import _common

import keras_vae
from keras_vae import search

README_MARKERS = ("<!-- search_table:start -->", "<!-- search_table:end -->")
# The KerasTuner project (models, .tflite files, trial records): resumable,
# not committed (runs/ is git-ignored).
RUNS = os.path.join(REPO, "runs", "search_table")
OBJECTIVES = ("negative_elbo", "params", "latency_us")

FULL = {
    "max_trials": 30, "max_minutes": 30.0, "epochs": 30, "seed": 0,
    "latent_dims": (8, 16, 32), "mlp_depths": (1, 2),
    "mlp_widths": (32, 64, 128, 256, 512, 1024), "latency_runs": 500,
    "confirm_rounds": 5,
}
QUICK = dict(FULL, max_trials=2, max_minutes=5.0, epochs=1,
             latent_dims=(8,), mlp_depths=(1,), mlp_widths=(32, 64),
             latency_runs=50, confirm_rounds=1)


def _confirm_latencies(records, rounds, runs):
    """Median batch-1 latency of each file over alternating rounds."""
    times = {r["trial_id"]: [] for r in records}
    for _ in range(rounds):
        for record in records:
            times[record["trial_id"]].append(search.litert_latency(
                record["tflite_path"], runs=runs)["latency_us"])
    return {key: float(np.median(value)) for key, value in times.items()}


def run(quick=False, out_dir=HERE, overwrite=False, log=print):
    settings = QUICK if quick else FULL
    (x_train, _), (x_test, _) = keras_vae.datasets.load("mnist5k")
    directory = RUNS
    project = "quick" if quick else "mnist5k_mlp"
    space = search.VAEHyperModel(
        (28, 28, 1), latent_dims=settings["latent_dims"],
        mlp_depths=settings["mlp_depths"], mlp_widths=settings["mlp_widths"],
        seed=settings["seed"])
    started = time.perf_counter()
    result = search.search(
        x_train, x_test, hypermodel=space, max_trials=settings["max_trials"],
        max_minutes=settings["max_minutes"], epochs=settings["epochs"],
        directory=directory, project_name=project, overwrite=overwrite,
        latency_runs=settings["latency_runs"], seed=settings["seed"])
    search_seconds = time.perf_counter() - started
    log(f"search: {len(result.trials)} trials in {search_seconds / 60:.1f} min")
    default_dir = os.path.join(directory, project + "_default")
    record_path = os.path.join(default_dir, "record.json")
    if os.path.exists(record_path) and not overwrite:
        with open(record_path) as handle:
            default = json.load(handle)
    else:
        keras.utils.set_random_seed(settings["seed"])
        model = keras_vae.models.mlp_vae((28, 28, 1), seed=settings["seed"])
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        default = search.train_and_measure(
            model, x_train, x_test, default_dir, epochs=settings["epochs"],
            latency_runs=settings["latency_runs"], seed=settings["seed"],
            extra={"trial_id": "default"})
    dominating = search.dominating(result.trials, default, OBJECTIVES)
    confirmed = _confirm_latencies([default] + dominating,
                                   settings["confirm_rounds"],
                                   settings["latency_runs"])
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
        "command": "benchmarks/search_table.py" + (" --quick" if quick
                                                  else ""),
        "backend": keras.backend.backend(),
        "settings": {k: list(v) if isinstance(v, tuple) else v
                     for k, v in settings.items()},
        "search_seconds": search_seconds,
        "trials": result.trials,
        "front": [r["trial_id"] for r in result.front],
        "default": default,
        "dominating": [r["trial_id"] for r in dominating],
        "confirmed_latency_us": confirmed,
    }
    write(results, out_dir, update=not quick)
    return results


def _row(record, latency=None):
    latency = record["latency_us"] if latency is None else latency
    return (f"| {record['trial_id']} | {record['architecture']} | "
            f"{record['negative_elbo']:.2f} | {record['params']:,} | "
            f"{record['tflite_bytes']:,} | {latency:.1f} |")


def to_markdown(results):
    """The README table and verdict, from the results alone."""
    settings = results["settings"]
    trials = {r["trial_id"]: r for r in results["trials"]}
    default = results["default"]
    confirmed = results["confirmed_latency_us"]
    truly = [key for key in results["dominating"]
             if confirmed[key] < confirmed["default"]]
    header = ("| trial | architecture | test negative ELBO | parameters | "
              "int8 bytes | int8 latency batch 1 (us) |")
    lines = [
        "<!-- Written by benchmarks/search_table.py; do not edit by hand. -->",
        "",
        f"Measured {results['date']} with `{results['command']}` "
        f"({results['backend']} backend): {len(trials)} trials in "
        f"{results['search_seconds'] / 60:.1f} minutes (budget "
        f"{settings['max_trials']} trials or {settings['max_minutes']:.0f} "
        f"minutes), every candidate trained {settings['epochs']} epochs; "
        "test negative ELBO on the 1,000 test digits (one sample, fixed "
        "noise); latency: LiteRT, one thread, thread CPU time per "
        "`reconstruct` call, median. ![Pareto front](benchmarks/"
        "search_pareto.png)",
        "",
        "Pareto front (no other trial is better on quality, parameters and "
        "latency at once), and the default:",
        "",
        header,
        "|---|---|---|---|---|---|",
        _row(default, confirmed.get("default")),
    ]
    lines += [_row(trials[key]) for key in results["front"]]
    lines += [
        "",
        f"- Trials dominating the default `mlp_vae` (test negative ELBO <= "
        f"{default['negative_elbo']:.2f}, fewer than {default['params']:,} "
        "parameters, lower int8 latency): "
        + (", ".join(f"{key} ({trials[key]['architecture']}, latency timed "
                     f"again {confirmed[key]:.1f} us against "
                     f"{confirmed['default']:.1f} us)"
                     for key in results["dominating"]) or "none")
        + " (target: at least one: "
        + ("**met**" if truly else "**missed**") + ").",
        "",
    ]
    return "\n".join(lines) + "\n"


def write(results, out_dir, update=True):
    os.makedirs(out_dir, exist_ok=True)
    markdown = to_markdown(results)
    keras_vae.files.write_json(os.path.join(out_dir, "search_table.json"),
                               results, overwrite=True)
    keras_vae.files.write_bytes(os.path.join(out_dir, "search_table.md"),
                                markdown.encode("utf-8"), overwrite=True)
    keras_vae.plotting.pareto(
        results["trials"], os.path.join(out_dir, "search_pareto.png"),
        reference=dict(results["default"],
                       architecture="default mlp_vae "
                       + results["default"]["architecture"]))
    if update:
        _common.update_readme(markdown, README_MARKERS)
    return markdown


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings (the smoke run)")
    parser.add_argument("--out-dir", default=HERE)
    parser.add_argument("--overwrite", action="store_true",
                        help="start the search over instead of resuming")
    parser.add_argument("--child", action="store_true",
                        help="print a one-line JSON summary (benchmarks/run.py)")
    parser.add_argument("--render", metavar="JSON",
                        help="only rebuild the Markdown, the plot and the "
                             "README table from the JSON of a run")
    args = parser.parse_args(argv)
    if args.render:
        with open(args.render) as handle:
            results = json.load(handle)
        write(results, args.out_dir,
              update="--quick" not in results["command"])
        return
    log = (lambda *a: print(*a, file=sys.stderr)) if args.child else print
    results = run(args.quick, args.out_dir, args.overwrite, log=log)
    if args.child:
        print(json.dumps({"trials": len(results["trials"]),
                          "dominating": results["dominating"],
                          "search_seconds": results["search_seconds"]}))


if __name__ == "__main__":
    main()
