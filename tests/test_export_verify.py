"""`verify` measures a `.tflite` file against Keras and refuses bad files."""

import os

import keras
import numpy as np
import pytest

import keras_vae
from keras_vae.export import (
    VerificationError,
    read_tflite,
    set_metadata,
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


@pytest.mark.parametrize("tolerances", [
    {"max_abs_error": float("nan")},
    {"max_abs_error": {"decode": float("nan")}},
    {"max_abs_error": -0.1},
    {"max_abs_error": "0.1"},
    {"max_abs_error": {"sample": 0.1}},
    {"max_nll_delta_pct": float("nan")},
])
def test_nan_or_meaningless_tolerances_are_refused(setup, tolerances):
    model, x, paths, _ = setup
    name = next(iter(tolerances))
    with pytest.raises(ValueError, match=f"Received: {name}") as info:
        verify(paths["int8"], model, x, **tolerances)
    assert not isinstance(info.value, VerificationError)


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


def test_one_flipped_byte_fails_the_checksum_even_within_tolerance(
    setup, tmp_path
):
    model, x, paths, _ = setup
    data = bytearray(open(paths["none"], "rb").read())
    kernel = keras.ops.convert_to_numpy(
        model.encoder.get_layer("encoder_dense_0").kernel)
    start = bytes(data).find(np.ascontiguousarray(kernel.T).tobytes())
    # The lowest mantissa bit of one weight: invisible in the outputs.
    data[start] ^= 0x01
    path = os.path.join(tmp_path, "flipped.tflite")
    with open(path, "wb") as handle:
        handle.write(bytes(data))
    with pytest.raises(VerificationError, match="checksum.*changed or damaged"):
        verify(path, model, x, max_abs_error=1e-4)


def test_float_file_labelled_int8_fails_naming_the_float_matmul(setup, tmp_path):
    model, x, paths, _ = setup
    data = open(paths["none"], "rb").read()
    # Relabelled on purpose, with a fresh checksum: only the ops can tell.
    mislabelled = set_metadata(
        data, dict(read_tflite(paths["none"]).metadata, quantization="int8"),
    )
    path = os.path.join(tmp_path, "mislabelled_int8.tflite")
    with open(path, "wb") as handle:
        handle.write(mislabelled)
    assert read_tflite(path).metadata["quantization"] == "int8"
    with pytest.raises(VerificationError, match="FULLY_CONNECTED .* float32"
                       ) as info:
        verify(path, model, x)
    assert "checksum" not in str(info.value)
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
    claims_all = set_metadata(
        data, dict(read_tflite(path).metadata, signatures=["encode", "decode"]),
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


def test_likelihoods_score_data_from_their_mean_as_from_their_params():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(4, 10)).astype("float32")
    params = rng.normal(size=(4, 10)).astype("float32") * 3
    for likelihood in (keras_vae.likelihoods.Bernoulli(),
                       keras_vae.likelihoods.Gaussian(initial_log_scale=-1.0)):
        expected = keras.ops.convert_to_numpy(
            likelihood.negative_log_prob(x, params))
        mean = keras.ops.convert_to_numpy(likelihood.mean(params))
        actual = keras.ops.convert_to_numpy(
            likelihood.negative_log_prob_from_mean(x, mean))
        np.testing.assert_allclose(actual, expected, rtol=1e-4)
    # Probabilities of exactly 0 and 1 give a finite, large cost.
    clipped = keras.ops.convert_to_numpy(
        keras_vae.likelihoods.Bernoulli().negative_log_prob_from_mean(
            np.ones((1, 2), "float32"), np.zeros((1, 2), "float32")))
    assert np.isfinite(clipped).all() and clipped[0] > 20
    with pytest.raises(NotImplementedError, match="negative_log_prob_from_mean"):
        keras_vae.likelihoods.Likelihood().negative_log_prob_from_mean(x, x)


def test_gaussian_conv1d_model_passes_the_shared_export_smoke_check(tmp_path):
    from model_checks import check_export_smoke

    x = np.random.default_rng(0).normal(size=(64, 32, 2)).astype("float32")
    model = keras_vae.models.conv1d_vae((32, 2), 4, filters=(8, 16), seed=0)
    model.compile(optimizer="adam")
    model.fit(x, epochs=1, verbose=0)
    report = check_export_smoke(model, x, str(tmp_path))
    # Gaussian NLL is taken from the mean output directly.
    assert report.keras_nll > 0 and abs(report.nll_delta_pct) < 2.0
    assert any(op.op == "TRANSPOSE_CONV" for op in report.file.ops)
