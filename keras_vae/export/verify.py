"""Run a `.tflite` file with LiteRT and compare it with its Keras model."""

import dataclasses
import math
import os

import keras
import numpy as np

from keras_vae.export import flatbuffer

# Probabilities are clipped into [eps, 1 - eps] before taking logs, so an
# int8 output of exactly 0 or 1 costs a finite amount.
BERNOULLI_EPS = 1e-6


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


def nll_from_mean(likelihood, x, mean):
    """Per-example negative log-likelihood of `x` given the mean output.

    The exported signatures return the mean of p(x | z), so the likelihood
    is evaluated from it: Bernoulli from clipped probabilities, Gaussian
    directly (its parameter is the mean).

    Args:
        likelihood: `keras_vae.likelihoods.Likelihood`.
        x: array `(batch, ...)`.
        mean: array, same shape.

    Returns:
        numpy array `(batch,)` in nats.
    """
    from keras_vae import likelihoods

    x = np.asarray(x, "float64").reshape(len(x), -1)
    mean = np.asarray(mean, "float64").reshape(len(x), -1)
    if isinstance(likelihood, likelihoods.Bernoulli):
        p = np.clip(mean, BERNOULLI_EPS, 1.0 - BERNOULLI_EPS)
        return -np.sum(x * np.log(p) + (1.0 - x) * np.log1p(-p), axis=-1)
    if isinstance(likelihood, likelihoods.Gaussian):
        return np.asarray(
            keras.ops.convert_to_numpy(
                likelihood.negative_log_prob(
                    x.astype("float32"), mean.astype("float32")
                )
            ),
            "float64",
        )
    raise ValueError(
        "nll_from_mean knows the Bernoulli and Gaussian likelihoods. "
        f"Received: likelihood={likelihood!r}"
    )


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


def _run(runner, name, value):
    """Run one signature, quantizing int8 inputs and dequantizing outputs."""
    details = runner.get_input_details()[name]
    if details["dtype"] == np.int8:
        scale, zero_point = details["quantization"]
        value = np.clip(np.round(value / scale) + zero_point, -128, 127)
    outputs = runner(**{name: value.astype(details["dtype"])})
    result = {}
    output_details = runner.get_output_details()
    for key, array in outputs.items():
        if output_details[key]["dtype"] == np.int8:
            scale, zero_point = output_details[key]["quantization"]
            array = (array.astype("float32") - zero_point) * scale
        result[key] = np.asarray(array, "float32")
    return result


def verify(
    path,
    model,
    x,
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
    TRANSPOSE_CONV fails, as do float activations between int8 ops.

    Args:
        path: str or `os.PathLike`. The `.tflite` file.
        model: `keras_vae.VAE`. The Keras model it was exported from.
        x: array `(n, *input_shape)`. Test inputs.
        quantization: str or None. Mode the file must have (`"int8"`,
            `"dynamic"`, `"float16"`, `"none"`). None reads it from the
            file's `keras_vae` metadata; a file without metadata then
            skips the dtype check.
        int8_io: bool or None. Whether inputs/outputs must be int8 (int8
            files only). None reads it from the metadata.
        max_abs_error: float, dict or None. Tolerance on the max absolute
            error of every output, or a dict `{signature: tolerance}`.
        max_nll_delta_pct: float or None. Tolerance on the reconstruction
            NLL increase in % of the Keras value.
        z: array `(m, latent_dim)` or None. Codes for `decode`; defaults
            to the Keras posterior means of `x`.
        num_threads: int. LiteRT interpreter threads.

    Returns:
        `VerificationReport` (also when it passes).

    Raises:
        ValueError: (`VerificationError`, with the `report` attached) if
            the file cannot be read, misses a signature, has
            ops or dtypes that differ from its quantization mode, or is
            past a tolerance.

    Example:

    >>> import keras_vae  # doctest: +SKIP
    >>> report = keras_vae.export.verify("vae.tflite", model, x_test[:256],
    ...                                  max_nll_delta_pct=1.0)
    >>> print(report)
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"No file at `path`. Received: path={path!r}")
    info = flatbuffer.read_tflite(path)
    metadata = info.metadata
    if quantization is None:
        quantization = metadata.get("quantization")
    if int8_io is None:
        int8_io = bool(metadata.get("int8_io", False))
    x = model._maybe_validate(np.asarray(x), "x")
    interpreter = _interpreter(path, num_threads)
    available = interpreter.get_signature_list()
    failures = []
    problems = []
    if quantization is not None:
        problems = flatbuffer.dtype_problems(info, quantization, int8_io)
        failures += [f"dtype check ({quantization}): {p}" for p in problems]
    expected = metadata.get("signatures") or [
        s for s in ("encode", "decode", "reconstruct") if s in available
    ]
    missing = [s for s in expected if s not in available]
    if missing or not expected:
        failures.append(
            f"signatures {missing or ['encode/decode/reconstruct']} are "
            f"missing; the file has {sorted(available)}"
        )
    z_mean, z_log_var = (keras.ops.convert_to_numpy(t) for t in model.encode(x))
    if z is None:
        z = z_mean
    z = np.asarray(z, "float32")
    references = {
        "encode": ("x", x, {"z_mean": z_mean, "z_log_var": z_log_var}),
        "decode": (
            "z", z, {"x_mean": keras.ops.convert_to_numpy(model.decode(z))}
        ),
        "reconstruct": (
            "x", x, {"x_mean": keras.ops.convert_to_numpy(model.reconstruct(x))}
        ),
    }
    errors = []
    outputs_by_signature = {}
    for signature in expected:
        if signature not in available:
            continue
        input_name, value, reference = references[signature]
        try:
            outputs = _run(
                interpreter.get_signature_runner(signature), input_name, value
            )
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
            limit = max_abs_error
            if isinstance(max_abs_error, dict):
                limit = max_abs_error.get(signature)
            if not np.isfinite(error.max_abs_error):
                failures.append(f"`{signature}/{key}` has non-finite values")
            elif limit is not None and error.max_abs_error > limit:
                failures.append(
                    f"`{signature}/{key}` max abs error "
                    f"{error.max_abs_error:.4g} > max_abs_error={limit}"
                )
    keras_nll = tflite_nll = delta = delta_pct = None
    if "reconstruct" in outputs_by_signature:
        logits = model.decoder(z_mean)
        keras_nll = float(
            np.mean(
                keras.ops.convert_to_numpy(
                    model.likelihood.negative_log_prob(x, logits)
                )
            )
        )
        mean = outputs_by_signature["reconstruct"]["x_mean"].reshape(x.shape)
        tflite_nll = float(np.mean(nll_from_mean(model.likelihood, x, mean)))
        delta = tflite_nll - keras_nll
        delta_pct = 100.0 * delta / abs(keras_nll) if keras_nll else math.inf
        if not np.isfinite(tflite_nll):
            failures.append("reconstruction NLL is not finite")
        elif max_nll_delta_pct is not None and delta_pct > max_nll_delta_pct:
            failures.append(
                f"reconstruction NLL {tflite_nll:.3f} nats is {delta_pct:+.2f}% "
                f"of the Keras {keras_nll:.3f} nats, past "
                f"max_nll_delta_pct={max_nll_delta_pct}"
            )
    elif max_nll_delta_pct is not None:
        failures.append(
            "max_nll_delta_pct needs the `reconstruct` signature in the file"
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
