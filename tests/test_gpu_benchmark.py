"""`benchmarks/gpu.py`: keras-vae on JAX against PyTorch, same model and ELBO.

The benchmark is written for a GPU machine (JAX and PyTorch, no
TensorFlow); its tiny settings run here on the CPU so that it cannot rot.
The GPU test skips cleanly without a GPU.
"""

import os
import shutil
import sys

import pytest

BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCH_DIR)

import gpu


def _torch_installed():
    # PyTorch comes with the `bench` extra only.
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _gpu_present():
    return shutil.which("nvidia-smi") is not None and os.path.exists(
        "/dev/nvidia0")


def _frameworks():
    if _torch_installed():
        return ["keras_vae_jax", "torch_eager", "torch_compile"]
    return ["keras_vae_jax"]


@pytest.fixture(scope="module")
def quick_run():
    # keras-vae only (with the PyTorch parity check when PyTorch is
    # installed); timing PyTorch is the slow test below.
    return gpu.benchmark(quick=True, frameworks=["keras_vae_jax"],
                         log=lambda *args: None)


def _check_rows(result, frameworks):
    rows = result["rows"]
    settings = gpu._settings(quick=True)
    expected = {(framework, model, batch)
                for framework in frameworks for model in gpu.MODELS
                for batch in settings["batches"]}
    assert {(r["framework"], r["model"], r["batch_size"]) for r in rows} == (
        expected)
    for row in rows:
        if row["framework"] == "torch_compile" and "error" in row:
            continue  # torch.compile needs a C++ compiler on the CPU
        assert row["images_per_second"] > 0, row
    table = "\n".join(gpu.to_markdown(result))
    assert all(framework in table for framework in frameworks)
    return rows


def test_gpu_benchmark_times_keras_vae_on_cpu(quick_run):
    rows = _check_rows(quick_run, ["keras_vae_jax"])
    assert all(r["device"] == "cpu" for r in rows)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("RUN_SLOW") != "1" or not (
    _torch_installed()), reason="times PyTorch eager and torch.compile "
                                "(minutes on a CPU); set RUN_SLOW=1")
def test_gpu_benchmark_times_pytorch_eager_and_compiled_on_cpu():
    frameworks = ["torch_eager", "torch_compile"]
    result = gpu.benchmark(quick=True, frameworks=frameworks,
                           log=lambda *args: None)
    rows = _check_rows(result, frameworks)
    assert all(r["device"] == "cpu" for r in rows if "error" not in r)


@pytest.mark.skipif(not _torch_installed(), reason="PyTorch not installed")
def test_pytorch_module_with_the_keras_weights_has_the_same_elbo(quick_run):
    rows = [r for r in quick_run["rows"] if r["framework"] == "keras_vae_jax"]
    for model in gpu.MODELS:
        parity = [r["parity_nats"] for r in rows if r["model"] == model]
        assert parity and parity[0] is not None
        # The ELBO of a fresh model is a few hundred nats per image.
        assert parity[0] < 1e-3, (model, parity[0])


@pytest.mark.skipif(not _gpu_present(), reason="no GPU on this machine")
def test_gpu_benchmark_runs_on_the_gpu():
    result = gpu.benchmark(quick=True, frameworks=_frameworks(),
                           log=lambda *args: None)
    for row in result["rows"]:
        if row["framework"] == "keras_vae_jax":
            assert row["device"] == "gpu"
        elif "error" not in row:
            assert row["device"] == "cuda"
