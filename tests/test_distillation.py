"""Distillation: the Distiller trains a student from a frozen teacher.

Tiny models on the 8x8 digits. The JAX checks of distillation, search and
sample quality run in one subprocess at the end of this file.
"""

import json
import os

import keras
import numpy as np
import pytest
from backend_runner import run_with_backend

import keras_vae
from keras_vae import cli
from keras_vae.compression import Distiller, distill
from keras_vae.compression.distillation import gaussian_kl, output_divergence


@pytest.fixture
def feature_cache(tmp_path_factory, monkeypatch):
    """A cache folder holding the digits feature network (trained once)."""
    directory = str(tmp_path_factory.getbasetemp() / "keras_vae_cache")
    monkeypatch.setenv("KERAS_VAE_CACHE_DIR", directory)
    keras_vae.sample_quality.feature_network("digits")
    return directory


@pytest.fixture(scope="module")
def data():
    (x, y), (x_test, y_test) = keras_vae.datasets.load("digits")
    return x[:256], y[:256], x_test[:64], y_test[:64]


def _pair(latent=4, student_latent=None, seed=0):
    teacher = keras_vae.models.mlp_vae((8, 8, 1), latent, hidden_units=(32,),
                                       seed=seed)
    student = keras_vae.models.mlp_vae(
        (8, 8, 1), student_latent or latent, hidden_units=(8,), seed=seed + 1)
    return teacher, student


def _compiled(distiller, learning_rate=1e-2):
    distiller.compile(optimizer=keras.optimizers.Adam(learning_rate),
                      jit_compile=False)
    return distiller


def test_gaussian_kl_matches_the_closed_form_and_is_zero_at_a_match():
    rng = np.random.default_rng(0)
    mean_p, mean_q = rng.normal(size=(2, 5, 3)).astype("float32")
    log_var_p, log_var_q = rng.normal(size=(2, 5, 3)).astype("float32")
    var_p, var_q = np.exp(log_var_p), np.exp(log_var_q)
    expected = 0.5 * np.sum(
        np.log(var_q / var_p) + (var_p + (mean_p - mean_q) ** 2) / var_q - 1,
        axis=-1)
    actual = keras.ops.convert_to_numpy(
        gaussian_kl(mean_p, log_var_p, mean_q, log_var_q))
    np.testing.assert_allclose(actual, expected, rtol=1e-5)
    same = keras.ops.convert_to_numpy(
        gaussian_kl(mean_p, log_var_p, mean_p, log_var_p))
    np.testing.assert_allclose(same, 0.0, atol=1e-6)


def test_output_term_is_a_bernoulli_kl_or_a_squared_error():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 8, 8, 1)).astype("float32")
    other = rng.normal(size=(4, 8, 8, 1)).astype("float32")
    bernoulli = keras_vae.likelihoods.get("bernoulli")
    at_match = keras.ops.convert_to_numpy(
        output_divergence(bernoulli, logits, logits))
    np.testing.assert_allclose(at_match, 0.0, atol=1e-4)
    p, q = 1 / (1 + np.exp(-logits)), 1 / (1 + np.exp(-other))
    kl = np.sum(p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q)),
                axis=(1, 2, 3))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(
        output_divergence(bernoulli, logits, other)), kl, rtol=1e-4)
    gaussian = keras_vae.likelihoods.get("gaussian")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(
        output_divergence(gaussian, logits, other)),
        np.sum((logits - other) ** 2, axis=(1, 2, 3)), rtol=1e-5)


def test_one_step_trains_the_student_and_leaves_the_teacher_frozen(data):
    x = data[0]
    teacher, student = _pair()
    teacher_before = teacher.get_weights()
    student_before = [v.numpy() for v in student.trainable_variables]
    distiller = _compiled(Distiller(teacher, student, seed=0))
    assert len(distiller.trainable_variables) == len(
        student.trainable_variables)
    history = distiller.fit(x, epochs=1, batch_size=len(x), verbose=0)
    assert set(history.history) == {
        "loss", "elbo", "reconstruction_loss", "kl_loss", "posterior_loss",
        "output_loss"}
    assert all(np.isfinite(v[0]) for v in history.history.values())
    for before, after in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)
    changed = [not np.array_equal(b, a.numpy())
               for b, a in zip(student_before, student.trainable_variables)]
    assert changed and all(changed)


def test_distillation_loss_falls_and_distill_returns_the_trained_student(data):
    x, _, x_test, _ = data
    teacher, student = _pair()
    teacher.compile(optimizer=keras.optimizers.Adam(1e-2))
    teacher.fit(x, epochs=3, batch_size=32, verbose=0)
    distiller = _compiled(Distiller(teacher, student, seed=0))
    history = distiller.fit(x, epochs=4, batch_size=32, verbose=0,
                            validation_data=x_test)
    losses = history.history["loss"]
    assert losses[-1] < 0.8 * losses[0]
    assert history.history["val_output_loss"][-1] < history.history[
        "val_output_loss"][0]
    # The short form: same terms, the teacher's flag restored afterwards
    # (the Distiller above froze it).
    teacher.trainable = True
    other = _pair(seed=5)[1]
    assert distill(teacher, other, x, epochs=1, verbose=0) is other
    assert teacher.trainable


def test_distiller_saves_and_loads_exactly(data, tmp_path):
    x = data[0]
    teacher, student = _pair(latent=4, student_latent=2)
    distiller = _compiled(Distiller(teacher, student, generated_fraction=0.2,
                                    output_code="reconstruction", seed=3))
    distiller.fit(x, epochs=1, batch_size=64, verbose=0)
    path = str(tmp_path / "distiller.keras")
    keras_vae.files.save_model(distiller, path)
    restored = keras_vae.files.load_model(path)
    assert isinstance(restored, Distiller)
    assert json.dumps(restored.get_config(), sort_keys=True) == json.dumps(
        distiller.get_config(), sort_keys=True)
    for a, b in zip(distiller.weights, restored.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                      keras.ops.convert_to_numpy(b))
    assert not restored.teacher.trainable
    np.testing.assert_array_equal(
        np.asarray(restored.student.reconstruct(x[:8])),
        np.asarray(student.reconstruct(x[:8])))
    # Training on from both gives the same weights (up to float rounding in
    # the retraced step): the optimizer state and the noise generator's
    # state were restored too.
    for model in (distiller, restored):
        model.fit(x, epochs=1, batch_size=64, shuffle=False, verbose=0)
    for a, b in zip(distiller.student.get_weights(),
                    restored.student.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_distilled_student_with_another_latent_size_exports_to_int8(
        data, tmp_path):
    x, _, x_test, _ = data
    teacher, student = _pair(latent=4, student_latent=2)
    distill(teacher, student, x, epochs=2, batch_size=32,
            output_code="reconstruction", verbose=0)
    # The learned posterior map belongs to the Distiller: the student is a
    # plain VAE with its own variables only.
    assert not any("posterior_map" in v.path for v in student.weights)
    path = str(tmp_path / "student.tflite")
    keras_vae.export.to_tflite(student, path, representative_data=x)
    report = keras_vae.export.verify(path, student, x_test,
                                     max_nll_delta_pct=5.0)
    assert report.passed


def test_conditional_pair_distils_with_teacher_generated_examples(data):
    x, y = data[0], data[1]
    teacher = keras_vae.models.mlp_cvae((8, 8, 1), 10, 4, hidden_units=(16,),
                                        seed=0)
    students = []
    for fraction in (0.0, 0.5):
        student = keras_vae.models.mlp_cvae((8, 8, 1), 10, 4,
                                            hidden_units=(8,), seed=1)
        distiller = _compiled(Distiller(teacher, student, seed=0,
                                        generated_fraction=fraction))
        history = distiller.fit(x, y, epochs=1, batch_size=len(x), verbose=0)
        assert np.isfinite(history.history["loss"][0])
        students.append(student.trainable_variables[0].numpy())
    # The generated examples took part in the step.
    assert not np.array_equal(students[0], students[1])
    with pytest.raises(ValueError, match="class labels"):
        distiller.fit(x, epochs=1, verbose=0)


@pytest.mark.parametrize("change, message", [
    ({"student": "shape"}, "same data shape"),
    ({"student": "likelihood"}, "same likelihood"),
    ({"student": "conditional"}, "conditional"),
    ({"generated_fraction": 1.0}, "generated_fraction"),
    ({"output_code": "teacher", "student_latent": 2}, "equal latent sizes"),
    ({"temperature": 0.0}, "temperature"),
])
def test_mismatched_pairs_and_bad_weights_are_refused(change, message):
    change = dict(change)
    teacher, student = _pair(student_latent=change.pop("student_latent", None))
    kind = change.pop("student", None)
    if kind == "shape":
        student = keras_vae.models.mlp_vae((4, 4, 1), 4, hidden_units=(8,))
    elif kind == "likelihood":
        student = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(8,),
                                           likelihood="gaussian")
    elif kind == "conditional":
        student = keras_vae.models.mlp_cvae((8, 8, 1), 10, 4,
                                            hidden_units=(8,))
    with pytest.raises(ValueError, match=message):
        Distiller(teacher, student, **change)


def test_distill_command_writes_models_curves_and_report(tmp_path,
                                                         feature_cache):
    teacher = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(32,),
                                       seed=0)
    teacher_path = str(tmp_path / "teacher.keras")
    keras_vae.files.save_model(teacher, teacher_path)
    out = str(tmp_path / "run")
    assert cli.main([
        "distill", "--dataset", "digits", "--teacher", teacher_path,
        "--epochs", "2", "--student-hidden", "8", "--kid-samples", "100",
        "--output-dir", out]) == 0
    report = json.load(open(os.path.join(out, "report.json")))
    assert set(report["models"]) == {"teacher", "distilled", "scratch"}
    assert report["models"]["teacher"]["params"] == teacher.count_params()
    assert "teacher" not in report["files"]  # loaded, not trained here
    assert [p["steps"] for p in report["curves"]["distilled"]] == [12, 24]
    assert [p["steps"] for p in report["curves"]["scratch"]] == [12, 24]
    student = keras_vae.files.load_model(os.path.join(out, "student.keras"))
    assert student.count_params() == report["models"]["distilled"]["params"]
    assert report["models"]["distilled"]["kid"]["stderr"] > 0
    keras_vae.files.check_keras_file(os.path.join(out, "scratch_student.keras"))
    for name in ("learning_curve_steps.png", "learning_curve_seconds.png",
                 "student_samples.png"):
        with open(os.path.join(out, name), "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_distillation_search_and_sample_quality_work_on_jax(tmp_path,
                                                            feature_cache):
    output = run_with_backend(f"""
        import json, os
        os.environ["KERAS_VAE_CACHE_DIR"] = {feature_cache!r}
        import keras, numpy as np, keras_vae
        from keras_vae.compression import Distiller
        (x, y), (x_test, _) = keras_vae.datasets.load("digits")
        x = x[:256]
        result = {{}}

        teacher = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(32,),
                                           seed=0)
        student = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(8,),
                                           seed=1)
        before = teacher.get_weights()
        distiller = Distiller(teacher, student, generated_fraction=0.2, seed=0)
        distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
        history = distiller.fit(x, epochs=4, batch_size=32, verbose=0)
        result["losses"] = [float(v) for v in history.history["loss"]]
        result["teacher_unchanged"] = all(
            np.array_equal(a, b) for a, b in zip(before, teacher.get_weights()))
        path = os.path.join({str(tmp_path)!r}, "distiller.keras")
        distiller.save(path)
        restored = keras.saving.load_model(path)
        result["load_exact"] = all(
            np.array_equal(a, b)
            for a, b in zip(distiller.get_weights(), restored.get_weights()))
        for model in (distiller, restored):
            model.fit(x, epochs=1, batch_size=64, shuffle=False, verbose=0)
        result["resume_exact"] = all(
            np.allclose(a, b, atol=1e-6) for a, b in zip(
                distiller.student.get_weights(),
                restored.student.get_weights()))

        space = keras_vae.search.VAEHyperModel(
            (8, 8, 1), latent_dims=(2,), mlp_depths=(1,), mlp_widths=(8, 16))
        found = keras_vae.search.search(
            x, x_test, hypermodel=space, max_trials=2, epochs=1,
            directory={str(tmp_path)!r}, project_name="jax", litert=False,
            verbose=0)
        result["trials"] = [r["negative_elbo"] for r in found.trials]
        result["front"] = len(found.front)
        # On JAX a TensorFlow child process exports and times the model.
        costs = keras_vae.search.int8_costs(
            student, os.path.join({str(tmp_path)!r}, "int8"), x[:50],
            latency_runs=20)
        result["int8"] = [costs["tflite_bytes"], costs["latency_us"]]

        half = len(x_test) // 2
        result["kid"] = keras_vae.metrics.kid(x_test[:half], x_test[half:])
        result["fid"] = keras_vae.metrics.fid(x_test, x_test)["fid"]
        print(json.dumps(result))
    """)
    result = json.loads(output.strip().splitlines()[-1])
    assert result["losses"][-1] < 0.95 * result["losses"][0]
    assert result["teacher_unchanged"]
    assert result["load_exact"] and result["resume_exact"]
    assert len(result["trials"]) == 2 and result["front"] >= 1
    assert result["int8"][0] > 1000 and result["int8"][1] > 0
    assert all(np.isfinite(result["trials"]))
    kid = result["kid"]
    assert abs(kid["kid"]) < 2 * kid["stderr"]
    # The network trained and cached by the TensorFlow process was loaded.
    assert kid["feature_network"].startswith("sample_quality_digits_v1")
    assert result["fid"] == pytest.approx(0.0, abs=1e-6)
