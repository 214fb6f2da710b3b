import json
import os
import threading

import numpy as np
import pytest

from keras_vae import cli, training


@pytest.fixture
def no_training(monkeypatch):
    """Fails the test if a run gets as far as loading its data."""

    def load(*args, **kwargs):
        raise AssertionError("the run started although it should be refused")

    monkeypatch.setattr(training.datasets, "load", load)


def test_train_command_writes_pngs_model_and_report(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "run")
    # While this run holds its output folder (paused after claiming it), a
    # second run into the same folder is refused and writes nothing.
    real_load = training.datasets.load
    claimed, release = threading.Event(), threading.Event()

    def paused_load(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            claimed.set()
            release.wait()
        return real_load(*args, **kwargs)

    monkeypatch.setattr(training.datasets, "load", paused_load)
    results = []
    first = threading.Thread(target=lambda: results.append(cli.main(
        ["train", "--dataset", "digits", "--epochs", "2", "--latent-dim", "2",
         "--output-dir", out])))
    first.start()
    while not claimed.wait(0.05):
        assert first.is_alive(), "the first run ended before training"
    assert cli.main(["train", "--dataset", "digits", "--epochs", "1",
                     "--output-dir", out, "--overwrite"]) == 2
    assert "Another keras-vae process is writing" in capsys.readouterr().err
    assert os.listdir(out) == [".keras-vae.lock"]
    release.set()
    first.join()
    assert results == [0]
    report = json.load(open(os.path.join(out, "report.json")))
    for name in ("reconstructions.png", "samples.png", "model.keras"):
        path = os.path.join(out, name)
        assert os.path.getsize(path) > 1000
    with open(os.path.join(out, "samples.png"), "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert report["negative_elbo"] == pytest.approx(-report["test"]["elbo"])
    assert "elbo=" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == sorted(training.RUN_FILES.values())
    # A second run must not overwrite the saved model silently.
    before = os.path.getmtime(os.path.join(out, "model.keras"))
    assert cli.main(["train", "--dataset", "digits", "--epochs", "1",
                     "--output-dir", out]) == 2
    assert "already exists" in capsys.readouterr().err
    assert os.path.getmtime(os.path.join(out, "model.keras")) == before


@pytest.mark.parametrize("arguments, message", [
    (["--learning-rate", "-1"], "--learning-rate: expected a number > 0"),
    (["--learning-rate", "0"], "--learning-rate: expected a number > 0"),
    (["--learning-rate", "nan"], "--learning-rate: expected a finite number"),
    (["--learning-rate", "inf"], "--learning-rate: expected a finite number"),
    (["--epochs", "0"], "--epochs: expected an integer >= 1"),
    (["--epochs", "-3"], "--epochs: expected an integer >= 1"),
    (["--batch-size", "0"], "--batch-size: expected an integer >= 1"),
    (["--latent-dim", "0"], "--latent-dim: expected an integer >= 1"),
    (["--dataset", "imagenet"], "Unknown data set"),
])
def test_bad_arguments_are_refused_before_training(
    tmp_path, capsys, no_training, arguments, message
):
    out = tmp_path / "run"
    status = cli.main(["train", *arguments, "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert status == 2
    assert "keras-vae: error:" in err and message in err
    assert "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("options, name", [
    (dict(epochs=0), "epochs"), (dict(batch_size=2.5), "batch_size"),
    (dict(latent_dim=True), "latent_dim"), (dict(learning_rate=-1e-3),
                                            "learning_rate"),
    (dict(learning_rate=float("nan")), "learning_rate"),
])
def test_train_and_report_checks_its_options_before_training(
    tmp_path, no_training, options, name
):
    with pytest.raises(ValueError, match=f"Received: {name}="):
        training.train_and_report(dataset="digits",
                                  output_dir=str(tmp_path / "run"), **options)
    assert not (tmp_path / "run").exists()


def test_output_folder_under_a_file_is_refused_before_training(
    tmp_path, capsys, no_training
):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    status = cli.main(["train", "--dataset", "digits",
                       "--output-dir", str(blocker / "run")])
    err = capsys.readouterr().err
    assert status == 2 and "keras-vae: error:" in err
    assert "is a file, not a folder" in err


def test_run_files_are_never_written_through_symbolic_links(
    tmp_path, capsys, no_training
):
    out = tmp_path / "run"
    out.mkdir()
    victim = tmp_path / "victim.json"
    victim.write_text("precious")
    (out / "report.json").symlink_to(victim)
    for extra in ([], ["--overwrite"]):
        status = cli.main(["train", "--dataset", "digits",
                           "--output-dir", str(out), *extra])
        err = capsys.readouterr().err
        assert status == 2 and "symbolic link" in err
    assert victim.read_text() == "precious"
    assert sorted(os.listdir(out)) == ["report.json"]


def test_files_of_an_earlier_run_are_not_replaced_without_overwrite(
    tmp_path, capsys, no_training
):
    out = tmp_path / "run"
    out.mkdir()
    (out / "samples.png").write_bytes(b"another run's samples")
    status = cli.main(["train", "--dataset", "digits", "--output-dir", str(out)])
    assert status == 2
    assert "samples.png already exists" in capsys.readouterr().err
    assert (out / "samples.png").read_bytes() == b"another run's samples"


def test_a_run_that_turns_non_finite_stops_with_exit_2_and_writes_nothing(
    tmp_path, capsys, monkeypatch
):
    # The command line trains with `StopOnNonFinite`: a KL that overflows
    # at the first step stops the run with the callback's message.
    build = training.BUILDERS["mlp"]

    def overflowing(*args, **kwargs):
        model = build(*args, **kwargs)
        layer = model.get_layer("encoder").get_layer("z_mean")
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel, np.full_like(bias, 1e20)])
        return model

    monkeypatch.setitem(training.BUILDERS, "mlp", overflowing)
    out = tmp_path / "run"
    status = cli.main(["train", "--dataset", "digits", "--epochs", "1",
                       "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert status == 2
    # One execution of several steps (the fast path is kept): its range.
    assert "keras-vae: error: Training stopped in the execution of steps 1-" in err
    assert "The weights from before step 1 were restored" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_an_unavailable_dataset_is_a_clear_error_not_a_traceback(
    tmp_path, capsys, monkeypatch
):
    from keras_vae.datasets import tfds_loader

    monkeypatch.setattr(tfds_loader, "network_reachable", lambda *a, **k: False)
    out = tmp_path / "run"
    status = cli.main(["train", "--dataset", "mnist", "--data-dir",
                       str(tmp_path / "tfds"), "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("keras-vae: error: Cannot load the data set 'mnist'")
    assert "no network access" in err and "--dataset mnist5k" in err
    assert "Traceback" not in err
    assert not out.exists()
