"""Convert a VAE to one LiteRT (`.tflite`) file with named signatures."""

import gzip
import json
import os
import re
import tempfile

import keras
import numpy as np

from keras_vae import _keras_internals
from keras_vae.export import flatbuffer

QUANTIZATIONS = ("int8", "dynamic", "float16", "none")
SIGNATURES = ("encode", "decode", "reconstruct")
# Calibration samples per signature: enough for stable activation ranges on
# MNIST-sized data (fewer than ~200 images misses rare bright pixels).
DEFAULT_CALIBRATION_SAMPLES = 500
# Fraction of exactly-zero kernel entries from which a model counts as
# pruned and a sparse encoding is tried.
_SPARSE_THRESHOLD = 0.5
_OP_PATTERN = re.compile(r"'(tf\.[A-Za-z0-9_]+)'")


def _tf():
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "Export to .tflite traces the model with TensorFlow. Run the "
            "export in a process started with KERAS_BACKEND=tensorflow; a "
            "model trained on JAX loads there with "
            "`keras.saving.load_model(path)`. "
            f"Received: backend={keras.backend.backend()!r}"
        )
    import tensorflow as tf

    return tf


def _kernel_sparsity(model):
    """Fraction of zero entries over the model's kernels (0.0 if none)."""
    zeros = total = 0
    for variable in model.weights:
        if "kernel" not in variable.path or len(variable.shape) < 2:
            continue
        values = keras.ops.convert_to_numpy(variable)
        zeros += int(np.sum(values == 0))
        total += values.size
    return zeros / total if total else 0.0


def _check_signatures(signatures):
    if isinstance(signatures, str):
        signatures = (signatures,)
    signatures = tuple(signatures)
    unknown = [s for s in signatures if s not in SIGNATURES]
    if not signatures or unknown or len(set(signatures)) != len(signatures):
        raise ValueError(
            f"Expected `signatures` to be distinct names from {SIGNATURES}. "
            f"Received: signatures={signatures!r}"
        )
    return signatures


def _quantization_aware(model):
    """True for a QAT model (`keras_vae.compression.quantize_aware`)."""
    from keras_vae.compression import is_quantization_aware

    return is_quantization_aware(model)


def _representative_arrays(model, representative_data, num_samples, seed=0):
    """Per-signature calibration inputs: data for x, codes for z."""
    if not isinstance(representative_data, (np.ndarray, np.generic, list, tuple)):
        # A tf.data.Dataset of `x` or `(x, y)`, batched or not.
        from keras_vae.compression import representative_arrays

        representative_data = representative_arrays(
            representative_data, num_samples, model.input_spec_shape
        )
    x = model._maybe_validate(np.asarray(representative_data), "representative_data")
    if len(x) == 0:
        raise ValueError(
            "Expected `representative_data` to hold at least one example. "
            f"Received: representative_data with shape {x.shape}"
        )
    x = x[:num_samples]
    z_mean, _ = model.encode(x)
    z_mean = keras.ops.convert_to_numpy(z_mean).astype("float32")
    # `decode` serves two inputs: codes of real data (reconstruction) and
    # prior samples (generation); calibrate on both so neither saturates.
    prior = np.random.default_rng(seed).standard_normal(z_mean.shape)
    half = (len(z_mean) + 1) // 2
    z = np.concatenate([z_mean[:half], prior[: len(z_mean) - half]]).astype(
        "float32"
    )
    return {"x": x.astype("float32"), "z": z}


def _build_archive(model, signatures, tf):
    archive = keras.export.ExportArchive()
    archive.track(model)
    x_spec = tf.TensorSpec((None, *model.input_spec_shape), tf.float32, name="x")
    z_spec = tf.TensorSpec((None, model.latent_dim), tf.float32, name="z")

    def encode(x):
        z_mean, z_log_var = model._posterior(x)
        return {"z_mean": z_mean, "z_log_var": z_log_var}

    def decode(z):
        return {"x_mean": model.likelihood.mean(model.decoder(z, training=False))}

    def reconstruct(x):
        z_mean, _ = model._posterior(x)
        return {
            "x_mean": model.likelihood.mean(model.decoder(z_mean, training=False))
        }

    functions = {"encode": (encode, x_spec), "decode": (decode, z_spec),
                 "reconstruct": (reconstruct, x_spec)}
    for name in signatures:
        function, spec = functions[name]
        archive.add_endpoint(name, function, input_signature=[spec])
    return archive


def _convert(saved_model_dir, signatures, quantization, calibration, int8_io,
             sparse, per_channel_dense, tf):
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=list(signatures)
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    optimizations = []
    if quantization != "none":
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if calibration is not None:

            def representative_dataset():
                for name in signatures:
                    key = "z" if name == "decode" else "x"
                    for row in calibration[key]:
                        yield name, {key: row[None]}

            converter.representative_dataset = representative_dataset
        # Per-tensor Dense weights (TF-MOT's default scheme) keep one scale
        # per kernel instead of one per unit in every signature's copy of
        # the tensor: the MLP file is ~10% smaller at equal quality.
        _keras_internals.set_per_tensor_dense_quantization(
            converter, not per_channel_dense
        )
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    try:
        return converter.convert()
    except Exception as error:
        message = str(error)
        ops = sorted(set(_OP_PATTERN.findall(message)))
        if ops or "flex" in message.lower() or "select" in message.lower():
            raise ValueError(
                "The model needs TensorFlow ops that are not LiteRT built-in "
                "ops; keras_vae exports built-in ops only (no Flex / "
                "SELECT_TF_OPS) so the file runs on every LiteRT build, "
                "microcontrollers included. Replace the layer that produces "
                "them (the converter message is chained below). "
                f"Received: ops={ops or ['unknown: see the converter message']}"
            ) from error
        raise


def _gzip_size(data):
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def _exists_error(path):
    return FileExistsError(
        f"{path} exists; pass overwrite=True to replace it. "
        f"Received: path={path!r}, overwrite=False"
    )


def _write_atomically(data, path, overwrite):
    """Write `data` to a temporary file beside `path`, then move it there.

    Readers see the old file or the whole new one, never a part. Without
    `overwrite`, the move is a hard link, which fails if `path` appeared
    in the meantime, so a file created by someone else during the export
    is not replaced either.
    """
    directory = os.path.dirname(os.path.abspath(path)) or "."
    handle = tempfile.NamedTemporaryFile(
        dir=directory, prefix=".tmp-", suffix=".tflite", delete=False
    )
    try:
        with handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(handle.name, path)
            return
        try:
            os.link(handle.name, path)
        except FileExistsError:
            raise _exists_error(path) from None
        except OSError:
            # No hard links on this file system: check, then move.
            if os.path.exists(path):
                raise _exists_error(path) from None
            os.replace(handle.name, path)
    finally:
        if os.path.exists(handle.name):
            os.remove(handle.name)


def to_tflite(
    model,
    path,
    quantization="int8",
    representative_data=None,
    signatures=SIGNATURES,
    int8_io=False,
    sparse=True,
    overwrite=False,
    num_calibration_samples=DEFAULT_CALIBRATION_SAMPLES,
    per_channel_dense=False,
):
    """Write a VAE as one LiteRT `.tflite` file with named signatures.

    The file holds up to three signatures, each with a resizable batch
    axis: `encode` (`x` -> `z_mean`, `z_log_var`), `decode` (`z` ->
    `x_mean`, the mean of p(x | z), e.g. pixel probabilities) and
    `reconstruct` (`x` -> `x_mean` through the posterior mean). There is no
    random op inside: draw z ~ N(0, I) on the host and call `decode`. Only
    LiteRT built-in ops are used, so the file runs on any LiteRT build. The
    file is written to a temporary file in the same directory and moved into
    place, so a `.tflite` at `path` is never half-written.

    A `keras_vae` metadata entry (quantization, signatures, input shape,
    latent size, likelihood) is stored in the file; `verify` checks the file
    against it and the TensorFlow-free runtime in `export/` reads it.

    Args:
        model: `keras_vae.VAE`. On the TensorFlow backend.
        path: str or `os.PathLike`. Destination `.tflite` file.
        quantization: str. `"int8"` (full integer: weights and activations,
            calibrated on `representative_data`), `"dynamic"` (int8 weights,
            float activations), `"float16"` (float16 weights) or `"none"`.
        representative_data: array of shape `(n, *input_shape)`, a
            `tf.data.Dataset` of `x` or `(x, y)` (batched or not), or None.
            Calibration inputs for `"int8"` (the first
            `num_calibration_samples` are used; the `decode` signature is
            calibrated on their posterior means and on prior samples).
            Required for `"int8"`, except for a quantization-aware model
            (`keras_vae.compression.quantize_aware`): its file takes the
            ranges learned in training and the data changes nothing.
        signatures: tuple of str. Any of `"encode"`, `"decode"`,
            `"reconstruct"`.
        int8_io: bool. For `"int8"`: int8 input and output tensors instead
            of float32. Their scale and zero point are stored in the file
            (see the tensor details in the LiteRT interpreter).
        sparse: bool. When the model's kernels are mostly zero (pruned),
            also try the sparse weight encoding and keep it if the file is
            smaller both as is and gzipped. Block-pruned Dense kernels
            (`PruningCallback(..., block_size=(16, 1))`) gain most: LiteRT
            runs 1x16-block sparse int8 FULLY_CONNECTED natively.
        overwrite: bool. Replace an existing file at `path`.
        num_calibration_samples: int > 0. Calibration examples per
            signature.
        per_channel_dense: bool. For `"int8"`: one weight scale per output
            unit of each Dense kernel instead of one per kernel.
            Convolutions are always per channel.

    Returns:
        `keras_vae.export.TFLiteFile` describing the written file (bytes,
        gzip bytes, ops and dtypes).

    Example:

    >>> import keras_vae
    >>> (x, _), _ = keras_vae.datasets.load("digits")
    >>> model = keras_vae.models.mlp_vae((8, 8, 1), latent_dim=2,
    ...                                  hidden_units=(16,))
    >>> info = keras_vae.export.to_tflite(
    ...     model, "/tmp/vae.tflite", representative_data=x[:100],
    ...     overwrite=True)  # doctest: +SKIP
    """
    tf = _tf()
    from keras_vae.vae import VAE

    if not isinstance(model, VAE):
        raise ValueError(
            "Expected `model` to be a `keras_vae.VAE`. "
            f"Received: model={model!r}"
        )
    if len(model.encoder.inputs) != 1 or len(model.decoder.inputs) != 1:
        raise ValueError(
            "to_tflite exports VAEs whose encoder takes only x and whose "
            "decoder takes only z; conditional models (`keras_vae.CVAE`) "
            "have label inputs too and are not supported yet. "
            f"Received: model of class {type(model).__name__} with encoder "
            f"inputs {[t.name for t in model.encoder.inputs]}"
        )
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"Expected `quantization` to be one of {QUANTIZATIONS}. "
            f"Received: quantization={quantization!r}"
        )
    signatures = _check_signatures(signatures)
    if int8_io and quantization != "int8":
        raise ValueError(
            "`int8_io=True` needs quantization='int8'. "
            f"Received: int8_io=True, quantization={quantization!r}"
        )
    if (
        isinstance(num_calibration_samples, bool)
        or not isinstance(num_calibration_samples, int)
        or num_calibration_samples <= 0
    ):
        raise ValueError(
            "Expected `num_calibration_samples` to be a positive int. "
            f"Received: num_calibration_samples={num_calibration_samples!r}"
        )
    path = os.fspath(path)
    if not overwrite and os.path.exists(path):
        raise _exists_error(path)
    calibration = None
    quantization_aware = quantization == "int8" and _quantization_aware(model)
    if quantization_aware and representative_data is None:
        # A model from `keras_vae.compression.quantize_aware` carries its
        # int8 ranges in FakeQuant ops and the converter takes every range
        # from them (calibration data changes no byte of the file), but it
        # still asks for a representative dataset: any valid input does.
        representative_data = np.zeros((1, *model.input_spec_shape), "float32")
    if quantization == "int8":
        if representative_data is None:
            raise ValueError(
                "quantization='int8' calibrates activation ranges on real "
                "inputs: pass `representative_data`, e.g. 500 training "
                "images, or train the model with "
                "`keras_vae.compression.quantize_aware` first. "
                "Received: representative_data=None"
            )
        calibration = _representative_arrays(
            model, representative_data, num_calibration_samples
        )
    sparsity = _kernel_sparsity(model)
    with tempfile.TemporaryDirectory() as saved_model_dir:
        _build_archive(model, signatures, tf).write_out(
            saved_model_dir, verbose=False
        )
        data = _convert(saved_model_dir, signatures, quantization,
                        calibration, int8_io, False,
                        per_channel_dense, tf)
        used_sparse = False
        if sparse and sparsity >= _SPARSE_THRESHOLD:
            sparse_data = _convert(saved_model_dir, signatures, quantization,
                                   calibration, int8_io, True,
                                   per_channel_dense, tf)
            # Random sparsity encodes with an index per weight: a little
            # smaller raw but much larger gzipped than zeros left in place.
            # Block sparsity (1x16 in TFLite's layout, i.e. `block_size=(16,
            # 1)` on a Keras Dense kernel) wins on both; keep sparse only then.
            if len(sparse_data) < len(data) and _gzip_size(sparse_data) < _gzip_size(data):
                data, used_sparse = sparse_data, True
    # The converter refuses float ops under the INT8-only op set, but a
    # float matmul kept in a file must never ship: check what was written.
    problems = flatbuffer.dtype_problems(
        flatbuffer.read_tflite(data), quantization, int8_io
    )
    if problems:
        raise ValueError(
            f"The converted file is not a clean quantization={quantization!r} "
            "file, so it was not written: " + "; ".join(problems[:5])
            + f". Received: quantization={quantization!r}"
        )
    likelihood = keras.saving.serialize_keras_object(model.likelihood)
    metadata = {
        "format": "keras_vae.tflite",
        "format_version": 1,
        "quantization": quantization,
        "int8_io": bool(int8_io),
        "signatures": list(signatures),
        "input_shape": list(model.input_spec_shape),
        "latent_dim": model.latent_dim,
        "likelihood": likelihood.get("class_name", "").lower(),
        "kernel_sparsity": round(float(sparsity), 4),
        "sparse_encoding": used_sparse,
        "per_channel_dense": bool(per_channel_dense),
        "calibration": (
            "quantization_aware_training" if quantization_aware
            else "representative_data" if quantization == "int8" else None
        ),
    }
    json.dumps(metadata)  # fail before writing if not serializable
    data = flatbuffer.add_metadata(data, flatbuffer.METADATA_NAME, metadata)
    _write_atomically(data, path, overwrite)
    return flatbuffer.read_tflite(path)
