import json
import os

import pytest

from keras_vae import cli


def test_train_command_writes_pngs_model_and_report(tmp_path, capsys):
    out = str(tmp_path / "run")
    status = cli.main(["train", "--dataset", "digits", "--epochs", "2",
                       "--latent-dim", "2", "--output-dir", out])
    assert status == 0
    report = json.load(open(os.path.join(out, "report.json")))
    for name in ("reconstructions.png", "samples.png", "model.keras"):
        path = os.path.join(out, name)
        assert os.path.getsize(path) > 1000
    with open(os.path.join(out, "samples.png"), "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert report["negative_elbo"] == pytest.approx(-report["test"]["elbo"])
    assert "elbo=" in capsys.readouterr().out
    # A second run must not overwrite the saved model silently.
    before = os.path.getmtime(os.path.join(out, "model.keras"))
    assert cli.main(["train", "--dataset", "digits", "--epochs", "1",
                     "--output-dir", out]) == 2
    assert "already exists" in capsys.readouterr().err
    assert os.path.getmtime(os.path.join(out, "model.keras")) == before
