"""keras_vae.plotting writes PNG files for plain and conditional models."""

import numpy as np
import pytest

import keras_vae
from keras_vae import plotting

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    """(width, height) of a PNG file, checked to be one."""
    import matplotlib.image

    with open(path, "rb") as handle:
        assert handle.read(8) == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.std() > 0.01, "the figure is blank"
    return image.shape[1], image.shape[0]


@pytest.fixture(scope="module")
def data():
    (x, y), _ = keras_vae.datasets.load("digits")
    return x[:120], y[:120]


@pytest.mark.parametrize("latent_dim", [1, 2, 5])
def test_latent_scatter_draws_the_latent_or_its_principal_components(
        data, latent_dim, tmp_path):
    x, y = data
    model = keras_vae.models.mlp_vae((8, 8, 1), latent_dim, hidden_units=(16,), seed=0)
    path = plotting.latent_scatter(model, x, str(tmp_path / "s.png"), labels=y)
    width, height = _png_size(path)
    assert width > 300 and height > 300
    # Without labels, one colour.
    _png_size(plotting.latent_scatter(model, x, str(tmp_path / "plain.png")))


def test_principal_components_explain_the_most_variance(rng):
    points = rng.normal(size=(500, 3)) * np.array([5.0, 0.1, 1.0])
    projected, explained = plotting._principal_components(points)
    assert projected.shape == (500, 2)
    assert explained[0] > 0.9 and explained[0] > explained[1]
    assert abs(np.corrcoef(projected[:, 0], points[:, 0])[0, 1]) > 0.99


def test_latent_traversal_has_one_row_per_swept_dimension(data, tmp_path):
    x, _ = data
    model = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(16,), seed=0)
    _, three_rows = _png_size(plotting.latent_traversal(
        model, str(tmp_path / "t3.png"), dims=[0, 1, 3], num_steps=5))
    _, one_row = _png_size(plotting.latent_traversal(
        model, str(tmp_path / "t1.png"), dims=[2], num_steps=5))
    assert three_rows > 2 * one_row
    _png_size(plotting.latent_traversal(model, str(tmp_path / "tx.png"), x=x, max_dims=2))
    with pytest.raises(ValueError, match="dims"):
        plotting.latent_traversal(model, str(tmp_path / "bad.png"), dims=[4])


def test_every_plot_works_for_a_cvae(data, tmp_path):
    x, y = data
    model = keras_vae.models.mlp_cvae((8, 8, 1), 10, 3, hidden_units=(16,), seed=0)
    paths = [
        plotting.reconstruction_grid(model, x, str(tmp_path / "r.png"), labels=y),
        plotting.sample_grid(model, str(tmp_path / "s.png")),
        plotting.sample_grid(model, str(tmp_path / "s7.png"), 8, labels=7),
        plotting.latent_scatter(model, x, str(tmp_path / "l.png"), labels=y),
        plotting.latent_traversal(model, str(tmp_path / "t.png"), x=x, labels=y),
        plotting.latent_traversal(model, str(tmp_path / "t0.png"), labels=0),
    ]
    for path in paths:
        _png_size(path)
    with pytest.raises(ValueError, match="labels"):
        plotting.reconstruction_grid(model, x, str(tmp_path / "no.png"))
    with pytest.raises(ValueError, match="labels"):
        plotting.latent_traversal(model, str(tmp_path / "no.png"))


def test_grids_of_a_plain_vae(data, tmp_path):
    x, _ = data
    model = keras_vae.models.conv_vae((8, 8, 1), 2, filters=(4,), seed=0)
    _png_size(plotting.reconstruction_grid(model, x, str(tmp_path / "nested" / "r.png")))
    _png_size(plotting.sample_grid(model, str(tmp_path / "s.png"), 16))


def test_demo_and_train_write_the_latent_plots(tmp_path):
    """`make demo` runs this job; it writes the latent PNGs."""
    import json
    import os

    from keras_vae import cli

    out = str(tmp_path / "run")
    assert cli.main(["train", "--dataset", "digits", "--epochs", "1",
                     "--latent-dim", "3", "--output-dir", out]) == 0
    report = json.load(open(os.path.join(out, "report.json")))
    for name in ("latent_scatter", "latent_traversal", "reconstructions", "samples"):
        assert report["files"][name] == os.path.join(out, f"{name}.png")
        _png_size(report["files"][name])
    assert 0 <= report["active_units"] <= 3
