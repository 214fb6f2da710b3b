"""Architecture search: KerasTuner trials scored on quality and int8 cost.

Two trials on the 8x8 digits, one epoch each. The JAX run is in
tests/test_distillation.py (one subprocess for every new module).
"""

import json
import os

import keras_tuner
import numpy as np
import pytest

import keras_vae
from keras_vae import cli
from keras_vae import search as search_module
from keras_vae.search import VAEHyperModel, dominating, pareto_front


@pytest.fixture(scope="module")
def digits_split():
    (x, _), (x_test, _) = keras_vae.datasets.load("digits")
    return x, x_test[:120]


@pytest.fixture(scope="module")
def two_trials(digits_split, tmp_path_factory):
    x, x_test = digits_split
    directory = str(tmp_path_factory.mktemp("search"))
    space = VAEHyperModel((8, 8, 1), latent_dims=(2, 4), mlp_depths=(1, 2),
                          mlp_widths=(8, 16))
    result = keras_vae.search.search(
        x, x_test, hypermodel=space, max_trials=2, epochs=1,
        directory=directory, project_name="digits", latency_runs=50,
        calibration_samples=50, verbose=0)
    return space, directory, result


def test_search_scores_each_trial_on_quality_and_int8_cost(two_trials):
    _, _, result = two_trials
    assert [r["trial_id"] for r in result.trials] == ["0", "1"]
    for record in result.trials:
        assert record["architecture"].startswith("mlp 64-")
        assert 0 < record["negative_elbo"] < 64 * 0.7 + 20
        assert record["params"] > 0 and record["tflite_bytes"] > 1000
        assert record["latency_us"] > 0 and record["latency_wall_us"] > 0
        with open(record["tflite_path"], "rb") as handle:
            assert handle.read(8)[4:8] == b"TFL3"
        model = result.load_model(record["trial_id"])
        assert model.count_params() == record["params"]
    assert result.objectives == ("negative_elbo", "params", "latency_us")
    # The front holds exactly the trials no other trial dominates.
    for record in result.trials:
        beaten = dominating(result.trials, record, result.objectives)
        assert (record in result.front) == (not beaten)


def test_search_resumes_and_stops_at_its_time_budget(two_trials,
                                                     digits_split):
    space, directory, result = two_trials
    x, x_test = digits_split
    # Same project: the finished trials are kept, not run again; with no
    # minutes left no new trial starts although more trials are allowed.
    again = keras_vae.search.search(
        x, x_test, hypermodel=space, max_trials=5, max_minutes=0,
        epochs=1, directory=directory, project_name="digits", verbose=0)
    assert again.trials == result.trials


def test_hypermodel_builds_each_builder_from_its_hyperparameters():
    space = VAEHyperModel((8, 8, 1), kinds=("mlp", "conv"), latent_dims=(3,),
                          mlp_depths=(2,), mlp_widths=(16,), conv_depths=(2,),
                          conv_filters=(4,), decoder_blocks=("upsample",))
    hp = keras_tuner.HyperParameters()
    hp.Choice("model", ["conv"])
    model = space.build(hp)
    assert keras_vae.search.describe(model) == "conv 64-c4-c4-3"
    assert "decoder_upsample_0" in [layer.name for layer in
                                    model.decoder.layers]
    hp = keras_tuner.HyperParameters()
    hp.Choice("model", ["mlp"])
    assert keras_vae.search.describe(space.build(hp)) == "mlp 64-16-16-3"
    with pytest.raises(ValueError, match="kinds"):
        VAEHyperModel((8, 8, 1), kinds=("rnn",))
    with pytest.raises(ValueError, match="images"):
        VAEHyperModel((30,), kinds=("conv",))


def test_learning_rate_is_a_hyperparameter_only_when_several_are_given():
    fixed = VAEHyperModel((8, 8, 1), latent_dims=(2,), mlp_depths=(1,),
                          mlp_widths=(8,), learning_rate=2e-3)
    hp = keras_tuner.HyperParameters()
    model = fixed.build(hp)
    assert "learning_rate" not in hp.values
    np.testing.assert_allclose(
        float(model.optimizer.learning_rate), 2e-3, rtol=1e-6)
    space = VAEHyperModel((8, 8, 1), latent_dims=(2,), mlp_depths=(1,),
                          mlp_widths=(8,), learning_rate=(1e-3, 3e-3))
    hp = keras_tuner.HyperParameters()
    hp.Choice("learning_rate", [3e-3])
    model = space.build(hp)
    np.testing.assert_allclose(
        float(model.optimizer.learning_rate), 3e-3, rtol=1e-6)
    # numpy scalars are numbers too.
    space = VAEHyperModel((8, 8, 1), learning_rate=(np.float32(2e-3), 1e-3))
    np.testing.assert_allclose(space.learning_rates, (2e-3, 1e-3), rtol=1e-6)
    for bad in (0.0, -1e-3, float("nan"), (), (1e-3, "fast"), True):
        with pytest.raises(ValueError, match="learning_rate"):
            VAEHyperModel((8, 8, 1), learning_rate=bad)


def test_pareto_front_keeps_the_non_dominated_records():
    records = [
        {"id": "a", "q": 100.0, "params": 10, "latency": 5.0},
        {"id": "b", "q": 90.0, "params": 20, "latency": 6.0},
        {"id": "c", "q": 110.0, "params": 30, "latency": 7.0},  # beaten by a
        {"id": "d", "q": 100.0, "params": 10, "latency": 4.0},  # beats a
        {"id": "e", "q": None, "params": 1, "latency": 1.0},    # unmeasured
    ]
    front = pareto_front(records, ("q", "params", "latency"))
    assert [r["id"] for r in front] == ["d", "b"]
    reference = {"q": 100.0, "params": 20, "latency": 6.0}
    assert [r["id"] for r in dominating(records, reference,
                                        ("q", "params", "latency"))] == [
        "a", "b", "d"]


def test_pareto_plot_is_a_png_with_the_reference(tmp_path):
    records = [{"negative_elbo": 30.0 + i, "params": 1000 * (5 - i),
                "latency_us": 10.0 - i, "architecture": f"mlp {i}"}
               for i in range(5)]
    path = keras_vae.plotting.pareto(
        records, str(tmp_path / "pareto.png"),
        reference={"negative_elbo": 31.0, "params": 6000,
                   "latency_us": 12.0, "architecture": "default"})
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="No record"):
        keras_vae.plotting.pareto([{"params": 1}], str(tmp_path / "x.png"))


def test_search_command_writes_report_and_pareto_plot(tmp_path, monkeypatch):
    # A two-value space keeps the command small; the CLI builds the rest.
    original = search_module.VAEHyperModel

    def small(input_shape, kinds, learning_rate, seed):
        return original(input_shape, kinds=kinds, latent_dims=(2,),
                        mlp_depths=(1,), mlp_widths=(8,),
                        learning_rate=learning_rate, seed=seed)

    monkeypatch.setattr(search_module, "VAEHyperModel", small)
    out = str(tmp_path / "run")
    assert cli.main([
        "search", "--dataset", "digits", "--max-trials", "1", "--epochs",
        "1", "--learning-rates", "2e-3", "--output-dir", out]) == 0
    report = json.load(open(os.path.join(out, "report.json")))
    assert [r["architecture"] for r in report["trials"]] == ["mlp 64-8-2"]
    np.testing.assert_allclose(report["trials"][0]["learning_rate"], 2e-3,
                               rtol=1e-6)
    assert report["default"]["architecture"] == "mlp 64-512-256-16"
    # A 64-8-2 model has fewer parameters and runs faster than the default.
    trial = report["trials"][0]
    assert trial["params"] < report["default"]["params"]
    assert report["dominating_default"] == (
        ["0"] if trial["negative_elbo"] <= report["default"]["negative_elbo"]
        and trial["latency_us"] < report["default"]["latency_us"] else [])
    with open(os.path.join(out, "pareto.png"), "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert np.isfinite(trial["negative_elbo"])
