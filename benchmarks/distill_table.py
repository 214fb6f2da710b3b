"""Distillation on MNIST-5k: a 10x smaller student, distilled vs alone.

For each seed (three by default):

- the teacher, `mlp_vae` at its default size (784-512-256-16, 1.08M
  parameters), trains 30 epochs; after its first epoch its samples are
  scored by KID too (the "1 epoch against 30 epochs" check of KID);
- the student, an MLP VAE 784-48-16 (about 7% of the teacher's
  parameters; its int8 file must stay within 10% of the teacher's), starts
  from the same initial weights three times and trains for the same
  number of optimizer steps each time: alone (`fit`), distilled
  (`keras_vae.compression.Distiller`, default weights), and distilled with
  the distillation weights decaying to 0 over the first 60 epochs
  (`decay_steps`);
- every student is scored at 30 epochs (960 steps, the comparison at equal
  steps) and again at 150 epochs: test negative ELBO (one sample, fixed
  noise), IWAE NLL with K = 500, KID of 1,000 samples against the 1,000
  test digits (`keras_vae.metrics.kid`) and the gap to the teacher;
- the distilled student at 30 epochs is exported to full int8 and checked
  with `keras_vae.export.verify` (reconstruction NLL within 1%), and its
  file size is compared with the teacher's int8 file.

Learning curves (test negative ELBO every 5 epochs) are drawn against
optimizer steps and against training seconds, with the distilled curve
shown twice on the time axis: the teacher's 30 epochs of training not
counted, and counted. Two halves of the real test set are scored by KID
too (the "near zero" check).

    .venv/bin/python benchmarks/distill_table.py           # full (~30 min)
    .venv/bin/python benchmarks/distill_table.py --quick --out-dir /tmp/d
    .venv/bin/python benchmarks/distill_table.py --render benchmarks/distill_table.json
    .venv/bin/python benchmarks/distill_table.py --ablation  # one seed (~25 min)

writes `distill_table.md`, `distill_table.json`, `distill_curve_steps.png`
and `distill_curve_seconds.png` to `--out-dir` (default `benchmarks/`) and,
for full runs, the table between the `distill_table` markers of README.md.
"""

import argparse
import json
import math
import os
import sys
import tempfile
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
from keras_vae.callbacks import LearningCurve
from keras_vae.compression import Distiller
from keras_vae.compression.distillation import build_student

README_MARKERS = ("<!-- distill_table:start -->",
                  "<!-- distill_table:end -->")
ABLATION_MARKERS = ("<!-- distill_ablation:start -->",
                    "<!-- distill_ablation:end -->")

FULL = {
    "seeds": (0, 1, 2), "teacher_epochs": 30, "student_hidden": (48,),
    "epochs": 30, "long_epochs": 150, "decay_epochs": 60, "every": 5,
    "batch_size": 128, "learning_rate": 1e-3, "iwae_samples": 500,
    "kid_samples": 1000, "num_test": 1000, "calibration": 500,
}
QUICK = dict(FULL, seeds=(0,), teacher_epochs=2, epochs=1, long_epochs=2,
             decay_epochs=1, every=1, iwae_samples=5, kid_samples=200,
             num_test=200, calibration=50)
ARMS = ("scratch", "distilled", "distilled_decay")
# `--ablation`: one seed, 30 epochs, the student alone and distilled with
# each loss term on its own or changed (Distiller keyword arguments).
ABLATION = {
    "alone (no teacher)": None,
    "default: posterior + output at teacher codes": {},
    "posterior term only": {"output_weight": 0.0},
    "output term only": {"posterior_weight": 0.0},
    "output at the student's own codes": {"output_code": "student"},
    "output on reconstructions (each its own code)": {
        "output_code": "reconstruction"},
    "no ELBO term (distillation terms only)": {"elbo_weight": 0.0},
    "output and posterior weights 3": {"posterior_weight": 3.0,
                                       "output_weight": 3.0},
    "temperature 0.5 (sharper targets)": {"temperature": 0.5},
    "temperature 2 (softer targets)": {"temperature": 2.0},
    "25% teacher-generated images per batch": {"generated_fraction": 0.25},
    "50% teacher-generated images per batch": {"generated_fraction": 0.5},
}
LABELS = {"teacher": "teacher 784-512-256-16",
          "scratch": "student alone",
          "distilled": "student distilled",
          "distilled_decay": "student distilled, weights decayed to 0 by "
                             "epoch {decay}"}


def _kid(model, x_test, count, seed):
    samples = np.asarray(model.sample(count, seed=seed))
    result = keras_vae.metrics.kid(x_test, samples)
    return {"kid": result["kid"], "stderr": result["stderr"],
            "feature_network": result["feature_network"]}


def _scores(model, x_test, settings, seed):
    return {
        "negative_elbo": -keras_vae.metrics.elbo(model, x_test, seed=0),
        "iwae_nll": keras_vae.metrics.iwae_nll(
            model, x_test, num_samples=settings["iwae_samples"])["nll"],
        "kid": _kid(model, x_test, settings["kid_samples"], seed),
    }


def _int8(model, x_train, x_test, settings, directory, name, verify=False):
    path = os.path.join(directory, f"{name}_int8.tflite")
    info = keras_vae.export.to_tflite(
        model, path, representative_data=x_train[:settings["calibration"]],
        overwrite=True)
    result = {"bytes": int(info.num_bytes)}
    if verify:
        report = keras_vae.export.verify(path, model, x_test)
        result.update(nll_delta_pct=float(report.nll_delta_pct),
                      passed=bool(report.passed))
    return result


def _train_teacher(x_train, x_test, settings, seed, log):
    keras.utils.set_random_seed(seed)
    teacher = keras_vae.models.mlp_vae((28, 28, 1), seed=seed)
    teacher.compile(optimizer=keras.optimizers.Adam(settings["learning_rate"]))
    started = time.perf_counter()
    teacher.fit(x_train, epochs=1, batch_size=settings["batch_size"],
                verbose=0)
    seconds = time.perf_counter() - started
    one_epoch_kid = _kid(teacher, x_test, settings["kid_samples"], seed)
    started = time.perf_counter()
    teacher.fit(x_train, epochs=settings["teacher_epochs"], initial_epoch=1,
                batch_size=settings["batch_size"], verbose=0)
    seconds += time.perf_counter() - started
    log(f"  teacher trained in {seconds:.0f} s")
    return teacher, seconds, one_epoch_kid


def _train_arm(arm, teacher, initial, x_train, x_test, settings, seed,
               directory, log):
    """One student arm: scores at `epochs` and `long_epochs`, its curve."""
    student = build_student(teacher, settings["student_hidden"], seed=seed)
    student.set_weights(initial)
    optimizer = keras.optimizers.Adam(settings["learning_rate"])
    if arm == "scratch":
        trainer = student
        trainer.compile(optimizer=optimizer)
    else:
        steps_per_epoch = math.ceil(len(x_train) / settings["batch_size"])
        decay = (settings["decay_epochs"] * steps_per_epoch
                 if arm == "distilled_decay" else None)
        trainer = Distiller(teacher, student, decay_steps=decay, seed=seed)
        trainer.compile(optimizer=optimizer, steps_per_execution=32,
                        jit_compile=True)
    curve = LearningCurve(student, x_test, every=settings["every"])
    keras.utils.set_random_seed(seed + 2000)  # the same batch order
    record = {}
    fit = {"batch_size": settings["batch_size"], "verbose": 0,
           "callbacks": [curve]}
    if arm != "distilled_decay":
        trainer.fit(x_train, epochs=settings["epochs"], **fit)
        record["short"] = _scores(student, x_test, settings, seed)
        if arm == "distilled":
            record["short"]["int8"] = _int8(student, x_train, x_test,
                                            settings, directory,
                                            f"student_{seed}", verify=True)
        log(f"  {arm}: {settings['epochs']} epochs, test negative ELBO "
            f"{record['short']['negative_elbo']:.2f}")
    trainer.fit(x_train, epochs=settings["long_epochs"],
                initial_epoch=settings["epochs"] if record else 0, **fit)
    record["long"] = _scores(student, x_test, settings, seed)
    record["params"] = int(student.count_params())
    record["curve"] = curve.points
    log(f"  {arm}: {settings['long_epochs']} epochs, test negative ELBO "
        f"{record['long']['negative_elbo']:.2f}")
    return record


def run(quick=False, out_dir=HERE, log=print):
    """Train everything, write the JSON, Markdown, plots (and README)."""
    settings = QUICK if quick else FULL
    (x_train, _), (x_test, _) = keras_vae.datasets.load("mnist5k")
    x_test = x_test[:settings["num_test"]]
    half = len(x_test) // 2
    halves = keras_vae.metrics.kid(x_test[:half], x_test[half:])
    results = {
        "date": _common.now(),
        "command": "benchmarks/distill_table.py" + (" --quick" if quick
                                                   else ""),
        "backend": keras.backend.backend(),
        "settings": {k: list(v) if isinstance(v, tuple) else v
                     for k, v in settings.items()},
        "kid_test_halves": {k: halves[k] for k in ("kid", "stderr",
                                                   "feature_network")},
        "seeds": [],
    }
    with tempfile.TemporaryDirectory() as directory:
        for seed in settings["seeds"]:
            log(f"seed {seed}")
            teacher, seconds, one_epoch_kid = _train_teacher(
                x_train, x_test, settings, seed, log)
            row = {"seed": seed, "teacher_seconds": seconds,
                   "teacher_one_epoch_kid": one_epoch_kid,
                   "teacher": _scores(teacher, x_test, settings, seed),
                   "teacher_params": int(teacher.count_params())}
            row["teacher"]["int8"] = _int8(teacher, x_train, x_test,
                                           settings, directory,
                                           f"teacher_{seed}")
            keras.utils.set_random_seed(seed + 1000)
            initial = build_student(teacher, settings["student_hidden"],
                                    seed=seed).get_weights()
            for arm in ARMS:
                row[arm] = _train_arm(arm, teacher, initial, x_train, x_test,
                                      settings, seed, directory, log)
            results["seeds"].append(row)
    results["summary"] = summarize(results)
    write(results, out_dir, update=not quick)
    return results


# ------------------------------------------------------------ statistics
def _mean_se(values):
    values = np.asarray(values, dtype="float64")
    if len(values) < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(values.std(ddof=1)
                                       / np.sqrt(len(values)))


def summarize(results):
    """Means and standard errors over seeds; the paired differences."""
    rows = results["seeds"]
    summary = {}
    for stage in ("short", "long"):
        for metric in ("negative_elbo", "iwae_nll"):
            for arm in ARMS:
                values = [r[arm][stage][metric] for r in rows
                          if stage in r[arm]]
                if values:
                    summary[f"{arm}_{stage}_{metric}"] = _mean_se(values)
            for arm in ("distilled", "distilled_decay"):
                if all(stage in r[arm] for r in rows):
                    # Paired by seed: same initial weights, same test noise.
                    summary[f"gain_{arm}_{stage}_{metric}"] = _mean_se(
                        [r["scratch"][stage][metric] - r[arm][stage][metric]
                         for r in rows])
    for metric in ("negative_elbo", "iwae_nll"):
        summary[f"teacher_{metric}"] = _mean_se(
            [r["teacher"][metric] for r in rows])
    summary["teacher_int8_bytes"] = _mean_se(
        [r["teacher"]["int8"]["bytes"] for r in rows])
    summary["student_int8_bytes"] = _mean_se(
        [r["distilled"]["short"]["int8"]["bytes"] for r in rows])
    summary["student_int8_nll_delta_pct"] = [
        r["distilled"]["short"]["int8"]["nll_delta_pct"] for r in rows]
    summary["params_ratio"] = (rows[0]["distilled"]["params"]
                               / rows[0]["teacher_params"])
    summary["file_ratio"] = (summary["student_int8_bytes"][0]
                             / summary["teacher_int8_bytes"][0])
    gain, error = summary["gain_distilled_short_negative_elbo"]
    summary["beats_scratch_by_two_se"] = bool(
        math.isfinite(error) and gain > 2 * error)
    summary["steps_to_match"] = _steps_to_match(rows)
    return summary


def _steps_to_match(rows):
    """Steps the mean scratch curve needs to reach the distilled 30-epoch ELBO."""
    target = np.mean([r["distilled"]["short"]["negative_elbo"] for r in rows])
    curves = [r["scratch"]["curve"] for r in rows]
    length = min(len(c) for c in curves)
    mean = np.mean([[p["negative_elbo"] for p in c[:length]] for c in curves],
                   axis=0)
    for index, value in enumerate(mean):
        if value <= target:
            return int(curves[0][index]["steps"])
    return None


# -------------------------------------------------------------- writing
def _fmt(pair, digits=2):
    mean, error = pair
    if not math.isfinite(error):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {error:.{digits}f}"


def _kid_cell(rows, arm, stage=None):
    values = [(r[arm][stage] if stage else r[arm])["kid"]["kid"] * 1e3
              for r in rows]
    return _fmt(_mean_se(values), 1)


def to_markdown(results):
    """The README table and verdicts, from the results alone."""
    rows = results["seeds"]
    summary = results["summary"]
    settings = results["settings"]
    seeds = len(rows)
    short, long = settings["epochs"], settings["long_epochs"]
    steps = math.ceil(4000 / settings["batch_size"])
    labels = dict(LABELS, distilled_decay=LABELS["distilled_decay"].format(
        decay=settings["decay_epochs"]))
    lines = [
        "<!-- Written by benchmarks/distill_table.py; do not edit by hand. -->",
        "",
        f"Measured {results['date']} with `{results['command']}` "
        f"({results['backend']} backend), {seeds} seed(s); mean ± standard "
        "error over seeds. Test negative ELBO: one sample per digit, fixed "
        f"noise; IWAE NLL: K = {settings['iwae_samples']}; KID x 1000: "
        f"{settings['kid_samples']} samples against the "
        f"{settings['num_test']} test digits. Student: MLP 784-"
        f"{'-'.join(str(u) for u in settings['student_hidden'])}-16, "
        f"{rows[0]['distilled']['params']:,} parameters "
        f"({100 * summary['params_ratio']:.1f}% of the teacher's "
        f"{rows[0]['teacher_params']:,}).",
        "",
        "| model | epochs (steps) | test negative ELBO | IWAE NLL | gap to "
        "teacher (IWAE) | KID x 1000 |",
        "|---|---|---|---|---|---|",
    ]
    teacher_iwae = summary["teacher_iwae_nll"][0]
    lines.append(
        f"| {labels['teacher']} | {settings['teacher_epochs']} "
        f"({settings['teacher_epochs'] * steps}) | "
        f"{_fmt(summary['teacher_negative_elbo'])} | "
        f"{_fmt(summary['teacher_iwae_nll'])} | 0 | "
        f"{_kid_cell(rows, 'teacher')} |")
    for stage, epochs in (("short", short), ("long", long)):
        for arm in ARMS:
            key = f"{arm}_{stage}_negative_elbo"
            if key not in summary:
                continue
            iwae = summary[f"{arm}_{stage}_iwae_nll"]
            lines.append(
                f"| {labels[arm]} | {epochs} ({epochs * steps}) | "
                f"{_fmt(summary[key])} | {_fmt(iwae)} | "
                f"{iwae[0] - teacher_iwae:+.2f} | "
                f"{_kid_cell(rows, arm, stage)} |")
    gain = summary["gain_distilled_short_negative_elbo"]
    gain_iwae = summary["gain_distilled_short_iwae_nll"]
    long_gain = summary["gain_distilled_long_negative_elbo"]
    decay_gain = summary["gain_distilled_decay_long_negative_elbo"]
    verdict = "**met**" if summary["beats_scratch_by_two_se"] else "**missed**"
    match = summary["steps_to_match"]
    int8 = [r["distilled"]["short"]["int8"] for r in rows]
    lines += [
        "",
        f"- Distilled against alone at equal steps ({short} epochs, "
        f"{short * steps} steps), paired by seed: the test negative ELBO is "
        f"lower by {_fmt(gain)} nats (IWAE: {_fmt(gain_iwae)}); more than "
        f"two standard errors: {verdict}.",
        "- Faster convergence, not a better end point: the student alone "
        + (f"needs about {match} steps ({match / (short * steps):.1f}x) to "
           "reach the distilled student's "
           f"{short}-epoch ELBO" if match else
           f"does not reach the distilled student's {short}-epoch ELBO "
           f"within {long} epochs")
        + f"; at {long} epochs the gain is {_fmt(long_gain)} nats with "
        f"constant weights and {_fmt(decay_gain)} with the weights decayed "
        f"to 0 by epoch {settings['decay_epochs']}.",
        f"- int8: the distilled student's full-int8 file is "
        f"{summary['student_int8_bytes'][0]:,.0f} bytes, "
        f"{100 * summary['file_ratio']:.1f}% of the teacher's "
        f"{summary['teacher_int8_bytes'][0]:,.0f} (target <= 10%: "
        f"{'**met**' if summary['file_ratio'] <= 0.10 else '**missed**'}); "
        "`verify` reconstruction NLL change "
        + ", ".join(f"{i['nll_delta_pct']:+.2f}%" for i in int8)
        + " (target within 1%: "
        + ("**met**" if all(abs(i["nll_delta_pct"]) <= 1.0 and i["passed"]
                            for i in int8) else "**missed**") + ").",
        "- Learning curves: `distill_curve_steps.png` and "
        "`distill_curve_seconds.png` (time axis: training seconds on this "
        "machine, evaluations excluded; the distilled curve is drawn with "
        "and without the teacher's training).",
    ]
    halves = results["kid_test_halves"]
    one = _mean_se([r["teacher_one_epoch_kid"]["kid"] * 1e3 for r in rows])
    full = _mean_se([r["teacher"]["kid"]["kid"] * 1e3 for r in rows])
    lines += [
        f"- KID x 1000 of two halves of the test set: "
        f"{1e3 * halves['kid']:.2f} ± {1e3 * halves['stderr']:.2f} (near 0: "
        + ("**met**" if abs(halves["kid"]) <= 2 * halves["stderr"]
           else "**missed**")
        + f"); teacher samples after 1 epoch {_fmt(one, 1)} against "
        f"{_fmt(full, 1)} after {settings['teacher_epochs']} epochs. "
        f"Feature network: `{halves['feature_network']}`.",
        "",
    ]
    return "\n".join(lines) + "\n"


def plot(results, out_dir):
    """The learning curves against steps and against seconds (PNGs)."""
    rows = results["seeds"]
    settings = results["settings"]
    labels = dict(LABELS, distilled_decay=LABELS["distilled_decay"].format(
        decay=settings["decay_epochs"]))
    teacher = {"teacher": float(np.mean(
        [r["teacher"]["negative_elbo"] for r in rows]))}
    paths = {}
    for axis, name, title in (
            ("steps", "distill_curve_steps.png", "optimizer steps"),
            ("seconds", "distill_curve_seconds.png",
             "training seconds (evaluations excluded)")):
        curves = {}
        for arm in ARMS:
            curves[labels[arm]] = [
                ([p[axis] for p in r[arm]["curve"]],
                 [p["negative_elbo"] for p in r[arm]["curve"]]) for r in rows]
        if axis == "seconds":
            curves["student distilled, teacher's training counted"] = [
                ([p["seconds"] + r["teacher_seconds"]
                  for p in r["distilled"]["curve"]],
                 [p["negative_elbo"] for p in r["distilled"]["curve"]])
                for r in rows]
        paths[axis] = keras_vae.plotting.learning_curves(
            curves, os.path.join(out_dir, name), x_label=title,
            reference=teacher,
            title="MNIST-5k student 784-"
                  f"{'-'.join(str(u) for u in settings['student_hidden'])}"
                  "-16: distilled vs alone")
    return paths


def ablation(quick=False, out_dir=HERE, seed=0, log=print):
    """Each loss term alone or changed: test negative ELBO at equal steps."""
    settings = QUICK if quick else FULL
    (x_train, _), (x_test, _) = keras_vae.datasets.load("mnist5k")
    x_test = x_test[:settings["num_test"]]
    teacher, _, _ = _train_teacher(x_train, x_test, settings, seed, log)
    keras.utils.set_random_seed(seed + 1000)
    initial = build_student(teacher, settings["student_hidden"],
                            seed=seed).get_weights()
    rows = {}
    for name, options in ABLATION.items():
        student = build_student(teacher, settings["student_hidden"],
                                seed=seed)
        student.set_weights(initial)
        optimizer = keras.optimizers.Adam(settings["learning_rate"])
        if options is None:
            trainer = student
            trainer.compile(optimizer=optimizer)
        else:
            trainer = Distiller(teacher, student, seed=seed, **options)
            trainer.compile(optimizer=optimizer, steps_per_execution=32,
                            jit_compile=True)
        keras.utils.set_random_seed(seed + 2000)
        trainer.fit(x_train, epochs=settings["epochs"],
                    batch_size=settings["batch_size"], verbose=0)
        rows[name] = -keras_vae.metrics.elbo(student, x_test, seed=0)
        log(f"  {name}: {rows[name]:.2f}")
    results = {"command": "benchmarks/distill_table.py --ablation"
                          + (" --quick" if quick else ""),
               "date": _common.now(),
               "seed": seed, "epochs": settings["epochs"],
               "teacher": -keras_vae.metrics.elbo(teacher, x_test, seed=0),
               "rows": rows}
    lines = [
        "<!-- Written by benchmarks/distill_table.py --ablation. -->",
        "",
        f"`{results['command']}` ({results['date']}), seed {seed}: the "
        "student 784-"
        f"{'-'.join(str(u) for u in settings['student_hidden'])}-16 after "
        f"{settings['epochs']} epochs from the same initial weights, "
        f"teacher at {results['teacher']:.2f}.",
        "",
        "| student loss | test negative ELBO |",
        "|---|---|",
    ] + [f"| {name} | {value:.2f} |" for name, value in rows.items()]
    markdown = "\n".join(lines) + "\n"
    keras_vae.files.write_json(os.path.join(out_dir, "distill_ablation.json"),
                               results, overwrite=True)
    keras_vae.files.write_bytes(os.path.join(out_dir, "distill_ablation.md"),
                                markdown.encode("utf-8"), overwrite=True)
    if not quick:
        _common.update_readme(markdown, ABLATION_MARKERS)
    return results


def write(results, out_dir, update=True):
    os.makedirs(out_dir, exist_ok=True)
    markdown = to_markdown(results)
    keras_vae.files.write_json(os.path.join(out_dir, "distill_table.json"),
                               results, overwrite=True)
    keras_vae.files.write_bytes(os.path.join(out_dir, "distill_table.md"),
                                markdown.encode("utf-8"), overwrite=True)
    plot(results, out_dir)
    if update:
        _common.update_readme(markdown, README_MARKERS)
    return markdown


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings (the smoke run)")
    parser.add_argument("--out-dir", default=HERE)
    parser.add_argument("--child", action="store_true",
                        help="print a one-line JSON summary (benchmarks/run.py)")
    parser.add_argument("--ablation", action="store_true",
                        help="one seed: each loss term alone or changed "
                             "(writes distill_ablation.md/.json)")
    parser.add_argument("--render", metavar="JSON",
                        help="only rebuild the Markdown, the plots and the "
                             "README table from the JSON of a run")
    args = parser.parse_args(argv)
    if args.render:
        with open(args.render) as handle:
            results = json.load(handle)
        write(results, args.out_dir,
              update="--quick" not in results["command"])
        return
    log = (lambda *a: print(*a, file=sys.stderr)) if args.child else print
    if args.ablation:
        ablation(args.quick, args.out_dir, log=log)
        return
    results = run(args.quick, args.out_dir, log=log)
    if args.child:
        summary = results["summary"]
        print(json.dumps({
            "gain_negative_elbo": summary["gain_distilled_short_negative_elbo"],
            "beats_scratch_by_two_se": summary["beats_scratch_by_two_se"],
            "file_ratio": summary["file_ratio"],
            "steps_to_match": summary["steps_to_match"]}))


if __name__ == "__main__":
    main()
