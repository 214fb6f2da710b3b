"""The Colab tutorials: in sync with their sources, and every cell runs.

The notebooks in `colab/` are generated from jupytext sources by
`colab/generate.py`. These tests regenerate them and compare, then execute
each notebook with nbclient on a Python kernel of this interpreter, with
`KERAS_VAE_FAST=1` (tiny data, one or two epochs), and fail on any cell
error.
"""

import importlib.util
import json
import os
import pathlib
import sys

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
COLAB = ROOT / "colab"
NOTEBOOKS = (
    "01_quickstart",
    "02_compress_and_deploy",
    "03_anomaly_detection",
    "04_distill_and_search",
    "05_vae_as_a_compressor",
)
BADGE = (
    "https://colab.research.google.com/github/keras-vae/keras-vae/blob/main/"
    "colab/{name}.ipynb"
)
# Seconds a cell (or the kernel start) may take before the test fails: a
# safety net against a hung kernel, far above any real run, so that a
# loaded machine is never mistaken for a failure.
CELL_TIMEOUT = 1800


def _generate_module():
    spec = importlib.util.spec_from_file_location("colab_generate", COLAB / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_tutorial_has_a_source_and_a_generated_notebook():
    generate = _generate_module()
    assert [source.stem for source in generate.sources()] == list(NOTEBOOKS)
    for name in NOTEBOOKS:
        assert (COLAB / f"{name}.ipynb").is_file(), (
            f"colab/{name}.ipynb is missing; run `python colab/generate.py`"
        )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_generated_notebook_matches_its_source(name):
    generate = _generate_module()
    expected = generate.render(COLAB / f"{name}.py")
    actual = (COLAB / f"{name}.ipynb").read_text(encoding="utf-8")
    assert actual == expected, (
        f"colab/{name}.ipynb is out of date with colab/{name}.py; "
        "run `python colab/generate.py`"
    )


def test_generate_check_flags_a_stale_notebook(tmp_path, monkeypatch):
    generate = _generate_module()
    source = tmp_path / "01_demo.py"
    source.write_text("# %% [markdown]\n# # Demo\n\n# %%\nprint(1)\n")
    monkeypatch.setattr(generate, "COLAB_DIR", tmp_path)
    monkeypatch.setattr(
        generate, "sources", lambda directory=tmp_path: [source]
    )
    assert generate.main(["--check"]) == 1  # no notebook yet
    assert generate.main([]) == 0
    assert generate.main(["--check"]) == 0
    source.write_text(source.read_text() + "\n# %%\nprint(2)\n")
    assert generate.main(["--check"]) == 1


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_has_badge_colab_only_install_and_no_outputs(name):
    notebook = nbformat.read(COLAB / f"{name}.ipynb", as_version=4)
    assert BADGE.format(name=name) in notebook.cells[0].source
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    first = code_cells[0].source
    assert 'if "google.colab" in sys.modules:' in first
    assert "pip" in first and "install" in first
    # Nothing outside the Colab branch installs anything.
    for cell in code_cells[1:]:
        assert "pip" not in cell.source, cell.source[:200]
    for cell in code_cells:
        assert cell.outputs == [] and cell.execution_count is None


@pytest.fixture
def fast_environment(tmp_path, monkeypatch):
    # The kernel inherits this process's environment.
    monkeypatch.setenv("KERAS_VAE_FAST", "1")
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    # Figures go through the inline backend, as on Colab (conftest sets Agg).
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.delenv("KERAS_VAE_DATASET", raising=False)
    monkeypatch.delenv("KERAS_VAE_ANOMALY_CLASS", raising=False)
    return tmp_path


def _execute(name, output_dir, monkeypatch):
    monkeypatch.setenv("KERAS_VAE_OUTPUT_DIR", str(output_dir))
    notebook = nbformat.read(COLAB / f"{name}.ipynb", as_version=4)
    # "python3" is ipykernel's own spec: jupyter_client starts it with
    # sys.executable, i.e. this interpreter and its installed packages.
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        startup_timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(COLAB)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    with open(output_dir / "results.json") as handle:
        return notebook, json.load(handle)


def _images_shown(notebook):
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells if cell.cell_type == "code"
        for output in cell.outputs
    )


def test_quickstart_runs_in_fast_mode(fast_environment, monkeypatch):
    notebook, results = _execute("01_quickstart", fast_environment, monkeypatch)
    # Training curve, reconstructions, samples, latent scatter, traversal.
    assert _images_shown(notebook) == 5
    assert results["fast"] is True and results["epochs"] == 2
    # IWAE is a tighter bound than the ELBO; both are finite nats per image.
    assert 0 < results["iwae_nll"] < results["negative_elbo"] < 784 * 0.7
    assert 0 < results["active_units"] <= results["latent_dim"]
    assert results["reload_max_abs_difference"] < 1e-5
    for png in ("reconstructions", "samples", "latent_scatter", "latent_traversal"):
        assert (fast_environment / f"{png}.png").stat().st_size > 0


def test_compress_and_deploy_runs_in_fast_mode(fast_environment, monkeypatch):
    notebook, results = _execute(
        "02_compress_and_deploy", fast_environment, monkeypatch
    )
    assert _images_shown(notebook) == 2  # trade-off plot, device samples
    assert results["kernel_sparsity_after_qat"] >= 0.8 - 1e-3
    assert results["kernel_sparsity"] >= 0.8 - 1e-3
    files = {row["variant"]: row for row in results["files"]}
    assert list(files) == [
        "float32", "int8 PTQ", "80% pruned, int8 PTQ", "80% pruned + QAT, int8"
    ]
    float_file, pruned_file = files["float32"], files["80% pruned, int8 PTQ"]
    # int8 is about 4x smaller than float32; pruned zeros compress.
    assert files["int8 PTQ"]["bytes"] < 0.3 * float_file["bytes"]
    assert pruned_file["gzip_bytes"] < 0.5 * files["int8 PTQ"]["gzip_bytes"]
    for row in results["files"]:
        assert row["latency_median_us"] > 0 and row["throughput_per_s"] > 0
        assert abs(row["verify_nll_delta_pct"]) < 5.0
    assert (fast_environment / "tradeoff.png").stat().st_size > 0
    assert (fast_environment / "device_samples.npy").is_file()


def test_anomaly_detection_runs_in_fast_mode(fast_environment, monkeypatch):
    notebook, results = _execute(
        "03_anomaly_detection", fast_environment, monkeypatch
    )
    # Score histogram and ROC, per-class scores, most anomalous images.
    assert _images_shown(notebook) == 3
    assert results["anomaly_class"] == 7
    assert 0 < results["num_anomalies"] < results["num_test"]
    for model in ("keras", "int8_litert"):
        for row in results[model].values():
            assert 0.0 <= row["roc_auc"] <= 1.0
            assert 0.0 <= row["false_alarm_rate"] <= 0.5
    # The int8 file ranks the images almost as the float model does.
    assert results["agreement"]["spearman"] > 0.9
    assert (fast_environment / "most_anomalous.png").stat().st_size > 0


def test_vae_as_a_compressor_runs_in_fast_mode(fast_environment, monkeypatch):
    notebook, results = _execute(
        "05_vae_as_a_compressor", fast_environment, monkeypatch
    )
    assert _images_shown(notebook) == 2  # rate-distortion, reconstructions
    assert results["fast"] is True and results["epochs"] == 2
    for row in (results["binary"], results["levels"], results["int8_runtime"]):
        assert row["exact"] is True
    # Bits-back pays at most about the negative ELBO. A barely trained model
    # has posteriors wider than the prior, which the equal-mass buckets
    # truncate: its stream can then cost less than its Gaussian ELBO.
    for row in (results["binary"], results["levels"]):
        assert 0.8 < row["bpp_net"] / row["negative_elbo_bpp"] < 1.05
    bits = [point["bits_per_image"] for point in results["lossy"]]
    assert bits == sorted(bits)  # finer grid, more bits
    assert set(results["errors"]) == {"corrupted byte", "truncated",
                                      "another model"}
    assert all(message != "decoded" for message in results["errors"].values())
    assert (fast_environment / "rate_distortion.png").stat().st_size > 0


def test_distill_and_search_runs_in_fast_mode(fast_environment, monkeypatch):
    notebook, results = _execute(
        "04_distill_and_search", fast_environment, monkeypatch
    )
    assert _images_shown(notebook) == 2  # learning curves, Pareto front
    assert results["fast"] is True and results["student_epochs"] == 2
    models = results["models"]
    assert models["distilled"]["params"] == models["alone"]["params"]
    assert models["distilled"]["params"] < 0.1 * models["teacher"]["params"]
    for row in models.values():
        assert row["iwae_nll"] < row["negative_elbo"] + 5
        assert row["kid_stderr"] > 0
    assert results["student_int8_bytes"] < 0.1 * results["teacher_int8_bytes"]
    assert abs(results["student_int8_nll_delta_pct"]) < 5.0
    assert results["search"]["trials"] == 2 and results["search"]["front"]


def test_notebook_kernel_is_this_interpreter():
    # jupyter_client replaces the spec's "python" with sys.executable; if it
    # stopped doing so, the notebooks would run on another Python.
    from jupyter_client.manager import KernelManager

    manager = KernelManager(kernel_name="python3")
    command = manager.format_kernel_cmd()
    assert os.path.realpath(command[0]) == os.path.realpath(sys.executable)
