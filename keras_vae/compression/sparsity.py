"""How sparse a model is and what its weights cost in bytes."""

import gzip

import keras
import numpy as np
from keras import ops

from keras_vae import _keras_internals
from keras_vae.compression import kernels as kernel_lookup

_COLUMNS = (
    ("layer", "layer"),
    ("kernel_shape", "kernel shape"),
    ("params", "params"),
    ("zeros", "zeros"),
    ("kernel_sparsity", "kernel sparsity"),
    ("float32_bytes", "float32 bytes"),
    ("int8_bytes", "int8 bytes"),
    ("int8_gzip_bytes", "int8 gzip bytes"),
)


def _int8_bytes(values):
    """Symmetric per-tensor int8 codes of `values` (zeros stay 0)."""
    values = np.asarray(values, "float32").ravel()
    bound = float(np.max(np.abs(values))) if values.size else 0.0
    if bound == 0.0:
        return np.zeros(values.shape, "int8").tobytes()
    codes = np.clip(np.round(values / bound * 127.0), -127, 127)
    return codes.astype("int8").tobytes()


def _gzip_size(data):
    return len(gzip.compress(data, compresslevel=9, mtime=0))


class SparsityReport:
    """Per-layer and total sparsity and sizes of a model's weights.

    `rows` is a list of dicts (one per prunable layer, then `"other"`
    for the remaining weights, e.g. a learned likelihood scale) and `total`
    one dict, with the keys `layer`, `kernel_shape`, `params`, `zeros`,
    `kernel_sparsity` (exact zeros in the kernel / kernel size),
    `float32_bytes`, `int8_bytes` and `int8_gzip_bytes` (the weights as
    symmetric int8 codes, gzip level 9: what pruning saves once a file is
    compressed). `str(report)` and `to_markdown()` give the table.

    Args:
        rows: list of dict.
        total: dict.
    """

    def __init__(self, rows, total):
        self.rows = list(rows)
        self.total = dict(total)

    def to_dict(self):
        """`{"layers": [...], "total": {...}}`, JSON-serializable."""
        return {"layers": [dict(row) for row in self.rows], "total": dict(self.total)}

    @property
    def sparsity(self):
        """float. Exact zeros over all kernel weights."""
        return self.total["kernel_sparsity"]

    def _cell(self, key, value):
        if key == "kernel_sparsity":
            return f"{100.0 * value:.1f}%"
        if key == "kernel_shape":
            return "x".join(str(d) for d in value) if value else "-"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    def to_markdown(self):
        """The report as a Markdown table."""
        header = "| " + " | ".join(title for _, title in _COLUMNS) + " |"
        rule = "|---|---|" + "---:|" * (len(_COLUMNS) - 2)
        lines = [header, rule]
        for row in self.rows + [self.total]:
            cells = [self._cell(key, row[key]) for key, _ in _COLUMNS]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def __str__(self):
        return self.to_markdown()

    def __repr__(self):
        return (
            f"SparsityReport(layers={len(self.rows)}, "
            f"kernel_sparsity={self.total['kernel_sparsity']:.4f}, "
            f"params={self.total['params']})"
        )


def sparsity_report(model):
    """Sparsity, parameter counts and bytes of a (pruned) VAE's weights.

    Counts exact zeros: on a model still training with `PruningCallback`
    the kernels are already masked after each step, so the counts are
    those `strip_pruning` would bake in. Hook variables (masks, counters)
    and fake-quantization ranges are not weights of the deployed model and
    are left out.

    Args:
        model: `keras_vae.VAE` (or any functional `keras.Model`).

    Returns:
        `SparsityReport`: `print(report)` shows a table, `report.rows`,
        `report.total` and `report.to_dict()` give the numbers.

    Example:

    >>> import keras_vae
    >>> from keras_vae.compression import sparsity_report
    >>> model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(16,))
    >>> report = sparsity_report(model)
    >>> report.total["params"] == (model.encoder.count_params()
    ...                            + model.decoder.count_params())
    True
    """
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"Expected a `keras.Model`. Received: model={model!r}"
        )
    _keras_internals.sync_jax_state(model)
    excluded = set()
    for hook in getattr(model, "train_step_hooks", ()):
        excluded.update(id(v) for v in hook.weights)
    rows, seen = [], set()
    for path, layer in kernel_lookup.prunable_layers(model).items():
        kernel = kernel_lookup.kernel_variable(layer)
        variables = [v for v in layer.weights if id(v) not in excluded]
        seen.update(id(v) for v in variables)
        kernel_values = ops.convert_to_numpy(kernel.value)
        rows.append(_row(path, tuple(kernel.shape), variables, kernel_values))
    # Quantizer ranges, masks, counters and `beta` are non-trainable: only
    # trainable weights (a learned likelihood scale, ...) remain here.
    rest = [
        v for v in model.trainable_weights
        if id(v) not in seen and id(v) not in excluded
    ]
    if rest:
        rows.append(_row("other", (), rest, None))
    total = {
        "layer": "total",
        "kernel_shape": (),
        "params": sum(row["params"] for row in rows),
        "zeros": sum(row["zeros"] for row in rows),
        "float32_bytes": sum(row["float32_bytes"] for row in rows),
        "int8_bytes": sum(row["int8_bytes"] for row in rows),
    }
    kernel_size = sum(row["_kernel_size"] for row in rows)
    kernel_zeros = sum(row["_kernel_zeros"] for row in rows)
    total["kernel_sparsity"] = kernel_zeros / kernel_size if kernel_size else 0.0
    total["int8_gzip_bytes"] = _gzip_size(
        b"".join(row.pop("_codes") for row in rows)
    )
    for row in rows:
        row.pop("_kernel_size")
        row.pop("_kernel_zeros")
    return SparsityReport(rows, total)


def _row(name, kernel_shape, variables, kernel_values):
    arrays = [np.asarray(ops.convert_to_numpy(v.value)) for v in variables]
    params = int(sum(a.size for a in arrays))
    zeros = int(sum(int(np.sum(a == 0)) for a in arrays))
    # Kernels as int8 codes; biases stay 32-bit (int32 in a TFLite int8 file).
    codes = b"".join(
        _int8_bytes(a) if a.ndim >= 2 else a.astype("float32").tobytes()
        for a in arrays
    )
    int8_bytes = int(sum(a.size if a.ndim >= 2 else 4 * a.size for a in arrays))
    kernel_size = int(kernel_values.size) if kernel_values is not None else 0
    kernel_zeros = (
        int(np.sum(kernel_values == 0)) if kernel_values is not None else 0
    )
    return {
        "layer": name,
        "kernel_shape": tuple(int(d) for d in kernel_shape),
        "params": params,
        "zeros": zeros,
        "kernel_sparsity": kernel_zeros / kernel_size if kernel_size else 0.0,
        "float32_bytes": 4 * params,
        "int8_bytes": int8_bytes,
        "int8_gzip_bytes": _gzip_size(codes),
        "_codes": codes,
        "_kernel_size": kernel_size,
        "_kernel_zeros": kernel_zeros,
    }
