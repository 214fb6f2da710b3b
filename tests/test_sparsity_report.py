"""`sparsity_report`: counts, bytes and the table."""

import gzip
import json

import keras
import numpy as np
import pytest

import keras_vae
from keras_vae.compression import (
    ConstantSparsity,
    PruningCallback,
    quantize_aware,
    sparsity_report,
    strip_pruning,
)


def _model():
    return keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(16,), seed=0)


def test_counts_exact_zeros_per_layer_and_in_total():
    model = _model()
    layer = model.encoder.get_layer("encoder_dense_0")
    kernel = layer.kernel.numpy()
    kernel[:, :4] = 0.0  # 4 of 16 columns
    layer.kernel.assign(kernel)
    report = sparsity_report(model)
    rows = {row["layer"]: row for row in report.rows}
    assert list(rows) == ["encoder/encoder_dense_0", "encoder/z_mean",
                          "encoder/z_log_var", "decoder/decoder_dense_0",
                          "decoder/decoder_output"]
    row = rows["encoder/encoder_dense_0"]
    assert row["kernel_shape"] == (64, 16)
    assert row["params"] == 64 * 16 + 16
    assert row["kernel_sparsity"] == 0.25
    assert row["zeros"] == 64 * 4 + 16  # Dense biases start at zero
    assert row["float32_bytes"] == 4 * row["params"]
    assert row["int8_bytes"] == 64 * 16 + 4 * 16  # int8 kernel, 32-bit bias
    # Everything the deployed model holds; `beta` is training state.
    assert report.total["params"] == (model.encoder.count_params()
                                      + model.decoder.count_params())
    assert report.total["kernel_sparsity"] == pytest.approx(
        256 / sum(np.prod(r["kernel_shape"]) for r in report.rows))
    json.dumps(report.to_dict())


def test_int8_gzip_bytes_shrink_with_sparsity():
    model = _model()
    dense = sparsity_report(model).total["int8_gzip_bytes"]
    for layer in keras_vae.compression.prunable_layers(model).values():
        kernel = layer.kernel.numpy()
        kernel[np.abs(kernel) < np.quantile(np.abs(kernel), 0.8)] = 0.0
        layer.kernel.assign(kernel)
    report = sparsity_report(model)
    assert report.sparsity >= 0.79
    assert report.total["int8_gzip_bytes"] < 0.6 * dense
    assert report.total["int8_bytes"] == sparsity_report(_model()).total["int8_bytes"]
    # The gzip figure is the real compressed size of the int8 codes.
    assert report.total["int8_gzip_bytes"] < report.total["int8_bytes"]
    assert len(gzip.compress(b"\0" * report.total["int8_bytes"])) < report.total[
        "int8_gzip_bytes"]


def test_hook_variables_and_quantizer_ranges_are_not_counted(digits, tmp_path):
    (x, _), _ = digits
    model = _model()
    model.compile(optimizer="adam")
    model.fit(x[:128], batch_size=64, epochs=1, verbose=0,
              callbacks=[PruningCallback(ConstantSparsity(0.5, 0, frequency=1))])
    pruned = sparsity_report(model)
    stripped = sparsity_report(strip_pruning(model))
    assert pruned.to_dict() == stripped.to_dict()
    assert pruned.sparsity == 0.5
    assert sparsity_report(quantize_aware(model)).to_dict() == pruned.to_dict()


def test_prints_a_markdown_table():
    text = str(sparsity_report(_model()))
    lines = text.splitlines()
    assert lines[0].startswith("| layer | kernel shape | params | zeros |")
    assert "int8 gzip bytes" in lines[0]
    assert lines[-1].startswith("| total | - |")
    assert "| encoder/encoder_dense_0 | 64x16 |" in text


def test_refuses_what_is_not_a_model():
    with pytest.raises(ValueError, match="model"):
        sparsity_report(keras.layers.Dense(2))
