"""Run a `.tflite` file with LiteRT and compare it with its Keras model.

`verify` runs four named steps: check the arguments and read the file
(`_check_tolerances`, `_check_data`), list what is wrong with the file
itself (`_file_failures`: checksum, dtypes, signatures), compare every
signature with Keras (`_compare_signatures`) and the reconstruction NLL
(`_compare_nll`, through `Likelihood.negative_log_prob_from_mean`).
"""

import dataclasses
import math
import numbers
import os

import keras
import numpy as np

from keras_vae import _validation
from keras_vae.export import flatbuffer


class VerificationError(ValueError):
    """A `.tflite` file failed `verify`; `report` holds the measurements."""

    def __init__(self, message, report):
        super().__init__(message)
        self.report = report


@dataclasses.dataclass
class SignatureError:
    """Absolute error of one signature output against Keras.

    Attributes:
        signature: str.
        output: str. Output name (`z_mean`, `z_log_var`, `x_mean`).
        max_abs_error: float.
        mean_abs_error: float.
    """

    signature: str
    output: str
    max_abs_error: float
    mean_abs_error: float


@dataclasses.dataclass
class VerificationReport:
    """What `verify` measured.

    Attributes:
        path: str.
        quantization: str. The mode the file was checked against.
        errors: list of `SignatureError`.
        keras_nll: float or None. Mean reconstruction negative
            log-likelihood of the Keras model, nats per example.
        tflite_nll: float or None. The same from the file's `reconstruct`.
        nll_delta: float or None. `tflite_nll - keras_nll` in nats.
        nll_delta_pct: float or None. `nll_delta` in % of `keras_nll`.
        dtype_problems: list of str. Empty when ops and dtypes match.
        file: `TFLiteFile`. Size and op table.
        passed: bool.
        failures: list of str. Why it did not pass.
    """

    path: str
    quantization: str
    errors: list
    keras_nll: object
    tflite_nll: object
    nll_delta: object
    nll_delta_pct: object
    dtype_problems: list
    file: object
    passed: bool = True
    failures: list = dataclasses.field(default_factory=list)

    def max_abs_error(self, signature, output=None):
        """Largest max-abs error of a signature (optionally one output)."""
        values = [
            e.max_abs_error
            for e in self.errors
            if e.signature == signature and output in (None, e.output)
        ]
        return max(values) if values else None

    def to_markdown(self):
        """The report as a Markdown table."""
        lines = [
            f"`{os.path.basename(self.path)}` ({self.quantization}, "
            f"{self.file.num_bytes:,} bytes, {self.file.gzip_bytes:,} gzip): "
            + ("passed" if self.passed else "FAILED"),
            "",
            "| signature | output | max abs error | mean abs error |",
            "|---|---|---:|---:|",
        ]
        for e in self.errors:
            lines.append(
                f"| {e.signature} | {e.output} | {e.max_abs_error:.4g} | "
                f"{e.mean_abs_error:.4g} |"
            )
        if self.nll_delta is not None:
            lines += [
                "",
                f"Reconstruction NLL: Keras {self.keras_nll:.3f}, file "
                f"{self.tflite_nll:.3f} nats ({self.nll_delta:+.3f} nats, "
                f"{self.nll_delta_pct:+.2f}%).",
            ]
        for failure in self.failures:
            lines.append(f"- {failure}")
        return "\n".join(lines)

    def __str__(self):
        return self.to_markdown()


def _interpreter(path, num_threads):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - ai-edge-litert is a dependency
        raise ImportError(
            "verify runs the file with LiteRT: `pip install ai-edge-litert`."
        ) from None
    try:
        interpreter = Interpreter(model_path=path, num_threads=num_threads)
        interpreter.allocate_tensors()
    except Exception as error:
        raise ValueError(
            f"LiteRT could not load the file ({error}); it is corrupt or "
            f"needs ops this runtime lacks. Received: path={path!r}"
        ) from None
    return interpreter


def _run(runner, inputs):
    """Run one signature, quantizing int8 inputs and dequantizing outputs."""
    details = runner.get_input_details()
    feed = {}
    for name, value in inputs.items():
        if name not in details:
            raise ValueError(
                f"the signature has no input `{name}`; it takes "
                f"{sorted(details)}"
            )
        detail = details[name]
        if detail["dtype"] == np.int8:
            scale, zero_point = detail["quantization"]
            value = np.clip(np.round(value / scale) + zero_point, -128, 127)
        feed[name] = np.asarray(value).astype(detail["dtype"])
    missing = sorted(set(details) - set(feed))
    if missing:
        raise ValueError(f"the signature needs inputs {missing} too")
    outputs = runner(**feed)
    result = {}
    output_details = runner.get_output_details()
    for key, array in outputs.items():
        if output_details[key]["dtype"] == np.int8:
            scale, zero_point = output_details[key]["quantization"]
            array = (array.astype("float32") - zero_point) * scale
        result[key] = np.asarray(array, "float32")
    return result


# ------------------------------------------------------------ 1. arguments
def _check_tolerance(value, name):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or (
        math.isnan(value)
    ):
        raise ValueError(
            f"Expected `{name}` to be a number (or None for no limit); NaN "
            "would let every file pass. "
            f"Received: {name}={value!r}"
        )
    return float(value)


def _check_tolerances(max_abs_error, max_nll_delta_pct):
    if isinstance(max_abs_error, dict):
        unknown = sorted(set(max_abs_error) - {"encode", "decode", "reconstruct"})
        if unknown:
            raise ValueError(
                "Expected `max_abs_error` keys among 'encode', 'decode', "
                f"'reconstruct'. Received: max_abs_error={max_abs_error!r}"
            )
        limits = {key: _check_tolerance(value, f"max_abs_error[{key!r}]")
                  for key, value in max_abs_error.items()}
    else:
        limit = _check_tolerance(max_abs_error, "max_abs_error")
        limits = {key: limit for key in ("encode", "decode", "reconstruct")}
    for limit in limits.values():
        if limit is not None and limit < 0:
            raise ValueError(
                "Expected `max_abs_error` >= 0 (an absolute error is never "
                f"negative). Received: max_abs_error={max_abs_error!r}"
            )
    return limits, _check_tolerance(max_nll_delta_pct, "max_nll_delta_pct")


def _check_data(model, x, labels, z):
    """Validated `(x, one-hot labels or None, int32 ids or None, z or None)`."""
    x = _validation.as_float_array(
        x, "x", model.input_spec_shape, model.likelihood
    )
    if model.is_conditional and labels is None:
        raise ValueError(
            "A conditional model's file takes class labels: pass "
            "`labels` (one per example of `x`). Received: labels=None"
        )
    one_hot = model.prepare_labels(labels, len(x))
    ids = None if one_hot is None else np.argmax(one_hot, -1).astype("int32")
    if z is not None:
        z = _validation.as_float_array(z, "z", (model.latent_dim,))
        if ids is not None and len(z) != len(x):
            raise ValueError(
                "For a conditional model `z` goes with the labels of `x`: "
                f"give as many codes as examples. Received: z with {len(z)} "
                f"rows for {len(x)} examples"
            )
    return x, one_hot, ids, z


# ------------------------------------------------------------- 2. the file
def _file_failures(info, quantization, int8_io, available):
    """What is wrong with the file itself; `(failures, dtype problems)`."""
    failures, problems = [], []
    if info.metadata and info.checksum_problem:
        failures.append(f"checksum: {info.checksum_problem}")
    if quantization is not None:
        problems = flatbuffer.dtype_problems(info, quantization, int8_io)
        failures += [f"dtype check ({quantization}): {p}" for p in problems]
    expected = _expected_signatures(info, available)
    missing = [s for s in expected if s not in available]
    if missing or not expected:
        failures.append(
            f"signatures {missing or ['encode/decode/reconstruct']} are "
            f"missing; the file has {sorted(available)}"
        )
    return failures, problems


def _expected_signatures(info, available):
    return info.metadata.get("signatures") or [
        s for s in ("encode", "decode", "reconstruct") if s in available
    ]


# ---------------------------------------------------- 3. the signatures
def _keras_references(model, x, one_hot, ids, z):
    """`{signature: (inputs, {output: Keras value})}` and the Keras z_mean."""
    z_mean, z_log_var = (
        keras.ops.convert_to_numpy(t) for t in model.posterior(x, one_hot)
    )
    if z is None:
        z = z_mean
    x_mean = model.likelihood.mean(model.decoder_params(z_mean, one_hot))
    decoded = model.likelihood.mean(model.decoder_params(z, one_hot))
    label = {} if ids is None else {"label": ids}
    references = {
        "encode": ({"x": x, **label},
                   {"z_mean": z_mean, "z_log_var": z_log_var}),
        "decode": ({"z": z, **label},
                   {"x_mean": keras.ops.convert_to_numpy(decoded)}),
        "reconstruct": ({"x": x, **label},
                        {"x_mean": keras.ops.convert_to_numpy(x_mean)}),
    }
    return references, z_mean


def _compare_signatures(interpreter, signatures, references, limits, failures):
    """Run each signature; return `(errors, outputs by signature)`."""
    errors, outputs_by_signature = [], {}
    available = interpreter.get_signature_list()
    for signature in signatures:
        if signature not in available:
            continue
        inputs, reference = references[signature]
        try:
            outputs = _run(interpreter.get_signature_runner(signature), inputs)
        except Exception as error:
            failures.append(f"signature `{signature}` failed to run: {error}")
            continue
        outputs_by_signature[signature] = outputs
        for key, expected_value in reference.items():
            if key not in outputs:
                failures.append(f"signature `{signature}` lacks output `{key}`")
                continue
            actual = outputs[key].reshape(np.shape(expected_value))
            difference = np.abs(actual - np.asarray(expected_value, "float32"))
            error = SignatureError(
                signature, key, float(np.max(difference)),
                float(np.mean(difference)),
            )
            errors.append(error)
            limit = limits.get(signature)
            if not np.isfinite(error.max_abs_error):
                failures.append(f"`{signature}/{key}` has non-finite values")
            elif limit is not None and error.max_abs_error > limit:
                failures.append(
                    f"`{signature}/{key}` max abs error "
                    f"{error.max_abs_error:.4g} > max_abs_error={limit:g}"
                )
    return errors, outputs_by_signature


def _compare_nll(model, x, one_hot, z_mean, outputs_by_signature,
                 max_nll_delta_pct, failures):
    """Reconstruction NLL of Keras and of the file: `(keras, file, delta, %)`."""
    if "reconstruct" not in outputs_by_signature:
        if max_nll_delta_pct is not None:
            failures.append(
                "max_nll_delta_pct needs the `reconstruct` signature in the file"
            )
        return None, None, None, None
    likelihood = model.likelihood
    params = model.decoder_params(z_mean, one_hot)
    keras_nll = float(np.mean(keras.ops.convert_to_numpy(
        likelihood.negative_log_prob(x, params)
    )))
    mean = outputs_by_signature["reconstruct"]["x_mean"].reshape(x.shape)
    tflite_nll = float(np.mean(keras.ops.convert_to_numpy(
        likelihood.negative_log_prob_from_mean(x, mean)
    )))
    delta = tflite_nll - keras_nll
    delta_pct = 100.0 * delta / abs(keras_nll) if keras_nll else math.inf
    if not np.isfinite(tflite_nll):
        failures.append("reconstruction NLL is not finite")
    elif max_nll_delta_pct is not None and delta_pct > max_nll_delta_pct:
        failures.append(
            f"reconstruction NLL {tflite_nll:.3f} nats is {delta_pct:+.2f}% "
            f"of the Keras {keras_nll:.3f} nats, past "
            f"max_nll_delta_pct={max_nll_delta_pct:g}"
        )
    return keras_nll, tflite_nll, delta, delta_pct


def verify(
    path,
    model,
    x,
    labels=None,
    quantization=None,
    int8_io=None,
    max_abs_error=None,
    max_nll_delta_pct=None,
    z=None,
    num_threads=1,
):
    """Run every signature of a `.tflite` file with LiteRT and check it.

    Each signature runs with the `ai_edge_litert` interpreter on `x` (and
    `decode` on `z`) and is compared with the Keras model: max and mean
    absolute error per output, and for `reconstruct` the reconstruction
    negative log-likelihood of `x` in nats and % of the Keras model's. The
    file's ops and tensor dtypes are checked against its quantization mode:
    a full-int8 file that kept a float FULLY_CONNECTED, CONV_2D or
    TRANSPOSE_CONV fails, as do float activations between int8 ops. A file
    whose bytes differ from the SHA-256 stored at export fails too.

    Args:
        path: str or `os.PathLike`. The `.tflite` file.
        model: `keras_vae.VAE`. The Keras model it was exported from.
        x: array `(n, *input_shape)`. Test inputs.
        labels: None, or for a conditional model (`keras_vae.CVAE`) the
            class labels of `x` (integer ids `(n,)`, one id for all, or
            one-hot). Required for a conditional model.
        quantization: str or None. Mode the file must have (`"int8"`,
            `"dynamic"`, `"float16"`, `"none"`). None reads it from the
            file's `keras_vae` metadata; a file without metadata then
            skips the dtype check.
        int8_io: bool or None. Whether inputs/outputs must be int8 (int8
            files only). None reads it from the metadata.
        max_abs_error: float >= 0, dict or None. Tolerance on the max
            absolute error of every output, or a dict `{signature:
            tolerance}`. NaN is refused.
        max_nll_delta_pct: float or None. Tolerance on the reconstruction
            NLL increase in % of the Keras value. NaN is refused.
        z: array `(m, latent_dim)` or None. Codes for `decode`; defaults
            to the Keras posterior means of `x` (for a conditional model,
            one code per example of `x`, decoded with its label).
        num_threads: int. LiteRT interpreter threads.

    Returns:
        `VerificationReport` (also when it passes).

    Raises:
        ValueError: (`VerificationError`, with the `report` attached) if
            the file cannot be read, misses a signature, has ops or dtypes
            that differ from its quantization mode, fails its checksum, or
            is past a tolerance; a plain `ValueError` for bad arguments.

    Example:

    >>> import keras_vae  # doctest: +SKIP
    >>> report = keras_vae.export.verify("vae.tflite", model, x_test[:256],
    ...                                  max_nll_delta_pct=1.0)
    >>> print(report)
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(
            f"Expected `path` to be a `.tflite` file path. Received: path={path!r}"
        )
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"No file at `path`. Received: path={path!r}")
    limits, max_nll_delta_pct = _check_tolerances(max_abs_error,
                                                  max_nll_delta_pct)
    x, one_hot, ids, z = _check_data(model, x, labels, z)
    info = flatbuffer.read_tflite(path)
    if quantization is None:
        quantization = info.metadata.get("quantization")
    if int8_io is None:
        int8_io = bool(info.metadata.get("int8_io", False))
    interpreter = _interpreter(path, num_threads)
    available = interpreter.get_signature_list()
    failures, problems = _file_failures(info, quantization, int8_io, available)
    references, z_mean = _keras_references(model, x, one_hot, ids, z)
    errors, outputs = _compare_signatures(
        interpreter, _expected_signatures(info, available), references,
        limits, failures,
    )
    keras_nll, tflite_nll, delta, delta_pct = _compare_nll(
        model, x, one_hot, z_mean, outputs, max_nll_delta_pct, failures
    )
    report = VerificationReport(
        path=path,
        quantization=quantization or "unknown",
        errors=errors,
        keras_nll=keras_nll,
        tflite_nll=tflite_nll,
        nll_delta=delta,
        nll_delta_pct=delta_pct,
        dtype_problems=problems,
        file=info,
        passed=not failures,
        failures=failures,
    )
    if failures:
        raise VerificationError(
            "The .tflite file does not match the Keras model: "
            + "; ".join(failures)
            + f". Received: path={path!r}",
            report,
        )
    return report
