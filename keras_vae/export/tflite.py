"""Convert a VAE to one LiteRT (`.tflite`) file with named signatures.

`to_tflite` runs five named steps: check the arguments and the destination
(`_check_arguments`), gather calibration inputs (`_calibration`), trace and
convert (`_convert_model`), check the written ops and dtypes
(`_check_converted`), and store the metadata with a checksum
(`_metadata`, `flatbuffer.set_metadata`) before the atomic write.
"""

import gzip
import json
import math
import os
import re
import tempfile

import keras
import numpy as np

from keras_vae import _keras_internals, _validation, files
from keras_vae.export import flatbuffer

QUANTIZATIONS = ("int8", "dynamic", "float16", "none")
SIGNATURES = ("encode", "decode", "reconstruct")
OPTIMIZE_FOR = ("latency", "size")
# Version 2: label inputs for conditional models, the prior's components
# and a SHA-256 of the file in the metadata.
FORMAT_VERSION = 2
# Calibration samples per signature: enough for stable activation ranges on
# MNIST-sized data (fewer than ~200 images misses rare bright pixels).
DEFAULT_CALIBRATION_SAMPLES = 500
# Fraction of exactly-zero kernel entries from which a model counts as
# pruned and, with optimize_for="size", a sparse encoding is tried.
_SPARSE_THRESHOLD = 0.5
_OP_PATTERN = re.compile(r"'(tf\.[A-Za-z0-9_]+)'")
# Seed of the prior samples `decode` is calibrated on.
_CALIBRATION_SEED = 0


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


def _quantization_aware(model):
    """True for a QAT model (`keras_vae.compression.quantize_aware`)."""
    from keras_vae.compression import is_quantization_aware

    return is_quantization_aware(model)


# ------------------------------------------------------------ 1. arguments
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


def _check_arguments(model, path, quantization, signatures, int8_io,
                     optimize_for, num_calibration_samples, overwrite):
    """Validate everything before any tracing; return `(path, signatures)`."""
    from keras_vae.vae import VAE

    if not isinstance(model, VAE):
        raise ValueError(
            "Expected `model` to be a `keras_vae.VAE`. "
            f"Received: model={model!r}"
        )
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"Expected `quantization` to be one of {QUANTIZATIONS}. "
            f"Received: quantization={quantization!r}"
        )
    if optimize_for not in OPTIMIZE_FOR:
        raise ValueError(
            f"Expected `optimize_for` to be one of {OPTIMIZE_FOR}: "
            "'latency' keeps pruned weights in the dense int8 encoding the "
            "fast kernels run, 'size' stores them sparse when that makes "
            f"the file smaller. Received: optimize_for={optimize_for!r}"
        )
    signatures = _check_signatures(signatures)
    if int8_io and quantization != "int8":
        raise ValueError(
            "`int8_io=True` needs quantization='int8'. "
            f"Received: int8_io=True, quantization={quantization!r}"
        )
    if (
        isinstance(num_calibration_samples, bool)
        or not isinstance(num_calibration_samples, (int, np.integer))
        or num_calibration_samples <= 0
    ):
        raise ValueError(
            "Expected `num_calibration_samples` to be a positive int. "
            f"Received: num_calibration_samples={num_calibration_samples!r}"
        )
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(
            "Expected `path` to be the destination `.tflite` file path, e.g. "
            f"'vae_int8.tflite'. Received: path={path!r}"
        )
    # Before the conversion: an existing file, a symbolic link or a path
    # under a file fail now, not after minutes of converting. A missing
    # folder is created when the file is written.
    files.check_writable_destination(path, overwrite)
    return os.fspath(path), signatures


# ---------------------------------------------------------- 2. calibration
def _calibration(model, quantization, representative_data, num_samples):
    """Per-signature calibration inputs, or None when nothing to calibrate.

    Returns `(arrays, source)`: `arrays` has `"x"` (data), `"z"` (codes for
    `decode`: posterior means of the data and samples of the model's own
    prior, half each) and `"label"` (int32 class ids, conditional models
    only); `source` says where the int8 ranges come from.
    """
    if quantization != "int8":
        return None, None
    if _quantization_aware(model):
        # A model from `keras_vae.compression.quantize_aware` carries its
        # int8 ranges in FakeQuant ops and the converter takes every range
        # from them (calibration data changes no byte of the file), but it
        # still asks for a representative dataset: any valid input does.
        if representative_data is None:
            representative_data = _placeholder_data(model)
        return (_calibration_arrays(model, representative_data, num_samples),
                "quantization_aware_training")
    if representative_data is None:
        example = "(x_train[:500], y_train[:500])" if model.is_conditional \
            else "x_train[:500]"
        raise ValueError(
            "quantization='int8' calibrates activation ranges on real "
            f"inputs: pass `representative_data`, e.g. {example}, or train "
            "the model with `keras_vae.compression.quantize_aware` first. "
            "Received: representative_data=None"
        )
    return (_calibration_arrays(model, representative_data, num_samples),
            "representative_data")


def _is_dataset(data):
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover - tensorflow is a dependency
        return False
    return isinstance(data, tf.data.Dataset)


def _placeholder_data(model):
    x = np.zeros((1, *model.input_spec_shape), "float32")
    return (x, np.zeros((1,), "int32")) if model.is_conditional else x


def _calibration_arrays(model, representative_data, num_samples):
    from keras_vae.compression import representative_examples

    # Arrays are checked as given, before any cast: integer pixels, text,
    # NaN or an empty array are refused under the argument's own name.
    pair = isinstance(representative_data, tuple) and len(representative_data) == 2
    given = representative_data[0] if pair else representative_data
    if not _is_dataset(given):
        given = _validation.as_float_array(
            given, "representative_data", model.input_spec_shape,
            model.likelihood)
        representative_data = (given, representative_data[1]) if pair else given
    x, labels = representative_examples(
        representative_data, num_samples, model.input_spec_shape
    )
    x = _validation.as_float_array(
        x, "representative_data", model.input_spec_shape, model.likelihood
    )
    if model.is_conditional and labels is None:
        raise ValueError(
            "A conditional model calibrates on examples with their labels: "
            "pass `representative_data=(x, y)` or a dataset of `(x, y)`. "
            "Received: representative_data without labels"
        )
    one_hot = model.prepare_labels(
        labels if model.is_conditional else None, len(x),
        name="representative_data labels",
    )
    z_mean, _ = model.posterior(x, one_hot)
    z_mean = keras.ops.convert_to_numpy(z_mean).astype("float32")
    # `decode` serves two inputs: codes of real data (reconstruction) and
    # prior samples (generation); calibrate on both so neither saturates.
    # The prior is the model's own (a learned mixture has its own scale).
    half = (len(x) + 1) // 2
    prior = model.prior.sample(len(x) - half, model.latent_dim,
                               seed=_CALIBRATION_SEED) if len(x) > half else None
    z = z_mean[:half] if prior is None else np.concatenate(
        [z_mean[:half], keras.ops.convert_to_numpy(prior)]
    )
    arrays = {"x": x, "z": z.astype("float32")}
    if model.is_conditional:
        arrays["label"] = np.argmax(one_hot, axis=-1).astype("int32")
    return arrays


# ------------------------------------------------------------ 3. convert
def _signature_functions(model, tf):
    """`{name: (function, input specs)}` of the three signatures.

    A conditional model's signatures also take `label`, int32 class ids
    `(batch,)`, turned into one-hot inside the file.
    """
    x_spec = tf.TensorSpec((None, *model.input_spec_shape), tf.float32, name="x")
    z_spec = tf.TensorSpec((None, model.latent_dim), tf.float32, name="z")
    specs = {"encode": [x_spec], "decode": [z_spec], "reconstruct": [x_spec]}
    if model.is_conditional:
        label_spec = tf.TensorSpec((None,), tf.int32, name="label")
        specs = {name: [*spec, label_spec] for name, spec in specs.items()}

    def one_hot(label):
        if label is None:
            return None
        # Rows of an identity matrix (a GATHER), not ONE_HOT: the int8
        # ONE_HOT kernel copies its on/off values without requantizing them
        # to the output scale, which turns 1 into ~3 in a full-int8 file.
        identity = np.eye(model.num_classes, dtype="float32")
        return keras.ops.take(identity, label, axis=0)

    def encode(x, label=None):
        z_mean, z_log_var = model.posterior(x, one_hot(label))
        return {"z_mean": z_mean, "z_log_var": z_log_var}

    def decode(z, label=None):
        params = model.decoder_params(z, one_hot(label))
        # `x_mean`, plus the parameters a likelihood's mean does not
        # determine (the codec needs the whole p(x | z) on the device).
        return model.likelihood.export_outputs(params)

    def reconstruct(x, label=None):
        labels = one_hot(label)
        z_mean, _ = model.posterior(x, labels)
        params = model.decoder_params(z_mean, labels)
        return {"x_mean": model.likelihood.mean(params)}

    functions = {"encode": encode, "decode": decode, "reconstruct": reconstruct}
    return {name: (functions[name], specs[name]) for name in SIGNATURES}


def _write_saved_model(model, signatures, directory, tf):
    archive = keras.export.ExportArchive()
    archive.track(model)
    functions = _signature_functions(model, tf)
    for name in signatures:
        function, specs = functions[name]
        archive.add_endpoint(name, function, input_signature=specs)
    archive.write_out(directory, verbose=False)


def _representative_dataset(signatures, calibration):
    def generator():
        for name in signatures:
            key = "z" if name == "decode" else "x"
            for i, row in enumerate(calibration[key]):
                inputs = {key: row[None]}
                if "label" in calibration:
                    inputs["label"] = calibration["label"][i : i + 1]
                yield name, inputs

    return generator


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
            converter.representative_dataset = _representative_dataset(
                signatures, calibration
            )
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


def _convert_model(model, signatures, quantization, calibration, int8_io,
                   per_channel_dense, optimize_for, sparsity, tf):
    """Trace and convert; return `(file bytes, whether stored sparse)`.

    With `optimize_for="size"` a pruned model is also converted with the
    sparse weight encoding, kept when the file is smaller both as is and
    gzipped. With `"latency"` pruned weights stay in the dense encoding:
    LiteRT's dense int8 kernels (XNNPACK) run it faster than its sparse
    kernels run the sparse one, and the zeros still gzip well.
    """
    with tempfile.TemporaryDirectory() as saved_model_dir:
        _write_saved_model(model, signatures, saved_model_dir, tf)
        arguments = (saved_model_dir, signatures, quantization, calibration,
                     int8_io)
        data = _convert(*arguments, False, per_channel_dense, tf)
        if optimize_for != "size" or sparsity < _SPARSE_THRESHOLD:
            return data, False
        sparse_data = _convert(*arguments, True, per_channel_dense, tf)
    # Random sparsity encodes with an index per weight: a little smaller
    # raw but much larger gzipped than zeros left in place. Block sparsity
    # (1x16 in TFLite's layout, i.e. `block_size=(16, 1)` on a Keras Dense
    # kernel) wins on both; keep sparse only then.
    if len(sparse_data) < len(data) and _gzip_size(sparse_data) < _gzip_size(data):
        return sparse_data, True
    return data, False


# --------------------------------------------------------------- 4. check
def _check_converted(data, quantization, int8_io):
    """Refuse a file whose ops and dtypes do not match the mode.

    The converter refuses float ops under the INT8-only op set, but a float
    matmul kept in a file must never ship: check what was written.
    """
    problems = flatbuffer.dtype_problems(
        flatbuffer.read_tflite(data), quantization, int8_io
    )
    if problems:
        raise ValueError(
            f"The converted file is not a clean quantization={quantization!r} "
            "file, so it was not written: " + "; ".join(problems[:5])
            + f". Received: quantization={quantization!r}"
        )


# ------------------------------------------------------------ 5. metadata
def _prior_metadata(model):
    """The prior as mixture components for samplers outside Keras, or None."""
    try:
        components = model.prior.mixture_components(model.latent_dim)
    except NotImplementedError:
        return None
    prior = {key: np.asarray(components[key], "float32").tolist()
             for key in ("means", "scales", "weights")}
    values = [v for row in prior["means"] + prior["scales"] for v in row]
    if not all(math.isfinite(v) for v in values + prior["weights"]):
        raise ValueError(
            "The model's prior has non-finite parameters; train it until "
            "they are finite before exporting. Received: prior="
            f"{type(model.prior).__name__}"
        )
    prior["class_name"] = type(model.prior).__name__
    return prior


def _data_bounds(likelihood):
    # `Likelihood.data_bounds`: (low, high) the data must lie in, or None.
    bounds = getattr(likelihood, "data_bounds", None)
    return None if bounds is None else [float(b) for b in bounds]


def _metadata(model, quantization, int8_io, signatures, sparsity, sparse,
              optimize_for, per_channel_dense, calibration_source):
    likelihood = keras.saving.serialize_keras_object(model.likelihood)
    metadata = {
        "format": "keras_vae.tflite",
        "format_version": FORMAT_VERSION,
        "quantization": quantization,
        "int8_io": bool(int8_io),
        "signatures": list(signatures),
        "input_shape": list(model.input_spec_shape),
        "latent_dim": model.latent_dim,
        "num_classes": model.num_classes,
        "likelihood": likelihood.get("class_name", "").lower(),
        # The values `x` may take (Bernoulli: [0, 1]); the runtime checks.
        "data_bounds": _data_bounds(model.likelihood),
        # What a runtime needs beyond the decoder's outputs (the codec's
        # context head of a ContextBernoulli likelihood), else None.
        "likelihood_head": model.likelihood.export_metadata(),
        # The discretised logistic's uniform mixture weight, which the
        # codec's pixel probabilities include.
        "uniform_mass": float(getattr(model.likelihood, "uniform_mass", 0.0)
                              or 0.0),
        "prior": _prior_metadata(model),
        "kernel_sparsity": round(float(sparsity), 4),
        "sparse_encoding": bool(sparse),
        "optimize_for": optimize_for,
        "per_channel_dense": bool(per_channel_dense),
        "calibration": calibration_source,
    }
    json.dumps(metadata)  # fail before writing if not serializable
    return metadata


def to_tflite(
    model,
    path,
    quantization="int8",
    representative_data=None,
    signatures=SIGNATURES,
    int8_io=False,
    optimize_for="latency",
    overwrite=False,
    num_calibration_samples=DEFAULT_CALIBRATION_SAMPLES,
    per_channel_dense=False,
):
    """Write a VAE as one LiteRT `.tflite` file with named signatures.

    The file holds up to three signatures, each with a resizable batch
    axis: `encode` (`x` -> `z_mean`, `z_log_var`), `decode` (`z` ->
    `x_mean`, the mean of p(x | z), e.g. pixel probabilities) and
    `reconstruct` (`x` -> `x_mean` through the posterior mean). A
    conditional model (`keras_vae.CVAE`) adds a `label` input, int32 class
    ids of shape `(batch,)`, to each. There is no random op inside: draw z
    from the prior on the host and call `decode`. Only LiteRT built-in ops
    are used, so the file runs on any LiteRT build. The file is written to
    a temporary file in the same folder and moved into place, so a
    `.tflite` at `path` is never half-written.

    A `keras_vae` metadata entry (quantization, signatures, input shape,
    latent size, number of classes, likelihood, the prior as Gaussian
    mixture components, and the SHA-256 of the file) is stored in the file;
    `verify` checks the file against it and the TensorFlow-free runtime in
    `export/` reads it and refuses a file whose bytes changed.

    Args:
        model: `keras_vae.VAE` or `keras_vae.CVAE`. On the TensorFlow
            backend.
        path: str or `os.PathLike`. Destination `.tflite` file. A missing
            folder is created; an existing file, a symbolic link or a path
            under a file is refused before any conversion.
        quantization: str. `"int8"` (full integer: weights and activations,
            calibrated on `representative_data`), `"dynamic"` (int8 weights,
            float activations), `"float16"` (float16 weights) or `"none"`.
        representative_data: array of shape `(n, *input_shape)`, a pair
            `(x, y)` for a conditional model, a `tf.data.Dataset` of `x` or
            `(x, y)` (batched or not), or None. Calibration inputs for
            `"int8"` (the first `num_calibration_samples` are used; the
            `decode` signature is calibrated on their posterior means and
            on samples of the model's prior). Required for `"int8"`,
            except for a quantization-aware model
            (`keras_vae.compression.quantize_aware`): its file takes the
            ranges learned in training and the data changes nothing.
        signatures: tuple of str. Any of `"encode"`, `"decode"`,
            `"reconstruct"`.
        int8_io: bool. For `"int8"`: int8 `x`/`z` inputs and outputs
            instead of float32 (labels stay int32). Their scale and zero
            point are stored in the file.
        optimize_for: str. `"latency"` (default) keeps the weights of a
            pruned model in the dense encoding, which LiteRT's int8 kernels
            run fastest (the zeros still gzip well). `"size"` also tries
            the sparse weight encoding when the kernels are mostly zero and
            keeps it if the file is smaller both as is and gzipped:
            block-pruned Dense kernels (`PruningCallback(...,
            block_size=(16, 1))`) gain most.
        overwrite: bool. Replace an existing file at `path`.
        num_calibration_samples: int > 0. Calibration examples per
            signature.
        per_channel_dense: bool. For `"int8"`: one weight scale per output
            unit of each Dense kernel instead of one per kernel.
            Convolutions are always per channel.

    Returns:
        `keras_vae.export.TFLiteFile` describing the written file (bytes,
        gzip bytes, ops and dtypes).

    Raises:
        ValueError: for a bad argument or destination (before any
            conversion), a model that needs non-built-in ops, or a converted
            file whose ops and dtypes do not match `quantization`.

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
    path, signatures = _check_arguments(
        model, path, quantization, signatures, int8_io, optimize_for,
        num_calibration_samples, overwrite,
    )
    calibration, calibration_source = _calibration(
        model, quantization, representative_data, int(num_calibration_samples)
    )
    sparsity = _kernel_sparsity(model)
    data, sparse = _convert_model(
        model, signatures, quantization, calibration, int8_io,
        per_channel_dense, optimize_for, sparsity, tf,
    )
    _check_converted(data, quantization, int8_io)
    metadata = _metadata(
        model, quantization, int8_io, signatures, sparsity, sparse,
        optimize_for, per_channel_dense, calibration_source,
    )
    files.write_bytes(path, flatbuffer.set_metadata(data, metadata),
                      overwrite=overwrite)
    return flatbuffer.read_tflite(path)
