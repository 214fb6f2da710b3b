"""`to_tflite` writes one checked LiteRT file with encode/decode/reconstruct."""

import os

import keras
import numpy as np
import pytest
from backend_runner import run_with_backend

import keras_vae
from keras_vae.export import (
    flatbuffer,
    read_tflite,
    to_tflite,
    verify,
)
from keras_vae.export import tflite as tflite_module


@pytest.fixture(scope="module")
def data():
    (x, _), (x_test, _) = keras_vae.datasets.load("digits")
    return x, x_test[:128]


@pytest.fixture(scope="module")
def trained(data):
    x, _ = data
    keras.utils.set_random_seed(0)
    model = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(64, 32), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(x[:1024], epochs=3, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def files(trained, data, tmp_path_factory):
    x, _ = data
    directory = tmp_path_factory.mktemp("export")
    infos = {}
    for mode in ("int8", "none"):
        path = os.path.join(directory, f"{mode}.tflite")
        infos[mode] = to_tflite(
            trained, path, quantization=mode, representative_data=x[:300]
        )
    return infos


def test_int8_file_has_three_signatures_all_int8_and_matches_keras(
    files, trained, data
):
    info = files["int8"]
    assert sorted(info.signatures) == ["decode", "encode", "reconstruct"]
    assert info.signatures["encode"]["outputs"] == {
        "z_mean": "float32", "z_log_var": "float32"
    }
    assert info.signatures["decode"]["inputs"] == {"z": "float32"}
    fully_connected = [op for op in info.ops if op.op == "FULLY_CONNECTED"]
    # encode: 2 hidden + 2 heads; decode: 3; reconstruct: 2 + z_mean + 3.
    assert len(fully_connected) == 13
    assert all(op.input_dtypes[:2] == ("int8", "int8") for op in fully_connected)
    assert flatbuffer.dtype_problems(info, "int8") == []
    assert info.metadata["quantization"] == "int8"
    assert info.metadata["latent_dim"] == 4
    # No random op: sampling happens on the host.
    assert not any("RANDOM" in op.op or "MULTINOMIAL" in op.op for op in info.ops)
    report = verify(info.path, trained, data[1], max_nll_delta_pct=2.0)
    assert abs(report.nll_delta_pct) < 2.0
    assert report.max_abs_error("reconstruct") < 0.1


def test_int8_weights_take_about_a_quarter_of_float32(files):
    int8_weights = sum(files["int8"].weight_bytes.values())
    float_weights = sum(files["none"].weight_bytes.values())
    assert files["int8"].weight_bytes["int8"] > 0.8 * int8_weights
    # int8 kernels plus int32 biases.
    assert 0.24 < int8_weights / float_weights < 0.3
    # Graph overhead weighs more in this tiny model than in the MNIST MLP
    # (26% there, see benchmarks/export_table.md).
    assert files["int8"].num_bytes < 0.5 * files["none"].num_bytes


def test_float32_file_matches_keras_to_float_precision(files, trained, data):
    report = verify(files["none"].path, trained, data[1], max_abs_error=1e-4)
    assert report.max_abs_error("encode") < 1e-4
    assert abs(report.nll_delta) < 1e-3


@pytest.mark.parametrize("mode", ["dynamic", "float16"])
def test_dynamic_and_float16_files_store_their_weight_dtype(
    mode, trained, data, tmp_path
):
    path = os.path.join(tmp_path, f"{mode}.tflite")
    info = to_tflite(trained, path, quantization=mode, signatures=("decode",))
    assert list(info.signatures) == ["decode"]
    expected = "int8" if mode == "dynamic" else "float16"
    assert info.weight_bytes[expected] > 0
    assert flatbuffer.dtype_problems(info, mode) == []
    # The same file is not a full-int8 file.
    assert flatbuffer.dtype_problems(info, "int8")
    report = verify(path, trained, data[1], max_abs_error=0.05)
    assert [e.signature for e in report.errors] == ["decode"]


def test_int8_io_stores_int8_tensors_with_scales(trained, data, files, tmp_path):
    x, x_test = data
    import tensorflow as tf

    path = os.path.join(tmp_path, "io.tflite")
    # Calibration data may also be a batched tf.data.Dataset of (x, y).
    dataset = tf.data.Dataset.from_tensor_slices((x[:300], x[:300])).batch(32)
    info = to_tflite(trained, path, representative_data=dataset, int8_io=True,
                     signatures=("reconstruct",))
    assert info.signatures["reconstruct"] == {
        "inputs": {"x": "int8"}, "outputs": {"x_mean": "int8"}
    }
    assert flatbuffer.dtype_problems(info, "int8", int8_io=True) == []
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=path).get_signature_runner("reconstruct")
    scale, zero_point = runner.get_output_details()["x_mean"]["quantization"]
    # A sigmoid output in [0, 1] gets the fixed 1/256 scale.
    assert scale == pytest.approx(1 / 256) and zero_point == -128
    report = verify(path, trained, x_test, max_nll_delta_pct=2.0)
    assert report.max_abs_error("reconstruct") < 0.1


def test_existing_file_is_kept_unless_overwrite(files, trained, tmp_path):
    path = files["none"].path
    before = open(path, "rb").read()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        to_tflite(trained, path, quantization="none")
    assert open(path, "rb").read() == before
    copy = os.path.join(tmp_path, "copy.tflite")
    with open(copy, "wb") as handle:
        handle.write(b"old")
    to_tflite(trained, copy, quantization="float16", overwrite=True,
              signatures=("decode",))
    assert read_tflite(copy).metadata["quantization"] == "float16"
    assert sorted(os.listdir(tmp_path)) == ["copy.tflite"]


def test_failed_export_leaves_no_file_and_no_temporary(
    trained, tmp_path, monkeypatch
):
    def broken(*args, **kwargs):
        raise RuntimeError("converter crashed")

    path = os.path.join(tmp_path, "model.tflite")
    monkeypatch.setattr(tflite_module, "_convert", broken)
    with pytest.raises(RuntimeError, match="converter crashed"):
        to_tflite(trained, path, quantization="none", signatures=("decode",))
    monkeypatch.undo()

    def disk_full(fd):
        raise OSError("disk full")

    # Fails after the temporary file is written, before it is moved.
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="disk full"):
        to_tflite(trained, path, quantization="none", signatures=("decode",))
    assert os.listdir(tmp_path) == []


def test_file_created_during_the_export_is_not_replaced(
    trained, tmp_path, monkeypatch
):
    path = os.path.join(tmp_path, "model.tflite")
    convert = tflite_module._convert

    def convert_while_someone_writes(*args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"someone else's file")
        return convert(*args, **kwargs)

    monkeypatch.setattr(tflite_module, "_convert", convert_while_someone_writes)
    with pytest.raises(FileExistsError, match="overwrite=False"):
        to_tflite(trained, path, quantization="none", signatures=("decode",))
    assert open(path, "rb").read() == b"someone else's file"
    assert os.listdir(tmp_path) == ["model.tflite"]


def test_bad_arguments_raise_value_errors_naming_them(trained, data, tmp_path):
    path = os.path.join(tmp_path, "m.tflite")
    with pytest.raises(ValueError, match="Received: quantization='int4'"):
        to_tflite(trained, path, quantization="int4")
    with pytest.raises(ValueError, match="representative_data=None"):
        to_tflite(trained, path, quantization="int8")
    with pytest.raises(ValueError, match="Received: signatures=\\('sample',\\)"):
        to_tflite(trained, path, quantization="none", signatures=("sample",))
    with pytest.raises(ValueError, match="int8_io=True, quantization='none'"):
        to_tflite(trained, path, quantization="none", int8_io=True)
    with pytest.raises(ValueError, match="representative_data"):
        to_tflite(trained, path, representative_data=data[0][:4, :4])
    with pytest.raises(ValueError, match="keras_vae.VAE"):
        to_tflite(trained.decoder, path, quantization="none")
    with pytest.raises(ValueError, match="Received: optimize_for='speed'"):
        to_tflite(trained, path, quantization="none", optimize_for="speed")
    with pytest.raises(ValueError, match="Received: path=None"):
        to_tflite(trained, None, quantization="none")
    nan_data = np.full((4, 8, 8, 1), np.nan, "float32")
    with pytest.raises(ValueError, match="NaN"):
        to_tflite(trained, path, representative_data=nan_data)
    conditional = keras_vae.models.mlp_cvae((8, 8, 1), num_classes=3,
                                            latent_dim=2, hidden_units=(8,))
    with pytest.raises(ValueError, match="representative_data=\\(x, y\\)"):
        to_tflite(conditional, path, representative_data=data[0][:8])
    assert os.listdir(tmp_path) == []


def test_destination_is_checked_before_any_conversion(
    trained, tmp_path, monkeypatch
):
    def never(*args, **kwargs):
        raise AssertionError("converted before the destination was checked")

    monkeypatch.setattr(tflite_module, "_convert", never)
    blocker = tmp_path / "a_file"
    blocker.write_bytes(b"not a folder")
    with pytest.raises(NotADirectoryError, match="is a file"):
        to_tflite(trained, str(blocker / "sub" / "m.tflite"),
                  quantization="none")
    monkeypatch.undo()
    # A missing folder is created when the file is written.
    path = tmp_path / "new" / "folder" / "m.tflite"
    info = to_tflite(trained, path, quantization="none", signatures=("decode",))
    assert os.path.exists(path) and info.num_bytes == os.path.getsize(path)


@keras.saving.register_keras_serializable(package="keras_vae_tests")
class _InverseErf(keras.layers.Layer):
    def call(self, inputs):
        return keras.ops.erfinv(0.5 * keras.ops.tanh(inputs))


def test_non_builtin_op_fails_naming_the_op(tmp_path):
    encoder = keras_vae.models.mlp_encoder((8, 8, 1), 2, (8,))
    z = keras.Input((2,))
    hidden = keras.layers.Dense(64)(_InverseErf()(z))
    decoder = keras.Model(z, keras.layers.Reshape((8, 8, 1))(hidden))
    model = keras_vae.VAE(encoder, decoder)
    path = os.path.join(tmp_path, "flex.tflite")
    with pytest.raises(ValueError, match=r"tf\.Erfinv"):
        to_tflite(model, path, quantization="none", signatures=("decode",))
    assert not os.path.exists(path)


def test_conv_vae_int8_keeps_transpose_conv_in_int8(data, tmp_path):
    x, x_test = data
    keras.utils.set_random_seed(0)
    model = keras_vae.models.conv_vae((8, 8, 1), 4, filters=(8, 16), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(x[:512], epochs=2, batch_size=64, verbose=0)
    path = os.path.join(tmp_path, "conv.tflite")
    info = to_tflite(model, path, representative_data=x[:300])
    transpose = [op for op in info.ops if op.op == "TRANSPOSE_CONV"]
    assert len(transpose) == 4  # two blocks in decode and in reconstruct
    assert all(op.input_dtypes[1:3] == ("int8", "int8") for op in transpose)
    report = verify(path, model, x_test, max_nll_delta_pct=2.0)
    assert report.nll_delta_pct < 2.0


def _zero_kernel_blocks(model, fraction, block_rows, seed=0):
    """Zero a fraction of `block_rows` x 1 blocks of every Dense kernel."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if "kernel" not in variable.path:
            continue
        kernel = keras.ops.convert_to_numpy(variable)
        rows = block_rows if kernel.shape[0] % block_rows == 0 else 1
        blocks = kernel.reshape(kernel.shape[0] // rows, rows, kernel.shape[1])
        keep = rng.uniform(size=(blocks.shape[0], 1, blocks.shape[2])) >= fraction
        variable.assign((blocks * keep).reshape(kernel.shape))


def test_pruned_model_is_dense_for_latency_and_sparse_for_size(data, tmp_path):
    x, x_test = data
    model = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(256,), seed=0)
    # 1x16 blocks in LiteRT's (units, inputs) layout: the encoding LiteRT
    # runs natively for int8 FULLY_CONNECTED.
    _zero_kernel_blocks(model, 0.8, block_rows=16)
    # The decoder alone shows the encoding choice at a third of the cost.
    # The default (latency) keeps the dense encoding the fast kernels run.
    dense = to_tflite(model, os.path.join(tmp_path, "dense.tflite"),
                      representative_data=x[:100], signatures=("decode",))
    sparse = to_tflite(model, os.path.join(tmp_path, "sparse.tflite"),
                       representative_data=x[:100], signatures=("decode",),
                       optimize_for="size")
    assert dense.metadata["optimize_for"] == "latency"
    assert sparse.metadata["optimize_for"] == "size"
    assert dense.sparse_tensors == 0 and not dense.metadata["sparse_encoding"]
    assert sparse.sparse_tensors > 0 and sparse.metadata["sparse_encoding"]
    assert sparse.num_bytes < 0.8 * dense.num_bytes
    assert sparse.gzip_bytes < dense.gzip_bytes
    assert sparse.metadata["kernel_sparsity"] == pytest.approx(0.8, abs=0.05)
    report = verify(sparse.path, model, x_test, max_abs_error=0.1)
    assert [e.signature for e in report.errors] == ["decode"]


def test_randomly_pruned_model_stays_dense_when_sparse_gzips_larger(
    data, tmp_path
):
    x, _ = data
    model = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(256,), seed=0)
    _zero_kernel_blocks(model, 0.8, block_rows=1)
    info = to_tflite(model, os.path.join(tmp_path, "random.tflite"),
                     representative_data=x[:100], signatures=("decode",),
                     optimize_for="size")
    assert info.metadata["kernel_sparsity"] == pytest.approx(0.8, abs=0.05)
    assert info.sparse_tensors == 0 and not info.metadata["sparse_encoding"]


def test_pruned_qat_model_exports_sparse_int8_from_its_trained_ranges(
    data, tmp_path
):
    from keras_vae.compression import (
        ConstantSparsity,
        PruningCallback,
        quantize_aware,
        strip_pruning,
    )

    x, x_test = data
    keras.utils.set_random_seed(0)
    model = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(256,), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    pruning = PruningCallback(ConstantSparsity(0.8, 0, frequency=1),
                              block_size=(16, 1))
    # ConstantSparsity prunes to 80% at the first step.
    model.fit(x[:512], epochs=1, batch_size=64, verbose=0, callbacks=[pruning])
    qat = quantize_aware(strip_pruning(model))
    qat.compile(optimizer=keras.optimizers.Adam(1e-4))
    qat.fit(x[:256], epochs=1, batch_size=64, verbose=0)
    # No representative data: the ranges come from QAT.
    info = to_tflite(qat, os.path.join(tmp_path, "pruned_qat.tflite"),
                     optimize_for="size")
    assert info.metadata["calibration"] == "quantization_aware_training"
    assert info.metadata["kernel_sparsity"] >= 0.75
    assert info.metadata["sparse_encoding"] and info.sparse_tensors > 0
    assert flatbuffer.dtype_problems(info, "int8") == []
    report = verify(info.path, qat, x_test, max_nll_delta_pct=1.0)
    assert report.max_abs_error("reconstruct") < 0.05


def test_jax_trained_model_loads_on_tensorflow_and_exports(data, tmp_path):
    out = run_with_backend(
        f"""
        import keras, numpy as np, keras_vae
        from keras_vae.export import to_tflite
        (x, _), _ = keras_vae.datasets.load("digits")
        model = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(32,), seed=0)
        model.compile(optimizer="adam")
        model.fit(x[:256], epochs=1, verbose=0)
        model.save(r"{tmp_path}/jax.keras")
        try:
            to_tflite(model, r"{tmp_path}/jax.tflite", quantization="none")
        except ValueError as error:
            print("refused:", "KERAS_BACKEND=tensorflow" in str(error))
        """
    )
    assert "refused: True" in out
    assert not os.path.exists(os.path.join(tmp_path, "jax.tflite"))
    model = keras.saving.load_model(os.path.join(tmp_path, "jax.keras"))
    path = os.path.join(tmp_path, "from_jax.tflite")
    to_tflite(model, path, representative_data=data[0][:200])
    report = verify(path, model, data[1], max_nll_delta_pct=2.0)
    assert report.passed


@pytest.fixture(scope="module")
def labelled(data):
    (x, y), (x_test, y_test) = keras_vae.datasets.load("digits")
    return x, y, x_test[:128], y_test[:128]


@pytest.fixture(scope="module")
def trained_cvae(labelled):
    x, y, _, _ = labelled
    keras.utils.set_random_seed(0)
    model = keras_vae.models.mlp_cvae((8, 8, 1), num_classes=10, latent_dim=4,
                                      hidden_units=(32,), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(x[:1024], y[:1024], epochs=2, batch_size=64, verbose=0)
    return model


@pytest.mark.parametrize("mode", ["int8", "float16", "dynamic", "none"])
def test_conditional_model_exports_label_signatures_in_every_mode(
    mode, trained_cvae, labelled, tmp_path
):
    x, y, x_test, y_test = labelled
    path = os.path.join(tmp_path, f"cvae_{mode}.tflite")
    info = to_tflite(trained_cvae, path, quantization=mode,
                     representative_data=(x[:200], y[:200]))
    for name, data_input in (("encode", "x"), ("decode", "z"),
                             ("reconstruct", "x")):
        assert info.signatures[name]["inputs"] == {
            data_input: "float32", "label": "int32"}
    assert info.metadata["num_classes"] == 10
    assert flatbuffer.dtype_problems(info, mode) == []
    report = verify(path, trained_cvae, x_test, labels=y_test,
                    max_nll_delta_pct=1.0 if mode == "int8" else 0.1)
    assert report.passed
    assert report.max_abs_error("decode") < (0.05 if mode == "int8" else 0.01)
    # The label reaches the file: one code, two labels, two images.
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=path).get_signature_runner("decode")
    z, labels = np.zeros((2, 4), "float32"), np.array([1, 7], "int32")
    images = runner(z=z, label=labels)["x_mean"]
    expected = keras.ops.convert_to_numpy(trained_cvae.decode(z, labels))
    np.testing.assert_allclose(images, expected, atol=0.03)
    assert np.abs(images[0] - images[1]).max() > 0.1
    with pytest.raises(ValueError, match="labels=None"):
        verify(path, trained_cvae, x_test)


def test_conv_cvae_exports_full_int8_within_two_percent(labelled, tmp_path):
    # The other builders: mlp_vae and conv_vae above, mlp_cvae in every
    # mode, conv1d_vae in test_export_verify, the mixture prior in
    # test_litert_runtime.
    x, y, x_test, y_test = labelled
    keras.utils.set_random_seed(0)
    model = keras_vae.models.conv_cvae((8, 8, 1), num_classes=10, latent_dim=4,
                                       filters=(8, 16), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(x[:1024], y[:1024], epochs=2, batch_size=64, verbose=0)
    path = os.path.join(tmp_path, "conv_cvae.tflite")
    info = to_tflite(model, path, representative_data=(x[:300], y[:300]))
    assert flatbuffer.dtype_problems(info, "int8") == []
    assert any(op.op == "TRANSPOSE_CONV" for op in info.ops)
    report = verify(path, model, x_test, labels=y_test, max_nll_delta_pct=2.0)
    assert abs(report.nll_delta_pct) < 2.0


def test_mixture_prior_is_stored_and_decode_is_calibrated_on_it(
    data, tmp_path, monkeypatch
):
    x, _ = data
    keras.utils.set_random_seed(0)
    model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(16,),
                                     prior="mixture", seed=0)
    # Components far from N(0, I): calibrating `decode` on N(0, I) samples
    # would clip the codes the prior actually draws.
    means = np.array([[6.0, -6.0]] * 5 + [[7.0, -5.0]] * 5, "float32")
    model.prior.means.assign(means)
    z = keras.ops.convert_to_numpy(model.prior.sample(256, 2, seed=1))

    def decode_error(name):
        path = os.path.join(tmp_path, f"{name}.tflite")
        info = to_tflite(model, path, representative_data=x[:200],
                         signatures=("decode",))
        report = verify(path, model, x[:8], z=z)
        return info, report.max_abs_error("decode")

    info, error = decode_error("mixture")
    prior = info.metadata["prior"]
    assert prior["class_name"] == "MixtureOfGaussians"
    np.testing.assert_allclose(prior["means"], means)
    np.testing.assert_allclose(prior["scales"], np.ones((10, 2)), rtol=1e-6)
    np.testing.assert_allclose(prior["weights"], np.full(10, 0.1), rtol=1e-6)
    # The same export calibrated on N(0, I) codes instead of the prior's.
    monkeypatch.setattr(
        model.prior, "sample",
        lambda n, d, seed=None: keras.random.normal((n, d), seed=seed))
    _, standard_error = decode_error("standard_calibration")
    assert error < 0.1 < standard_error


def test_file_stores_a_sha256_of_its_own_bytes(files):
    import hashlib

    raw = open(files["int8"].path, "rb").read()
    digest = files["int8"].metadata["sha256"]
    field = f'"sha256": "{digest}"'.encode()
    zeroed = raw.replace(field, b'"sha256": "' + b"0" * 64 + b'"')
    assert hashlib.sha256(zeroed).hexdigest() == digest
    assert files["int8"].checksum_problem is None
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0x01
    assert "changed or damaged" in read_tflite(bytes(flipped)).checksum_problem
