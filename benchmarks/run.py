"""`make bench`: training, inference, memory and scaling, side by side.

Runs every benchmark module in fresh child processes and writes
`benchmarks/results.json` (all records) and `benchmarks/results.md` (the
tables the README includes: machine, versions, date, min/median/max over
repeats) and `benchmarks/scaling.png`.

    .venv/bin/python benchmarks/run.py                 # what `make bench` runs
    .venv/bin/python benchmarks/run.py --quick --out-dir /tmp/bench  # smoke

Nothing in the Markdown is typed by hand: every number comes from the JSON
written in the same run.
"""

import argparse
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common
import cpu_peak
import infer_speed
import keras_inference
import large_shapes
import memory
import multi_worker
import scaling
import train_speed

# The speed and inference targets the README reports against.
TARGETS = {
    "train_vs_reference_keras": 1.5,
    "train_vs_reference_torch": 1.2,
    "elbo_within_nats": 1.0,
    "int8_vs_float32": 3.0,
    "int8_vs_torch_batch1": 10.0,
    "int8_slowdown_vs_plain_pct": 10.0,
    "default_int8_slowdown_vs_fastest_int8_pct": 10.0,
    "cvae_train_vs_keras_loop": train_speed.CVAE_TARGET_SPEEDUP,
}


def settings(quick):
    """Sizes of every part; `quick` is the smoke test's tiny version."""
    if quick:
        return {"epochs": 2, "repeats": 1, "train_size": 512,
                "candidates": ["keras_vae", "reference_keras",
                               "reference_torch"],
                "options": [], "infer_threads": [1], "infer_rounds": 1,
                "infer_epochs": 1, "memory_epochs": 1, "scaling_epochs": 2,
                "scaling_sizes": (256, 512), "scaling_batches": (128,),
                "distributed": False, "profile": False, "cvae": False,
                "whole_fit": False}
    return {"epochs": train_speed.DEFAULT_EPOCHS, "repeats": 3,
            "train_size": None, "candidates": list(train_speed.CANDIDATES),
            "options": list(train_speed.OPTIONAL_CANDIDATES),
            "infer_threads": [1, 2], "infer_rounds": 5, "infer_epochs": 2,
            "memory_epochs": 3, "scaling_epochs": 3,
            "scaling_sizes": scaling.SIZES,
            "scaling_batches": scaling.BATCH_SIZES, "distributed": True,
            "profile": True, "cvae": True, "whole_fit": True}


def run(quick=False, out_dir=_common.BENCH_DIR, log=print):
    """Run everything; write results.json, results.md, scaling.png."""
    config = settings(quick)
    started = time.time()
    results = {
        "date": _common.now(),
        "command": "make bench" if not quick else
                   "benchmarks/run.py --quick",
        "machine": _common.machine_info(),
        "load_average_at_start": _load_average(),
        "settings": {k: list(v) if isinstance(v, tuple) else v
                     for k, v in config.items()},
    }
    log("training speed ...")
    train = train_speed.benchmark(config["epochs"], config["repeats"],
                                  config["candidates"],
                                  train_size=config["train_size"], log=log)
    if config["options"]:
        options = train_speed.benchmark(config["epochs"], 1,
                                        ["keras_vae", *config["options"]],
                                        train_size=config["train_size"],
                                        log=log)
        train["options"] = options
    results["train"] = train
    if config["cvae"]:
        # The conditional VAE through keras-vae's defaults and through
        # Keras' own loop (`train_speed.py --only cvae`).
        log("training speed, conditional VAE ...")
        results["train_cvae"] = train_speed.benchmark_cvae(
            config["epochs"], config["repeats"], log=log)
    if config["whole_fit"]:
        # What a user waits for: the whole first and second `fit`, 10 and
        # 30 epochs, TensorFlow, JAX and PyTorch eager, the user's cache.
        log("whole-fit wall time ...")
        results["whole_fit"] = train_speed.benchmark_whole_fit(log=log)
    if config["profile"]:
        log("profile of one training step ...")
        results["profile"] = _common.run_child("train_speed", ["--profile"])
    log("inference speed ...")
    infer = infer_speed.benchmark(config["infer_threads"],
                                  config["infer_rounds"],
                                  config["infer_epochs"], quick=quick, log=log)
    results["infer"] = infer
    log("Keras-side inference (encode/decode/reconstruct/sample) ...")
    results["keras_inference"] = keras_inference.benchmark(
        rounds=1 if quick else 7, calls=20 if quick else 200, log=log)
    log("memory ...")
    results["memory"] = memory.benchmark(
        infer["prepared"]["paths"]["int8"], config["memory_epochs"], log=log)
    # The exported files live in a temporary directory made by `infer`.
    shutil.rmtree(os.path.dirname(infer["prepared"]["paths"]["int8"]),
                  ignore_errors=True)
    log("scaling ...")
    results["scaling"] = scaling.benchmark(
        config["scaling_epochs"], config["scaling_sizes"],
        config["scaling_batches"], log=log)
    if config["distributed"]:
        # Devices and workers, large images, a killed worker: see
        # scaling.py, large_shapes.py and multi_worker.py.
        log("distributed scaling ...")
        results["scaling"]["distributed"] = scaling.distributed(
            config["scaling_epochs"], log=log)
        log("large shapes ...")
        results["large_shapes"] = large_shapes.benchmark(log=log)
        log("multi-worker check ...")
        results["multi_worker"] = multi_worker.full_check(
            os.path.join(_common.REPO_DIR, "runs", "multi_worker"), log=log)
    os.makedirs(out_dir, exist_ok=True)
    scaling.plot(results["scaling"], os.path.join(out_dir, "scaling.png"))
    # The codec table trains its own models (cached) and writes
    # codec_table.md/.json/codec_rd.png and the README's codec tables.
    log("codec table ...")
    results["codec"] = _common.run_child(
        "codec_table", ["--out-dir", out_dir] + (["--quick"] if quick else []),
        timeout=4 * 3600)
    # Distillation (three seeds, about 30 min) and the architecture search
    # (30 trials or 30 min): their own tables, plots and README tables.
    for name in ("distill_table", "search_table"):
        log(f"{name.replace('_', ' ')} ...")
        results[name] = _common.run_child(
            name, ["--out-dir", out_dir] + (["--quick"] if quick else []),
            timeout=3 * 3600)
    results["seconds"] = time.time() - started
    results["load_average_at_end"] = _load_average()
    with open(os.path.join(out_dir, "results.json"), "w") as handle:
        json.dump(results, handle, indent=1)
    with open(os.path.join(out_dir, "results.md"), "w") as handle:
        handle.write(to_markdown(results))
    log(f"wrote {out_dir}/results.json, results.md, scaling.png in "
        f"{results['seconds'] / 60:.1f} min")
    return results


def _load_average():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


# ------------------------------------------------------------ markdown
def _verdict(ok):
    return "**met**" if ok else "**missed**"


def to_markdown(results):
    """The README tables, from the results dict alone."""
    machine = results["machine"]
    lines = [
        "<!-- Written by benchmarks/run.py; do not edit by hand. -->",
        "",
        f"Measured {results['date']} with `{results['command']}` on "
        f"{machine['cpu']} ({machine['cpu_count']} cores, "
        f"{machine['cpu_mhz']:.0f} MHz, {', '.join(machine['cpu_flags'])}); "
        f"load average at start {_fmt_load(results.get('load_average_at_start'))}"
        f", at end {_fmt_load(results.get('load_average_at_end'))}. "
        f"Python {machine['python']}, TensorFlow {machine['tensorflow']}, "
        f"Keras {machine['keras']}, JAX {machine['jax']}, PyTorch "
        f"{machine['torch']}, ai-edge-litert {machine['ai_edge_litert']}, "
        f"numpy {machine['numpy']}. Figures are median (min-max) over "
        "repeats.",
        "",
    ]
    lines += _train_markdown(results["train"])
    if results.get("train_cvae"):
        lines += train_speed.cvae_markdown(results["train_cvae"])
    if results.get("whole_fit"):
        lines += [
            "### Whole `fit` (first and second call, compilation included)",
            "",
            "Fresh processes, best of "
            f"{results['whole_fit']['repeats']} per epoch count, XLA cache "
            f"`{results['whole_fit']['cache']}` "
            "(`python benchmarks/train_speed.py --whole-fit`).",
            "",
            train_speed.whole_fit_table(results["whole_fit"]["summary"]),
            "",
        ]
    if "profile" in results:
        lines += _profile_markdown(results["profile"])
    lines += _infer_markdown(results["infer"])
    if results.get("keras_inference"):
        lines += [
            "#### Keras-side inference, one image (MLP 784-512-256-16)", "",
            "`model.encode/decode/reconstruct/sample` validate their input "
            "and run a function compiled once per input signature; "
            "`reconstruct_eager` is the same computation run eagerly, "
            "`predict_on_batch` Keras' own call. Median (min) ms per call "
            "(`python benchmarks/keras_inference.py`); target <= "
            f"{keras_inference.TARGET_MS:g} ms for the compiled calls.", "",
        ] + keras_inference.to_markdown(results["keras_inference"]) + [""]
    lines += _memory_markdown(results["memory"])
    lines += _scaling_markdown(results["scaling"])
    lines += _distributed_markdown(results)
    lines += _codec_markdown(results.get("codec"))
    lines += _smaller_markdown(results)
    return "\n".join(lines) + "\n"


def _distributed_markdown(results):
    """Devices and workers, large images, the killed-worker check."""
    lines = []
    rows = results["scaling"].get("distributed")
    if rows:
        lines += ["#### Devices and workers (MLP VAE, 4k images, global batch "
                  "128)", "",
                  "Both cores of this machine are shared by the devices or "
                  "workers of a run: the figures show what distribution "
                  "costs here, not what it gains on separate devices.", ""]
        lines += scaling.distributed_markdown(rows) + [""]
    if results.get("large_shapes"):
        lines += ["#### Large images: conv_vae from a streaming tf.data "
                  "input", ""]
        lines += large_shapes.to_markdown(results["large_shapes"]) + [""]
    check = results.get("multi_worker")
    if check:
        lines += ["#### Multi-worker training with a killed worker "
                  "(MNIST-5k, every callback)", "",
                  "| run | test ELBO | gap to one process (nats) | "
                  "restarts | files whole |", "|---|---|---|---|---|"]
        for name, row in check.items():
            gap = row.get("gap_nats")
            lines.append(
                f"| {name} | {row['test_elbo']:.2f} | "
                + ("-" if gap is None else f"{gap:.2f}")
                + f" | {row['restarts']} | {row['files_ok']} |")
        lines.append("")
    return lines


def _smaller_markdown(results):
    """One line each from the distillation and search tables."""
    distill, search = results.get("distill_table"), results.get("search_table")
    if not distill and not search:
        return []
    lines = ["### Smaller by design (details: `distill_table.md`, "
             "`search_table.md`)", ""]
    if distill:
        gain, error = distill["gain_negative_elbo"]
        lines.append(
            f"- Distilled student vs the same student alone at equal steps: "
            f"test negative ELBO lower by {gain:.2f} ± {error:.2f} nats; "
            f"int8 file {100 * distill['file_ratio']:.1f}% of the "
            "teacher's.")
    if search:
        lines.append(
            f"- Architecture search: {search['trials']} trials in "
            f"{search['search_seconds'] / 60:.1f} min; trials dominating the "
            f"default mlp_vae: {', '.join(search['dominating']) or 'none'}.")
    return lines + [""]


def _codec_markdown(codec):
    """One line per data kind from the codec table (details: codec_table.md)."""
    if not codec:
        return []
    lines = ["### The VAE as a compressor (details: `codec_table.md`)", ""]
    for name, row in codec.items():
        best = row["best_standard"]
        lines.append(
            f"- {name}: bits-back {row['bpp_net']:.4f} bits/pixel (negative "
            f"ELBO {row['negative_elbo_bpp']:.4f}); best standard codec "
            f"{best['codec']} {best['bpp']:.4f}.")
    return lines + [""]


def _fmt_load(load):
    return "unknown" if not load else f"{load[0]:.1f}"


_LABELS = {
    "keras_vae": "keras-vae `fit` defaults (TF)",
    "keras_vae_jax": "keras-vae `fit` defaults (JAX)",
    "reference_keras": "(a) Keras example, GradientTape, numpy",
    "reference_keras_xla": "(a) + `jit_compile=True`",
    "reference_torch": "(b) PyTorch eager",
    "keras_vae_no_xla": "keras-vae, `jit_compile=False`",
    "keras_vae_bf16": "keras-vae, `mixed_bfloat16`",
}


def _train_table(train, lines):
    summary = train["summary"]
    speedups = summary["keras_vae_speedup"]
    lines += [
        "| candidate | images/s | s/epoch | first-epoch extra s | "
        "test ELBO | peak RSS MiB | keras-vae speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in summary["candidates"].items():
        speedup = speedups.get(name)
        lines.append(
            f"| {_LABELS.get(name, name)} | {_common.mmm(row['samples_per_second'])}"
            f" | {_common.mmm(row['seconds_per_epoch'], '{:.3f}')}"
            f" | {_common.mmm(row['first_epoch_extra_seconds'], '{:.1f}')}"
            f" | {_common.mmm(row['test_elbo'], '{:.1f}')}"
            f" | {row['peak_rss_mb']['median']:.0f}"
            f" | {_common.mmm(speedup, '{:.2f}x') if speedup else '-'} |")
    for name, error in train.get("failures", {}).items():
        lines.append(f"| {_LABELS.get(name, name)} | failed: {error} "
                     "| | | | | |")
    lines.append("")


def _train_markdown(train):
    lines = [
        "### Training speed",
        "",
        f"MLP VAE 784-512-256-16, Bernoulli, Adam 1e-3, batch "
        f"{train['batch_size']}, {train['epochs']} epochs on "
        f"{train['train_size']} MNIST-5k images, {train['repeats']} repeats; "
        "candidates alternate within each repeat, each in a fresh process. "
        "images/s and s/epoch exclude the first epoch, whose extra time "
        "(tracing, XLA compilation) is its own column. The test ELBO is "
        "nats per image on the 1,000 test images after the last epoch. The "
        "speed-up is keras-vae's images/s over the candidate's, same "
        "repeat.",
        "",
    ]
    _train_table(train, lines)
    summary = train["summary"]
    speedups = summary["keras_vae_speedup"]
    elbo = {name: row["test_elbo"]["median"]
            for name, row in summary["candidates"].items()}
    checks = []
    for name, key in (("reference_keras", "train_vs_reference_keras"),
                      ("reference_torch", "train_vs_reference_torch")):
        if name in speedups and "keras_vae" in elbo:
            value = speedups[name]["median"]
            gap = abs(elbo["keras_vae"] - elbo[name])
            checks.append(
                f"- keras-vae vs {_LABELS[name]}: {value:.2f}x (target "
                f">= {TARGETS[key]}x: {_verdict(value >= TARGETS[key])}); "
                f"test ELBO gap {gap:.1f} nats (target <= "
                f"{TARGETS['elbo_within_nats']:.0f}: "
                f"{_verdict(gap <= TARGETS['elbo_within_nats'])}).")
    lines += checks + [""]
    if "options" in train:
        lines += ["Options measured for the defaults (1 repeat, same "
                  "settings; speed-up is keras-vae defaults over the "
                  "option):", ""]
        _train_table(train["options"], lines)
    return lines


def _profile_markdown(profile):
    names = {
        "matmuls_fwd_bwd_xla": "the six matmuls of forward + backward (XLA)",
        "forward_backward": "forward + backward with the loss",
        "forward_backward_xla": "forward + backward with the loss (XLA)",
        "adam_update": "Adam update of all weights",
        "adam_update_xla": "Adam update of all weights (XLA)",
        "train_step": "whole train step",
        "train_step_xla": "whole train step (XLA)",
    }
    lines = [
        "### Where the training time goes",
        "",
        "One batch of 128 images, each part compiled alone and timed "
        "(microseconds per image, median (min-max) over 5 rounds of 20 "
        f"calls; `python benchmarks/train_speed.py --profile`). One "
        f"training example costs {profile['flops_per_image'] / 1e6:.2f} "
        f"MFLOP of matmuls; the matmuls alone ran at "
        f"{profile['matmul_gflops']:.0f} GFLOP/s at best, a ceiling of "
        f"{profile['ceiling_images_per_s']:.0f} images/s. The model has "
        f"{profile['params']:,} weights, each read and written by Adam on "
        "every step.",
        "",
        "| part | us per image |",
        "|---|---|",
    ]
    for key, stats in profile["us_per_image"].items():
        lines.append(f"| {names.get(key, key)} | {_common.mmm(stats, '{:.1f}')} |")
    return lines + [""]


_INFER_LABELS = {
    "keras_call": "Keras float `model(x)`",
    "keras_predict_on_batch": "Keras `predict_on_batch`",
    "tflite_float32": "LiteRT float32",
    "tflite_dynamic": "LiteRT dynamic-range",
    "tflite_int8": "LiteRT full int8, per-tensor Dense (default)",
    "tflite_int8_per_channel": "LiteRT full int8, per-channel Dense",
    "tflite_pruned_int8_dense": "LiteRT pruned 80% (1x16) int8, dense "
                                "(`optimize_for=\"latency\"`)",
    "tflite_pruned_int8_sparse": "LiteRT pruned 80% (1x16) int8, sparse "
                                 "(`optimize_for=\"size\"`)",
    "tflite_plain_int8": "plain `model.export(format=\"litert\")` int8",
    "onnx_float32": "ONNX Runtime float32",
    "onnx_int8_static": "ONNX Runtime int8, static QDQ (its quantizer)",
    "onnx_int8_dynamic": "ONNX Runtime int8, dynamic (its quantizer)",
    "torch_eager": "PyTorch eager",
    "torch_int8_fbgemm": "PyTorch int8 `Linear` (fbgemm), speed reference",
}


def _infer_markdown(infer):
    prepared = infer["prepared"]
    lines = [
        "### Inference speed of `reconstruct`",
        "",
        "MLP VAE 784-512-256-16 (files from `keras_vae.export.to_tflite`, "
        "three signatures each, timed on `reconstruct` with "
        "`export/litert_vae.py`; ONNX files built from the same weights and "
        "quantized with `onnxruntime.quantization`). Batch 1: median and "
        "p95 latency; batch 256: images per second.",
        "",
        "| file | bytes | gzip bytes | reconstruction NLL vs its float "
        "Keras model |",
        "|---|---:|---:|---:|",
    ]
    quality = prepared.get("nll_delta_pct", {})
    for kind, size in prepared["bytes"].items():
        name = kind if kind.startswith("onnx") else f"tflite_{kind}"
        delta = quality.get(name)
        lines.append(
            f"| {_INFER_LABELS.get(name, name)} | {size:,} | "
            f"{prepared.get('gzip_bytes', {}).get(kind, 0):,} | "
            + (f"{delta:+.2f}% |" if delta is not None else "n/a |"))
    lines.append("")
    for threads, block in infer["threads"].items():
        lines += [
            f"{threads} thread(s):",
            "",
            "| runtime | batch 1 median us | batch 1 p95 us | "
            "batch 256 images/s |",
            "|---|---|---|---|",
        ]
        for name, row in block["table"].items():
            lines.append(
                f"| {_INFER_LABELS.get(name, name)} | "
                f"{_common.mmm(row['latency_median_us'], '{:.1f}')} | "
                f"{row['latency_p95_us']['median']:.1f} | "
                f"{_common.mmm(row['throughput_per_s'])} |")
        lines.append("")
        targets = block["targets"]

        def spread(name, fmt="{:.2f}", targets=targets):
            low, high = targets.get(name + "_range", [targets[name]] * 2)
            return f"{fmt.format(low)}-{fmt.format(high)}"

        if "default_int8_slowdown_vs_fastest_batch1_pct" in targets:
            limit = TARGETS["default_int8_slowdown_vs_fastest_int8_pct"]
            b1 = targets["default_int8_slowdown_vs_fastest_batch1_pct"]
            b256 = targets["default_int8_slowdown_vs_fastest_batch256_pct"]
            lines.append(
                "- default int8 `.tflite` vs the fastest int8 runtime "
                f"measured: {b1:+.1f}% time at batch 1 against "
                f"{_INFER_LABELS.get(targets['fastest_int8_batch1'])} "
                f"({spread('default_int8_slowdown_vs_fastest_batch1_pct', '{:+.1f}')}"
                f"%), {b256:+.1f}% at batch 256 against "
                f"{_INFER_LABELS.get(targets['fastest_int8_batch256'])} "
                f"({spread('default_int8_slowdown_vs_fastest_batch256_pct', '{:+.1f}')}"
                f"%) (target <= +{limit:.0f}%: "
                f"{_verdict(max(b1, b256) <= limit)}).")
        if "pruned_sparse_vs_dense_time_batch1" in targets:
            lines.append(
                "- 80% pruned, sparse vs dense int8 encoding: "
                f"{targets['pruned_sparse_vs_dense_time_batch1']:.2f}x the "
                "time at batch 1, "
                f"{targets['pruned_sparse_vs_dense_time_batch256']:.2f}x at "
                "batch 256 (above 1: the sparse file is slower).")
        if "int8_vs_float32_batch1" in targets:
            b1, b256 = (targets["int8_vs_float32_batch1"],
                        targets["int8_vs_float32_batch256"])
            lines.append(
                f"- int8 vs float32 LiteRT: {b1:.2f}x at batch 1 "
                f"({spread('int8_vs_float32_batch1')}x over rounds), "
                f"{b256:.2f}x at batch 256 "
                f"({spread('int8_vs_float32_batch256')}x).")
        if "int8_vs_torch_batch1" in targets:
            value = targets["int8_vs_torch_batch1"]
            lines.append(
                f"- int8 vs PyTorch eager at batch 1: {value:.1f}x "
                f"({spread('int8_vs_torch_batch1', '{:.1f}')}x).")
        if "int8_slowdown_vs_plain_batch1_pct" in targets:
            b1 = targets["int8_slowdown_vs_plain_batch1_pct"]
            b256 = targets["int8_slowdown_vs_plain_batch256_pct"]
            limit = TARGETS["int8_slowdown_vs_plain_pct"]
            lines.append(
                f"- int8 vs the plain int8 export: {b1:+.1f}% time at batch "
                f"1 ({spread('int8_slowdown_vs_plain_batch1_pct', '{:+.1f}')}"
                f"%), {b256:+.1f}% at batch 256 "
                f"({spread('int8_slowdown_vs_plain_batch256_pct', '{:+.1f}')}"
                f"%) (target <= +{limit:.0f}%: "
                f"{_verdict(max(b1, b256) <= limit)}).")
        peak = ("the measured ceiling below (the densest int8 multiply, "
                "`vpmaddubsw`, all cores at once)"
                if targets.get("int8_peak_measured") else
                "cores x clock x int8 multiply-adds per cycle (64 with AVX2, "
                "128 with AVX-512 VNNI) x 2, nominal")
        lines.append(
            f"- int8 batch 256: {targets['int8_batch256_ops_per_s'] / 1e9:.1f}"
            f" int8 GOP/s = {100 * targets['int8_batch256_fraction_of_peak']:.1f}"
            f"% of this CPU's int8 peak with {threads} core(s) "
            f"({targets['int8_peak_ops_per_s'] / 1e9:.0f} GOP/s: "
            f"{prepared['macs_per_image']:,} multiply-adds per image; peak = "
            f"{peak}).")
        if "int8_needed_for_3x_over_best_int8_ceiling" in targets:
            fbgemm = targets.get("torch_int8_fraction_of_int8_ceiling")
            lines.append(
                "- float32 LiteRT at batch 256 runs at "
                f"{100 * targets['float32_batch256_fraction_of_fma_ceiling']:.0f}"
                "% of the measured float32 FMA ceiling. 3x its throughput in "
                "int8 would need an int8 kernel running at "
                f"{100 * targets['int8_needed_for_3x_over_best_int8_ceiling']:.0f}"
                "% of the densest int8 multiply-add rate these cores retire "
                "(register-only, no loads); LiteRT's int8 kernels (XNNPACK) "
                "ran at "
                f"{100 * targets['int8_batch256_fraction_of_peak']:.0f}%"
                + (f", PyTorch's fbgemm at {100 * fbgemm:.0f}%" if fbgemm
                   else "") + ".")
        lines.append("")
    lines += _ceilings_markdown(infer.get("cpu_peak"))
    return lines


def _ceilings_markdown(ceilings):
    if not ceilings:
        return []
    lines = ["#### Arithmetic ceilings of this CPU (measured)", ""]
    if "error" in ceilings:
        return lines + [f"Not measured: {ceilings['error']}.", ""]
    lines += [
        "Register-only loops of the instructions float32 and int8 matrix "
        "multiplies are made of on AVX2 (`benchmarks/cpu_peak.c`, one copy "
        "per core at once, best of 5): no GEMM on these cores can beat "
        "them. GMAC/s = 10^9 multiply-adds per second.",
        "",
        "| instruction sequence | "
        + " | ".join(f"{t} core(s) GMAC/s" for t in ceilings["per_threads"])
        + " |",
        "|---|" + "---|" * len(ceilings["per_threads"]),
    ]
    for kernel, label in cpu_peak.LABELS.items():
        lines.append(f"| {label} | " + " | ".join(
            f"{rates[kernel] / 1e9:.1f}"
            for rates in ceilings["per_threads"].values()) + " |")
    one = next(iter(ceilings["per_threads"].values()))
    lines += ["", f"- The densest int8 sequence retires "
              f"{one['maddubs_u8s8'] / one['fma_f32']:.2f}x the float32 "
              "multiply-adds of the FMA units, so a compute-bound int8 "
              "matmul can be at most that much faster than a float32 one "
              "that runs at the FMA ceiling.", ""]
    return lines


def _memory_markdown(memory_result):
    lines = ["### Peak resident memory", "",
             "| process | peak RSS MiB |", "|---|---|"]
    for backend in ("tensorflow", "jax"):
        record = memory_result.get(f"train_{backend}")
        if record:
            lines.append(f"| training run, {backend} backend "
                         f"({record['epochs']} epochs + evaluate) | "
                         f"{record['peak_rss_mb']:.0f} |")
    record = memory_result.get("litert_runtime")
    if record:
        lines.append(
            "| LiteRT runtime (`export/litert_vae.py`, int8 file, batch 1 "
            f"and 256; TensorFlow imported: {record['tensorflow_imported']})"
            f" | {record['peak_rss_mb']:.0f} |")
        lines.append("| the same process before loading the file (Python, "
                     "numpy, LiteRT) | "
                     f"{record['import_only_peak_rss_mb']:.0f} |")
    return lines + [""]


def _scaling_markdown(result):
    lines = [
        "### Scaling",
        "",
        f"keras-vae default `fit`, {result['epochs']} epochs per run; "
        "`fit` chooses XLA for runs long enough "
        "(`keras_vae.vae.XLA_MIN_STEPS` steps) or whose program is in the "
        "XLA cache, hence the XLA column. ![scaling](scaling.png)",
        "",
        "| training images | batch | s/epoch | images/s | first-epoch "
        "extra s | XLA |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["dataset_size"] + result["batch_size"]:
        lines.append(
            f"| {row['train_size']} | {row['batch_size']} | "
            f"{row['seconds_per_epoch']:.3f} | "
            f"{row['samples_per_second']:.0f} | "
            f"{row['first_epoch_extra_seconds']:.1f} | "
            f"{'yes' if row['jit_compile'] else 'no'} |")
    return lines + [""]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings (the smoke test)")
    parser.add_argument("--out-dir", default=_common.BENCH_DIR)
    args = parser.parse_args(argv)
    run(args.quick, args.out_dir)


if __name__ == "__main__":
    main()
