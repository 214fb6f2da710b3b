"""KID and FID: values on known inputs, the offline feature network."""

import os

import numpy as np
import pytest

import keras_vae
from keras_vae import sample_quality
from keras_vae.sample_quality import fid_from_features, kid_from_features


@pytest.fixture
def feature_cache(tmp_path_factory, monkeypatch):
    """A cache folder holding the digits feature network (trained once)."""
    directory = str(tmp_path_factory.getbasetemp() / "keras_vae_cache")
    monkeypatch.setenv("KERAS_VAE_CACHE_DIR", directory)
    keras_vae.sample_quality.feature_network("digits")
    return directory


def test_kid_of_one_distribution_is_zero_within_two_standard_errors():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(2000, 8))
    score = kid_from_features(real, rng.normal(size=(2000, 8)))
    assert abs(score["kid"]) < 2 * score["stderr"]
    # Two halves of one sample, another seed: zero within the error too.
    halves = kid_from_features(real[:1000], real[1000:], seed=1)
    assert abs(halves["kid"]) < 2 * halves["stderr"]
    assert score["num_subsets"] == 10 and score["subset_size"] == [200, 200]


def test_kid_of_shifted_gaussians_matches_the_cubic_kernel_mmd():
    # 1-D features, kernel (ab + 1)^3: MMD^2 between N(0, 1) and N(m, 1) is
    # (E a^3 - E b^3)^2 + 3 (E a^2 - E b^2)^2 + 3 (E a - E b)^2.
    shift = 0.5
    expected = (shift**3 + 3 * shift) ** 2 + 3 * shift**4 + 3 * shift**2
    rng = np.random.default_rng(0)
    score = kid_from_features(rng.normal(size=(6000, 1)),
                              rng.normal(shift, 1.0, size=(6000, 1)))
    assert abs(score["kid"] - expected) < 3 * score["stderr"]
    assert score["stderr"] < 0.15 * expected


def test_fid_of_known_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(1000, 3))
    assert fid_from_features(a, a) == pytest.approx(0.0, abs=1e-9)
    # Shifting every feature by a constant adds exactly its squared norm.
    shift = np.array([1.0, -2.0, 0.5])
    assert fid_from_features(a, a + shift) == pytest.approx(5.25, rel=1e-9)
    # N(0, I) against N(m, 4 I): |m|^2 + sum (1 + 4 - 2 * 2) = |m|^2 + d.
    big = rng.normal(size=(200000, 3))
    other = rng.normal(size=(200000, 3)) * 2.0 + shift
    assert fid_from_features(big, other) == pytest.approx(5.25 + 3, rel=0.01)


def test_feature_network_is_cached_and_reloaded_without_training(
        feature_cache, monkeypatch):
    first = sample_quality.feature_network("digits")
    files = sorted(os.listdir(feature_cache))
    assert any(name.endswith(".keras") for name in files)
    assert any(name.endswith(".json") for name in files)
    # A new process reads the file: no training again.
    monkeypatch.setattr(sample_quality, "_LOADED", {})
    monkeypatch.setattr(sample_quality, "_train", pytest.fail)
    second = sample_quality.feature_network("digits")
    assert second.fingerprint == first.fingerprint
    assert 0.9 < second.test_accuracy <= 1.0
    x = np.random.default_rng(0).uniform(size=(5, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(sample_quality.features(second, x),
                               sample_quality.features(first, x), atol=1e-6)


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_VAE_CACHE_DIR", str(tmp_path / "mine"))
    assert sample_quality.cache_dir() == str(tmp_path / "mine")
    monkeypatch.delenv("KERAS_VAE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert sample_quality.cache_dir() == str(tmp_path / "xdg" / "keras_vae")


def test_kid_ranks_a_trained_models_samples_above_an_untrained_ones(
        feature_cache):
    (x, _), (x_test, _) = keras_vae.datasets.load("digits")
    half = len(x_test) // 2
    halves = keras_vae.metrics.kid(x_test[:half], x_test[half:])
    assert abs(halves["kid"]) < 2 * halves["stderr"]
    assert halves["feature_network"].startswith("sample_quality_digits_v1")
    scores = {}
    for epochs in (1, 10):
        model = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(32,),
                                         seed=0)
        model.compile(optimizer="adam")
        model.fit(x, epochs=epochs, batch_size=128, verbose=0)
        samples = np.asarray(model.sample(len(x_test), seed=0))
        scores[epochs] = keras_vae.metrics.kid(x_test, samples)
    gap = scores[1]["kid"] - scores[10]["kid"]
    error = np.hypot(scores[1]["stderr"], scores[10]["stderr"])
    assert gap > 3 * error


def test_scores_refuse_unknown_shapes_and_too_many_subsets():
    x = np.zeros((10, 5, 5, 1), "float32")
    with pytest.raises(ValueError, match="feature_network"):
        keras_vae.metrics.kid(x, x)
    score = keras_vae.metrics.fid(x, x + 0.5,
                                  feature_network=lambda b: b.reshape(len(b), -1))
    assert score["fid"] == pytest.approx(25 * 0.25)
    with pytest.raises(ValueError, match="num_subsets"):
        kid_from_features(np.zeros((10, 2)), np.zeros((10, 2)), num_subsets=6)
    with pytest.raises(ValueError, match="dataset"):
        sample_quality.feature_network("cifar10")
