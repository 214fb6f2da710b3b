"""A tiny run of the `make bench` code, so the benchmarks cannot rot.

Trains the real candidates for two short epochs on 256 images in this
process, times a tiny LiteRT file, runs the TensorFlow-free memory child,
and renders the Markdown report and the scaling plot.
"""

import json
import math
import os
import platform
import shutil
import subprocess
import sys

import numpy as np
import pytest

BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                         "benchmarks")
sys.path.insert(0, BENCH_DIR)

import _common
import cpu_peak
import infer_speed
import run as bench_run
import scaling
import train_speed


def _torch_installed():
    # PyTorch is reference (b) of `make bench` only (the `bench` extra);
    # `make test` installs `.[test,jax]` and never pulls it in.
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def train_records():
    records = []
    names = ["keras_vae", "reference_keras"]
    if _torch_installed():
        names.append("reference_torch")
    from keras_vae import _compilation_cache

    with pytest.MonkeyPatch.context() as patch:
        # Short fits use XLA when their program is in the user's XLA
        # cache; this smoke test pins down the rule for an empty one.
        patch.setattr(_compilation_cache, "compiled_before", lambda key: False)
        for name in names:
            records.append(_train_record(name))
    return records


def _train_record(name):
    record = train_speed.run_candidate(name, epochs=2, train_size=256)
    record["candidate"] = name
    record["repeat"] = 0
    return record


def test_every_training_candidate_trains_and_reports(train_records):
    for record in train_records:
        assert record["samples_per_second"] > 0, record
        assert len(record["epoch_seconds"]) == 2
        # One-sample test ELBO of a barely trained MNIST VAE: nats, finite.
        assert -600 < record["test_elbo"] < -50, record
    keras_vae = train_records[0]
    # A 16-step fit is far below the XLA threshold: no compile cost.
    assert keras_vae["jit_compile"] is False
    assert keras_vae["steps_per_execution"] == 32


def test_summary_gives_same_repeat_speedups(train_records):
    summary = train_speed.summarize(train_records)
    assert set(summary["keras_vae_speedup"]) == {
        r["candidate"] for r in train_records[1:]}
    ours = train_records[0]["samples_per_second"]
    theirs = train_records[1]["samples_per_second"]
    assert summary["keras_vae_speedup"]["reference_keras"]["median"] == (
        pytest.approx(ours / theirs))


def test_flops_per_image_counts_forward_and_backward_matmuls():
    forward = 784 * 512 + 512 * 256 + 256 * 32 + 16 * 256 + 256 * 512 + 512 * 784
    # Kernel gradients everywhere, input gradients but for the first layer.
    expected = 2 * (3 * forward - 784 * 512)
    assert train_speed.flops_per_image() == expected


@pytest.fixture(scope="module")
def tiny_int8(tmp_path_factory):
    import keras

    import keras_vae
    from keras_vae.export import to_tflite

    (x, _), _ = keras_vae.datasets.load("digits")
    keras.utils.set_random_seed(0)
    model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(16,), seed=0)
    path = str(tmp_path_factory.mktemp("bench") / "int8.tflite")
    to_tflite(model, path, quantization="int8", representative_data=x[:64],
              signatures=("reconstruct",))
    return path


def test_litert_timing_and_memory_child_without_tensorflow(tiny_int8):
    signature = infer_speed._litert_signature(tiny_int8, threads=1)
    runtime = infer_speed._runtime()
    row = runtime.benchmark_signature(signature, runs=50, throughput_runs=5,
                                      warmup=2)
    assert 0 < row["latency_median_us"] <= row["latency_p95_us"]
    assert row["throughput_per_s"] > 0
    record = _common.run_child("memory", ["--litert", tiny_int8], timeout=1800)
    assert record["tensorflow_imported"] is False
    assert record["peak_rss_mb"] >= record["import_only_peak_rss_mb"] > 0


def _fake_infer():
    stats = _common.summary
    table = {
        "tflite_float32": {"latency_median_us": stats([30.0]),
                           "latency_p95_us": stats([35.0]),
                           "throughput_per_s": stats([1e5])},
        "tflite_int8": {"latency_median_us": stats([7.0]),
                        "latency_p95_us": stats([8.0]),
                        "throughput_per_s": stats([4e5])},
        "tflite_plain_int8": {"latency_median_us": stats([7.2]),
                              "latency_p95_us": stats([8.0]),
                              "throughput_per_s": stats([4.1e5])},
        "torch_eager": {"latency_median_us": stats([100.0]),
                        "latency_p95_us": stats([120.0]),
                        "throughput_per_s": stats([2e4])},
    }
    info = {"cpu_flags": ["avx2"], "cpu_mhz": 2000.0}
    targets = infer_speed.ratios(table, 1000, 1, info)
    return table, targets


def test_inference_ratios_follow_the_export_targets():
    _, targets = _fake_infer()
    assert targets["int8_vs_float32_batch1"] == pytest.approx(30 / 7)
    assert targets["int8_vs_float32_batch256"] == pytest.approx(4.0)
    assert targets["int8_vs_torch_batch1"] == pytest.approx(100 / 7)
    assert targets["int8_slowdown_vs_plain_batch1_pct"] == pytest.approx(
        100 * (7.0 / 7.2 - 1))
    # 4e5 images/s x 1000 MACs x 2 ops over 2 GHz x 64 MACs x 2 ops.
    assert targets["int8_batch256_fraction_of_peak"] == pytest.approx(
        4e5 * 2000 / (2.0 * 64 * 2000e6))


def test_speed_ratios_are_taken_round_by_round():
    stats = _common.summary
    # Round 2 is slow for both candidates (load); its own ratio is still 4.
    table = {
        "tflite_float32": {"latency_median_us": stats([30.0, 90.0, 33.0]),
                           "throughput_per_s": stats([1e5, 0.5e5, 1e5])},
        "tflite_int8": {"latency_median_us": stats([10.0, 22.5, 10.0]),
                        "throughput_per_s": stats([2e5, 1e5, 2.2e5])},
    }
    targets = infer_speed.ratios(table, 1000, 1, {"cpu_flags": ["avx2"],
                                                  "cpu_mhz": 2000.0})
    assert targets["int8_vs_float32_batch1"] == pytest.approx(3.3)
    assert targets["int8_vs_float32_batch1_range"] == pytest.approx([3.0, 4.0])
    assert targets["int8_vs_float32_batch256"] == pytest.approx(2.0)
    assert targets["int8_vs_float32_batch256_range"] == pytest.approx([2.0, 2.2])
    # The ratio of the medians (30 / 10 = 3.0) is not what is reported.
    assert targets["int8_vs_float32_batch1"] != pytest.approx(3.0)


def test_int8_peak_is_the_measured_ceiling_when_there_is_one():
    table, _ = _fake_infer()
    ceilings = {"per_threads": {"1": {"fma_f32": 40e9, "madd_s16": 60e9,
                                      "maddubs_u8s8": 80e9}}}
    targets = infer_speed.ratios(table, 1000, 1, {"cpu_flags": ["avx2"],
                                                  "cpu_mhz": 2000.0},
                                 ceilings=ceilings)
    assert targets["int8_peak_measured"] is True
    assert targets["int8_peak_ops_per_s"] == pytest.approx(160e9)
    assert targets["int8_batch256_fraction_of_peak"] == pytest.approx(
        4e5 * 1000 * 2 / 160e9)
    # float32 at 1e5 images/s x 1000 MACs = 1e8 MAC/s of a 40e9 ceiling;
    # 3x in int8 asks 3e8 of the 80e9 int8 ceiling.
    assert targets["float32_batch256_fraction_of_fma_ceiling"] == (
        pytest.approx(1e8 / 40e9))
    assert targets["int8_needed_for_3x_over_best_int8_ceiling"] == (
        pytest.approx(3e8 / 80e9))
    markdown = "\n".join(bench_run._ceilings_markdown(ceilings))
    assert "| float32 `vfmadd231ps`" in markdown and "| 40.0 |" in markdown
    assert "retires 2.00x the float32" in markdown
    assert "Not measured: RuntimeError: no C compiler" in "\n".join(
        bench_run._ceilings_markdown({"error": "RuntimeError: no C compiler"}))


@pytest.mark.skipif(
    not (shutil.which("cc") or shutil.which("gcc"))
    or platform.machine().lower() not in ("x86_64", "amd64")
    or "avx2" not in (_common.machine_info().get("cpu_flags") or []),
    reason="the ceiling loops need a C compiler and an x86-64 AVX2 CPU")
def test_cpu_ceilings_are_measured_and_ordered():
    result = cpu_peak.measure(threads=(1,))
    assert "error" not in result, result
    rates = result["per_threads"]["1"]
    assert set(rates) == set(cpu_peak.KERNELS)
    # Any AVX2 core retires more than 1 GMAC/s of each, and `vpmaddubsw`
    # (32 multiply-adds) out-multiplies the 8-lane float FMA.
    assert min(rates.values()) > 1e9, rates
    assert rates["maddubs_u8s8"] > rates["fma_f32"], rates


def test_markdown_report_and_plot_come_from_the_results(train_records,
                                                        tmp_path):
    table, targets = _fake_infer()
    record = train_records[0]
    results = {
        "date": "2026-01-01T00:00:00+00:00",
        "command": "benchmarks/run.py --quick",
        "machine": _common.machine_info(),
        "load_average_at_start": [1.0, 1.0, 1.0],
        "train": {"epochs": 2, "repeats": 1, "batch_size": 128,
                  "train_size": 256, "records": train_records,
                  "failures": {"keras_vae_bf16": "TypeError: dtype"},
                  "summary": train_speed.summarize(train_records)},
        "infer": {"prepared": {"bytes": {"int8": 1024},
                               "macs_per_image": 1000},
                  "threads": {"1": {"table": table, "targets": targets}}},
        "memory": {"train_tensorflow": {"peak_rss_mb": 900.0, "epochs": 1},
                   "litert_runtime": {"peak_rss_mb": 60.0,
                                      "import_only_peak_rss_mb": 50.0,
                                      "tensorflow_imported": False}},
        "scaling": {"epochs": 2, "dataset_size": [
            scaling._row(record, train_size=256, batch_size=128),
            scaling._row(record, train_size=512, batch_size=128)],
            "batch_size": [scaling._row(record, train_size=256,
                                        batch_size=64)],
            "distributed": [
                {"name": "TF 1 device", "mode": "fused", "replicas": 1,
                 "backend": "tensorflow",
                 "images_per_second": 4000.0, "first_epoch_seconds": 3.0},
                {"name": "TF mirrored", "mode": "mirrored", "replicas": 2,
                 "backend": "tensorflow",
                 "images_per_second": 1000.0, "first_epoch_seconds": 5.0},
                {"name": "JAX 2 processes", "mode": "multi_process",
                 "backend": "jax",
                 "error": "RuntimeError: worker failed"}]},
    }
    markdown = bench_run.to_markdown(json.loads(json.dumps(results)))
    assert "keras-vae vs (a) Keras example" in markdown
    if _torch_installed():
        assert "keras-vae vs (b) PyTorch eager" in markdown
    assert ("int8 vs float32 LiteRT: 4.29x at batch 1 (4.29-4.29x over "
            "rounds), 4.00x at batch 256") in markdown
    assert "failed: TypeError: dtype" in markdown
    assert "| LiteRT runtime" in markdown
    # Devices and workers: images/s as a ratio to one device's default fit.
    assert "| TF mirrored | 2 | 1000 | 0.25x | 5.0 |" in markdown
    assert "| JAX 2 processes | - | failed: RuntimeError: worker failed" \
        in markdown
    png = scaling.plot(results["scaling"], str(tmp_path / "scaling.png"))
    with open(png, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert all(math.isfinite(r["samples_per_second"]) for r in train_records)
    np.testing.assert_array_less(0, [r["peak_rss_mb"] for r in train_records])


def test_cvae_row_states_its_verdict_against_keras_own_loop():
    def stats(value):
        return {"median": value, "min": value, "max": value}

    row = {"samples_per_second": stats(9000.0),
           "seconds_per_epoch": stats(0.444), "fit_seconds": stats(12.0),
           "first_epoch_extra_seconds": stats(3.0), "test_elbo": stats(-120.0)}
    result = {"epochs": 20, "repeats": 3, "target": 1.3,
              "candidates": {"cvae_keras_vae": row, "cvae_keras_loop": row},
              "speedup": stats(1.29), "fit_time_ratio": stats(1.5)}
    markdown = "\n".join(train_speed.cvae_markdown(result))
    assert "| keras-vae `fit` defaults" in markdown
    assert "| 9000 (9000-9000) | 0.444 (0.444-0.444) | 12.0 (12.0-12.0)" \
        in markdown
    assert "1.29x images/s (target >= 1.3x: **missed**)" in markdown
    result["speedup"] = stats(1.31)
    assert "**met**" in "\n".join(train_speed.cvae_markdown(result))


def test_make_bench_installs_torch_extra_and_runs_run_py():
    root = os.path.dirname(BENCH_DIR)
    with open(os.path.join(root, "Makefile")) as handle:
        makefile = handle.read()
    assert '".[test,jax,bench]"' in makefile
    assert "benchmarks/run.py" in makefile
    result = subprocess.run([sys.executable, os.path.join(BENCH_DIR, "run.py"),
                             "--help"], capture_output=True, text=True,
                            timeout=1800)
    assert result.returncode == 0 and "--quick" in result.stdout


def test_bench_extra_pins_the_cpu_torch_wheel_outside_install_requires():
    import configparser

    config = configparser.ConfigParser()
    config.read(os.path.join(os.path.dirname(BENCH_DIR), "setup.cfg"))
    assert "torch==2.13.0" in config["options.extras_require"]["bench"].split()
    assert "torch" not in config["options"]["install_requires"]
