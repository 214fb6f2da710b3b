"""`verify` measures a `.tflite` file against Keras and refuses bad files."""

import os

import keras
import numpy as np
import pytest

import keras_vae
from keras_vae.export import (
    VerificationError,
    flatbuffer,
    nll_from_mean,
    read_tflite,
    size_report,
    to_tflite,
    verify,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    (x, _), (x_test, _) = keras_vae.datasets.load("digits")
    keras.utils.set_random_seed(1)
    model = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(64,), seed=1)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(x[:1024], epochs=3, batch_size=64, verbose=0)
    directory = tmp_path_factory.mktemp("verify")
    paths = {}
    for mode in ("int8", "none"):
        paths[mode] = os.path.join(directory, f"{mode}.tflite")
        to_tflite(model, paths[mode], quantization=mode,
                  representative_data=x[:300])
    return model, x_test[:128], paths, directory


def test_report_has_errors_per_signature_and_nll_delta(setup):
    model, x, paths, _ = setup
    report = verify(paths["int8"], model, x)
    assert report.passed and report.failures == []
    outputs = {(e.signature, e.output) for e in report.errors}
    assert outputs == {("encode", "z_mean"), ("encode", "z_log_var"),
                       ("decode", "x_mean"), ("reconstruct", "x_mean")}
    for error in report.errors:
        assert 0.0 < error.mean_abs_error <= error.max_abs_error < 0.5
    # The Keras NLL is the model's own likelihood on its reconstruction.
    expected = np.mean(keras.ops.convert_to_numpy(model.likelihood.negative_log_prob(
        x, model.decoder(model.encode(x)[0]))))
    assert report.keras_nll == pytest.approx(float(expected), rel=1e-5)
    assert report.nll_delta == pytest.approx(report.tflite_nll - report.keras_nll)
    assert report.nll_delta_pct == pytest.approx(
        100 * report.nll_delta / report.keras_nll)
    assert report.quantization == "int8" and report.dtype_problems == []
    text = report.to_markdown()
    assert "| reconstruct | x_mean |" in text and "passed" in text


def test_tolerances_raise_with_the_report_attached(setup):
    model, x, paths, _ = setup
    with pytest.raises(VerificationError, match="max_abs_error=1e-06") as info:
        verify(paths["int8"], model, x, max_abs_error={"decode": 1e-6})
    report = info.value.report
    assert not report.passed
    assert report.max_abs_error("decode") > 1e-6
    assert isinstance(info.value, ValueError)
    # The float32 file passes a tolerance the int8 file cannot.
    verify(paths["none"], model, x, max_abs_error=1e-4, max_nll_delta_pct=0.01)
    with pytest.raises(VerificationError, match="max_nll_delta_pct=-1"):
        verify(paths["none"], model, x, max_nll_delta_pct=-1.0)


def test_file_of_another_model_fails(setup):
    model, x, paths, _ = setup
    other = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(64,), seed=7)
    with pytest.raises(VerificationError, match="reconstruct/x_mean"):
        verify(paths["none"], other, x, max_abs_error=0.05)


def test_corrupted_file_fails_with_a_clear_error(setup, tmp_path):
    model, x, paths, _ = setup
    data = bytearray(open(paths["int8"], "rb").read())
    truncated = os.path.join(tmp_path, "truncated.tflite")
    with open(truncated, "wb") as handle:
        handle.write(data[: len(data) // 3])
    with pytest.raises(ValueError, match="corrupt"):
        verify(truncated, model, x)
    garbage = os.path.join(tmp_path, "garbage.tflite")
    with open(garbage, "wb") as handle:
        handle.write(b"\x00" * 4 + b"XXXX" + bytes(data[8:200]))
    with pytest.raises(ValueError, match="TFL3"):
        verify(garbage, model, x)


def test_weights_corrupted_in_place_are_caught_by_the_comparison(setup, tmp_path):
    model, x, paths, _ = setup
    data = bytearray(open(paths["none"], "rb").read())
    # Scramble the stored first encoder kernel (FULLY_CONNECTED keeps it as
    # (units, inputs)): the file still parses and runs, so only the
    # numbers can tell.
    kernel = keras.ops.convert_to_numpy(
        model.encoder.get_layer("encoder_dense_0").kernel)
    stored = np.ascontiguousarray(kernel.T).tobytes()
    start = bytes(data).find(stored)
    assert start > 0
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, kernel.size).astype("float32").tobytes()
    data[start : start + len(stored)] = noise
    path = os.path.join(tmp_path, "scrambled.tflite")
    with open(path, "wb") as handle:
        handle.write(bytes(data))
    with pytest.raises(VerificationError, match="max abs error|non-finite"):
        verify(path, model, x, max_abs_error=0.01)


def test_float_file_labelled_int8_fails_naming_the_float_matmul(setup, tmp_path):
    model, x, paths, _ = setup
    data = open(paths["none"], "rb").read()
    mislabelled = flatbuffer.add_metadata(
        data, flatbuffer.METADATA_NAME,
        dict(read_tflite(paths["none"]).metadata, quantization="int8"),
    )
    path = os.path.join(tmp_path, "mislabelled_int8.tflite")
    with open(path, "wb") as handle:
        handle.write(mislabelled)
    assert read_tflite(path).metadata["quantization"] == "int8"
    with pytest.raises(VerificationError, match="FULLY_CONNECTED .* float32"):
        verify(path, model, x)
    # The caller's expectation overrides the metadata either way.
    with pytest.raises(VerificationError, match="expected int8"):
        verify(paths["none"], model, x, quantization="int8")
    verify(path, model, x, quantization="none")


def test_int8_file_checked_as_float_or_with_int8_io_fails(setup):
    model, x, paths, _ = setup
    with pytest.raises(VerificationError, match="expected float32"):
        verify(paths["int8"], model, x, quantization="none")
    with pytest.raises(VerificationError, match="int8_io=True"):
        verify(paths["int8"], model, x, int8_io=True)


def test_missing_signature_fails(setup, tmp_path):
    model, x, _, _ = setup
    path = os.path.join(tmp_path, "decode_only.tflite")
    to_tflite(model, path, quantization="none", signatures=("decode",))
    data = open(path, "rb").read()
    claims_all = flatbuffer.add_metadata(
        data, flatbuffer.METADATA_NAME,
        dict(read_tflite(path).metadata, signatures=["encode", "decode"]),
    )
    with open(path, "wb") as handle:
        handle.write(claims_all)
    with pytest.raises(VerificationError, match=r"\['encode'\] are missing"):
        verify(path, model, x)


def test_size_report_table_lists_bytes_gzip_and_op_dtypes(setup):
    _, _, paths, _ = setup
    report = size_report(paths["int8"])
    assert report.num_bytes == os.path.getsize(paths["int8"])
    assert 0 < report.gzip_bytes < report.num_bytes
    rows = {row[0]: row for row in report.op_table()}
    assert rows["FULLY_CONNECTED"][1] == "int8,int8,int32"
    assert rows["QUANTIZE"][1:3] == ("float32", "int8")
    text = report.to_markdown()
    assert f"{report.num_bytes:,} bytes" in text
    assert "| FULLY_CONNECTED | int8,int8,int32 | int8 |" in text


def test_bernoulli_nll_from_probabilities_matches_the_logit_form():
    likelihood = keras_vae.likelihoods.Bernoulli()
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(4, 10)).astype("float32")
    logits = rng.normal(size=(4, 10)).astype("float32") * 3
    expected = keras.ops.convert_to_numpy(likelihood.negative_log_prob(x, logits))
    actual = nll_from_mean(likelihood, x, 1 / (1 + np.exp(-logits)))
    np.testing.assert_allclose(actual, expected, rtol=1e-5)
    # Probabilities of exactly 0 and 1 give a finite, large cost.
    clipped = nll_from_mean(likelihood, np.ones((1, 2)), np.zeros((1, 2)))
    assert np.isfinite(clipped).all() and clipped[0] > 20


def test_gaussian_conv1d_model_passes_the_shared_export_smoke_check(tmp_path):
    from model_checks import check_export_smoke

    x = np.random.default_rng(0).normal(size=(64, 32, 2)).astype("float32")
    model = keras_vae.models.conv1d_vae((32, 2), 4, filters=(8, 16), seed=0)
    model.compile(optimizer="adam")
    model.fit(x, epochs=1, verbose=0)
    report = check_export_smoke(model, x, str(tmp_path))
    # Gaussian NLL is taken from the mean output directly.
    assert report.keras_nll > 0 and abs(report.nll_delta_pct) < 5.0
    assert any(op.op == "TRANSPOSE_CONV" for op in report.file.ops)
