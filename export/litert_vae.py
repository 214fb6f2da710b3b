#!/usr/bin/env python3
"""Run a keras-vae `.tflite` file with LiteRT: numpy and ai-edge-litert only.

This file is the device side of keras-vae. Copy it next to a `.tflite`
file written by `keras_vae.export.to_tflite` on any machine with Python,
`pip install numpy ai-edge-litert`, and use it as a module:

    from litert_vae import LiteRTVAE
    vae = LiteRTVAE("vae_int8.tflite", num_threads=1)
    z_mean, z_log_var = vae.encode(x)        # x: (n, 28, 28, 1) float32
    x_mean = vae.decode(z)                   # z: (n, latent_dim)
    x_mean = vae.reconstruct(x)
    samples = vae.sample(16, seed=0)         # z drawn here from the prior
    digits = cvae.sample(16, labels=7, seed=0)   # a conditional model

or as a command:

    python litert_vae.py vae_int8.tflite info
    python litert_vae.py vae_int8.tflite sample -n 16 --seed 0 --out s.npy
    python litert_vae.py cvae_int8.tflite sample -n 16 --labels 7 --out s.npy
    python litert_vae.py vae_int8.tflite reconstruct --input x.npy --out r.npy
    python litert_vae.py vae_int8.tflite bench --threads 1
    python litert_vae.py vae_int8.tflite compress --input x.npy --out x.kvz
    python litert_vae.py vae_int8.tflite decompress --input x.kvz --out x.npy

`compress`/`decompress` (lossless bits-back or lossy latent codes, see
`keras_vae.codec`) also need `pip install constriction` and keras-vae's
numpy-only codec core, `keras_vae/codec/core.py`, copied beside this file
as `litert_codec.py` (in the repository it is found by itself).

It never imports TensorFlow or Keras. Inputs and outputs are float32 numpy
arrays whatever the file stores: a file exported with `int8_io=True` is
quantized and dequantized here with the scales stored in the file. A
conditional model's signatures also take `label`, int32 class ids.

The file is trusted only after checks: it must carry keras_vae metadata
whose SHA-256 matches every byte of the file (weights, graph and the
metadata itself), so a flipped weight byte or an edited likelihood (which
would switch off the [0, 1] input check of a Bernoulli model) is refused
with a `ValueError` naming the file, before LiteRT reads it.

The module reads in sections: the file and its metadata, input checks, one
`Signature`, the `LiteRTVAE` model, timing helpers, and the command line
(`COMMANDS` maps each subcommand to its function).
"""

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
import time

import numpy as np

try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:  # pragma: no cover - depends on the device
    raise ImportError(
        "litert_vae needs the LiteRT interpreter: `pip install ai-edge-litert`"
    ) from None

METADATA_NAME = "keras_vae"
FORMAT = "keras_vae.tflite"
# Versions this runtime reads: 2 added labels, the prior and the checksum.
FORMAT_VERSIONS = (2,)
# Signature -> its data input; a conditional model adds "label".
SIGNATURE_INPUTS = {"encode": "x", "decode": "z", "reconstruct": "x"}
LABEL_INPUT = "label"
# The metadata's checksum field, hashed with its 64 digits set to "0".
_CHECKSUM_FIELD = b'"sha256": "%s"'


# ---------------------------------------------------------------- the file
def _file_error(path, problem):
    return ValueError(
        f"{path} is not a usable keras-vae .tflite file: {problem}. "
        "Re-export it with keras_vae.export.to_tflite. "
        f"Received: path={path!r}"
    )


def _parse_metadata(raw, path):
    """The `keras_vae` metadata dict of the flatbuffer `raw`, or None."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # pragma: no cover - older LiteRT wheels
        raise _file_error(path, "this LiteRT wheel lacks the flatbuffer "
                          "schema; `pip install -U ai-edge-litert`") from None
    try:
        model = schema.Model.GetRootAs(raw, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if (entry.Name() or b"") != METADATA_NAME.encode():
                continue
            buffer = model.Buffers(entry.Buffer())
            if buffer.Offset():
                data = raw[buffer.Offset() : buffer.Offset() + buffer.Size()]
            else:
                data = buffer.DataAsNumpy().tobytes()
            metadata = json.loads(bytes(data).decode("utf-8"))
            if not isinstance(metadata, dict):
                raise ValueError("the metadata is not a JSON object")
            return metadata
    except Exception as error:  # any damage: bad offsets, bytes, JSON
        raise _file_error(
            path, f"its structure is damaged ({type(error).__name__}: "
            f"{str(error)[:120]})"
        ) from None
    return None


def _checksum_problem(raw, metadata):
    stored = metadata.get("sha256")
    if not isinstance(stored, str) or not re.fullmatch(r"[0-9a-f]{64}", stored):
        return "its metadata holds no SHA-256 of the file"
    field = _CHECKSUM_FIELD % stored.encode()
    if raw.count(field) != 1:
        return "its SHA-256 field is damaged"
    zeroed = raw.replace(field, _CHECKSUM_FIELD % (b"0" * 64))
    if hashlib.sha256(zeroed).hexdigest() != stored:
        return ("its bytes do not match the SHA-256 stored at export (the "
                "file was changed or damaged after export)")
    return None


def read_file(path):
    """The bytes and metadata of a checked keras-vae `.tflite` file.

    Refuses, with a `ValueError` naming the file: a missing or unreadable
    file, one that is not a TFLite flatbuffer, one without keras_vae
    metadata or of an unknown format version, and one whose bytes do not
    match the SHA-256 stored in its metadata.

    Args:
        path: str or path-like. The `.tflite` file.

    Returns:
        `(raw bytes, metadata dict)`.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as error:
        raise _file_error(path, f"it cannot be read ({error.strerror or error})"
                          ) from None
    if len(raw) < 8 or raw[4:8] != b"TFL3":
        raise _file_error(path, "it is not a TFLite flatbuffer (no `TFL3` "
                          f"identifier in its {len(raw)} bytes)")
    metadata = _parse_metadata(raw, path)
    if metadata is None:
        raise _file_error(path, "it has no keras_vae metadata")
    if metadata.get("format") != FORMAT or metadata.get(
        "format_version"
    ) not in FORMAT_VERSIONS:
        raise _file_error(
            path, f"its format is {metadata.get('format')!r} version "
            f"{metadata.get('format_version')!r}, this runtime reads "
            f"{FORMAT!r} versions {FORMAT_VERSIONS}"
        )
    problem = _checksum_problem(raw, metadata)
    if problem:
        raise _file_error(path, problem)
    return raw, metadata


def read_metadata(path):
    """The checked `keras_vae` metadata dict of a `.tflite` file.

    Args:
        path: str. The `.tflite` file (see `read_file` for the checks).
    """
    return read_file(path)[1]


# -------------------------------------------------------------- the inputs
def _check_input(value, name, data_range=None):
    """`value` as a float32 array, or `ValueError` naming `name` and the value.

    Integer arrays are refused rather than cast: 8-bit pixels read as floats
    in [0, 255] would give garbage under a Bernoulli model without any error.
    """
    try:
        array = np.asarray(value)
    except Exception as error:  # ragged lists and other non-arrays
        raise ValueError(
            f"`{name}` must be a numeric array ({error}). "
            f"Received: {name} of type {type(value).__name__}"
        ) from None
    if array.dtype == bool:
        array = array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"`{name}` has integer dtype {array.dtype}; the model expects "
            "float32 data scaled as in training. For 8-bit images use "
            f"`{name}.astype('float32') / 255`. Received: {name} with "
            f"dtype={array.dtype}"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"`{name}` must hold real numbers. Received: {name} with "
            f"dtype={array.dtype}"
        )
    if array.ndim == 0 or array.size == 0:
        raise ValueError(
            f"`{name}` needs a batch axis and at least one example. "
            f"Received: {name} of shape {array.shape}"
        )
    with np.errstate(over="ignore"):
        array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise ValueError(
            f"`{name}` contains {int((~np.isfinite(array)).sum())} NaN or inf "
            "values (after conversion to float32). Received: "
            f"{name} with NaN/inf"
        )
    if data_range is not None:
        low, high = float(array.min()), float(array.max())
        if low < data_range[0] or high > data_range[1]:
            raise ValueError(
                f"This model's `{name}` lies in [{data_range[0]:g}, "
                f"{data_range[1]:g}] (Bernoulli likelihood); scale the data "
                "as in training (8-bit images: divide by 255). Received: "
                f"{name} with min={low:g}, max={high:g}"
            )
    return array


def _check_labels(labels, num_examples, num_classes):
    """int32 class ids `(num_examples,)` from ids, one id, or one-hot."""
    if num_classes is None:
        if labels is not None:
            raise ValueError(
                "This file's model is not conditional: drop `labels`. "
                f"Received: labels={labels!r:.60}"
            )
        return None
    if labels is None:
        raise ValueError(
            f"This file's model is conditional ({num_classes} classes): pass "
            f"`labels`, class ids in [0, {num_classes}) (one int for all, or "
            "one per example). Received: labels=None"
        )
    array = np.asarray(labels)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise ValueError(
            f"Expected `labels` to be integer class ids in [0, {num_classes})."
            f" Received: labels with dtype={array.dtype}"
        )
    if array.ndim == 0:
        array = np.full((num_examples,), array)
    if array.ndim == 2 and array.shape == (num_examples, num_classes) and (
        num_classes > 1
    ):
        if not (np.all((array == 0) | (array == 1)) and np.all(array.sum(-1) == 1)):
            raise ValueError(
                "One-hot `labels` must hold a single 1 per row. Received: "
                f"labels of shape {array.shape} with other values"
            )
        array = np.argmax(array, axis=-1)
    if array.ndim == 2 and array.shape[-1] == 1:
        array = array[:, 0]
    if array.shape != (num_examples,):
        raise ValueError(
            f"Expected one label per example: shape ({num_examples},), one "
            f"int, or one-hot ({num_examples}, {num_classes}). Received: "
            f"labels of shape {array.shape}"
        )
    if not np.all(np.isfinite(array)) or not np.all(np.mod(array, 1) == 0) or (
        array.min() < 0 or array.max() >= num_classes
    ):
        raise ValueError(
            f"Expected integer `labels` in [0, {num_classes}). Received: "
            f"labels with min={array.min()}, max={array.max()}"
        )
    return array.astype(np.int32)


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
        value < 1
    ):
        raise ValueError(
            f"Expected `{name}` to be a positive int. Received: {name}={value!r}"
        )
    return int(value)


def _check_seed(seed):
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or (
        seed < 0
    ):
        raise ValueError(
            "Expected `seed` to be None or a non-negative int (the same seed "
            f"gives the same samples). Received: seed={seed!r}"
        )
    return int(seed)


def _check_temperature(temperature):
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(temperature, bool) or not np.isfinite(value) or value <= 0:
        raise ValueError(
            "Expected `temperature` to be a finite number > 0 (1 samples the "
            f"prior itself). Received: temperature={temperature!r}"
        )
    return value


# ------------------------------------------------------------ a signature
class Signature:
    """One signature of the file, callable on float32 numpy arrays.

    Resizes the batch axis only when the batch size changes, then sets the
    inputs, invokes and reads the outputs; int8 inputs and outputs are
    converted with the file's scale and zero point.

    Attributes:
        key: str. Signature key.
        input_name: str. The data input, `"x"` or `"z"`.
        input_shape: tuple. Its shape, -1 for the batch axis.
        conditional: bool. Whether it also takes `label` class ids.
        data_range: tuple or None. `(low, high)` the data must lie in,
            e.g. `(0, 1)` for a Bernoulli model's `x`.

    Args:
        interpreter: `ai_edge_litert.interpreter.Interpreter`.
        key: str. Signature key.
    """

    def __init__(self, interpreter, key):
        self.key = key
        self.runner = interpreter.get_signature_runner(key)
        details = self.runner.get_input_details()
        data_names = [name for name in details if name != LABEL_INPUT]
        if len(data_names) != 1 or len(details) > 2:
            raise ValueError(
                f"Expected signature `{key}` to take one data input (and "
                f"optionally `{LABEL_INPUT}`). Received: inputs={sorted(details)}"
            )
        self.input_name = data_names[0]
        self.conditional = LABEL_INPUT in details
        # Data input first, then the label.
        self.inputs = [
            (name, details[name]["index"], details[name]["dtype"],
             details[name]["quantization"],
             tuple(int(d) for d in details[name]["shape_signature"]))
            for name in [self.input_name]
            + ([LABEL_INPUT] if self.conditional else [])
        ]
        _, _, self.input_dtype, self.input_quantization, self.input_shape = (
            self.inputs[0]
        )
        self.outputs = [
            (name, d["index"], d["dtype"], d["quantization"])
            for name, d in sorted(self.runner.get_output_details().items())
        ]
        # The signature runner re-allocates on every call; the wrapper
        # calls below skip that when the batch size is unchanged, which is
        # most of the cost of a batch-1 call on a small model.
        self._wrapper = getattr(interpreter, "_interpreter", None)
        self._subgraph = getattr(self.runner, "_subgraph_index", None)
        self._fast = self._wrapper is not None and self._subgraph is not None
        self._batch = None
        self.data_range = None

    def check(self, value):
        """`value` as a float32 array of this signature's data shape.

        Raises `ValueError` naming the input for integer, non-finite,
        out-of-range (`data_range`) or wrongly shaped data.
        """
        value = _check_input(value, self.input_name, self.data_range)
        expected = self.input_shape[1:]
        if value.ndim != len(self.input_shape) or any(
            e not in (-1, d) for e, d in zip(expected, value.shape[1:])
        ):
            raise ValueError(
                f"Signature `{self.key}` expects `{self.input_name}` of shape "
                f"(batch, {', '.join(str(d) for d in expected)}). "
                f"Received: {self.input_name} of shape {value.shape}"
            )
        return value

    def prepare(self, value, labels=None, checked=False):
        """Checked inputs in the file's dtypes, ready for `run_raw`.

        Args:
            value: float array `(n, ...)`, the data input.
            labels: int32 class ids `(n,)` for a conditional signature
                (already checked against the number of classes).
            checked: bool. `value` already passed `check`.

        Returns:
            list of arrays, in the order of `inputs`.
        """
        if not checked:
            value = self.check(value)
        if self.input_dtype == np.int8:
            scale, zero_point = self.input_quantization
            value = np.clip(np.round(value / scale) + zero_point, -128, 127)
        prepared = [np.ascontiguousarray(value, dtype=self.input_dtype)]
        if self.conditional:
            if labels is None or np.shape(labels) != (len(value),):
                raise ValueError(
                    f"Signature `{self.key}` needs one class id per example. "
                    f"Received: labels of shape {np.shape(labels)} for "
                    f"{len(value)} examples"
                )
            prepared.append(np.ascontiguousarray(labels, dtype=np.int32))
        return prepared

    def resize(self, batch_size):
        """Set the batch size; later calls of that size skip reallocation."""
        if self._fast and batch_size != self._batch:
            for _, index, _, _, shape in self.inputs:
                new_shape = np.array((batch_size, *shape[1:]), np.int32)
                self._wrapper.ResizeInputTensor(
                    index, new_shape, False, self._subgraph
                )
            self._wrapper.AllocateTensors(self._subgraph)
            self._batch = batch_size

    def run_raw(self, values):
        """Run on inputs from `prepare`; return the raw outputs (a list)."""
        if not self._fast:
            result = self.runner(**{
                name: value for (name, *_), value in zip(self.inputs, values)
            })
            return [result[name] for name, *_ in self.outputs]
        if values[0].shape[0] != self._batch:
            self.resize(values[0].shape[0])
        for (_, index, *_), value in zip(self.inputs, values):
            self._wrapper.SetTensor(index, value, self._subgraph)
        self._wrapper.Invoke(self._subgraph)
        return [
            self._wrapper.GetTensor(index, self._subgraph)
            for _, index, _, _ in self.outputs
        ]

    def __call__(self, value, labels=None, checked=False):
        """Run on float32 `value`; return `{output name: float32 array}`."""
        raw = self.run_raw(self.prepare(value, labels, checked))
        result = {}
        for (name, _, dtype, quantization), array in zip(self.outputs, raw):
            if dtype == np.int8:
                scale, zero_point = quantization
                array = (array.astype(np.float32) - zero_point) * scale
            result[name] = np.asarray(array, np.float32)
        return result


# -------------------------------------------------------------- the model
class LiteRTVAE:
    """A keras-vae `.tflite` file ready to encode, decode and sample.

    Loading checks the file first (see `read_file`): keras_vae metadata
    and a SHA-256 that matches every byte, else `ValueError` naming it.

    Args:
        path: str. `.tflite` file from `keras_vae.export.to_tflite`.
        num_threads: int or None. Interpreter threads (None: LiteRT's
            default).

    Example:

    >>> vae = LiteRTVAE("vae_int8.tflite", num_threads=1)  # doctest: +SKIP
    >>> vae.sample(4, seed=0).shape  # doctest: +SKIP
    (4, 28, 28, 1)
    """

    def __init__(self, path, num_threads=None):
        if num_threads is not None and (
            isinstance(num_threads, bool) or not isinstance(num_threads, int)
            or num_threads < 1
        ):
            raise ValueError(
                "Expected `num_threads` to be a positive int or None. "
                f"Received: num_threads={num_threads!r}"
            )
        self.path = str(path)
        self.num_threads = num_threads
        raw, self.metadata = read_file(self.path)
        try:
            # The checked bytes themselves, not the path: the file cannot
            # change between the check and the load.
            self.interpreter = Interpreter(
                model_content=raw, num_threads=num_threads
            )
            keys = self.interpreter.get_signature_list()
            self.signatures = {key: Signature(self.interpreter, key) for key in keys}
        except ValueError as error:
            raise ValueError(
                f"LiteRT could not load {self.path} ({error}); re-export it. "
                f"Received: path={self.path!r}"
            ) from None
        bounds = self.metadata.get("data_bounds")
        if bounds is None and self.metadata.get("likelihood") == "bernoulli":
            bounds = (0.0, 1.0)
        if bounds is not None:
            for signature in self.signatures.values():
                if signature.input_name == "x":
                    signature.data_range = (float(bounds[0]), float(bounds[1]))

    def _signature(self, key):
        if key not in self.signatures:
            raise ValueError(
                f"This file has no `{key}` signature; it has "
                f"{sorted(self.signatures)}. Export it with "
                f"signatures=(..., {key!r}). Received: signature={key!r}"
            )
        return self.signatures[key]

    @property
    def latent_dim(self):
        """int. Size of z."""
        return int(self.metadata["latent_dim"])

    @property
    def input_shape(self):
        """tuple. Per-example shape of `x`."""
        return tuple(self.metadata["input_shape"])

    @property
    def num_classes(self):
        """int or None. Number of classes of a conditional model."""
        return self.metadata.get("num_classes")

    @property
    def is_conditional(self):
        """bool. Whether the signatures also take class labels."""
        return self.num_classes is not None

    @property
    def prior(self):
        """dict or None. The prior as mixture components (numpy arrays).

        `"means"` and `"scales"` `(K, latent_dim)`, `"weights"` `(K,)`:
        p(z) = sum_k weights[k] N(means[k], diag(scales[k]^2)). A standard
        normal prior is one component with mean 0 and scale 1.
        """
        prior = self.metadata.get("prior")
        if prior is None:
            return None
        return {key: np.asarray(prior[key], np.float64)
                for key in ("means", "scales", "weights")}

    def _run(self, key, value, labels):
        signature = self._signature(key)
        value = signature.check(value)
        ids = _check_labels(labels, len(value), self.num_classes)
        return signature(value, ids, checked=True)

    def encode(self, x, labels=None):
        """`(z_mean, z_log_var)` of q(z | x) for float32 `x` `(n, ...)`.

        Args:
            x: float array `(n, *input_shape)`.
            labels: class ids (one int, `(n,)` or one-hot) for a
                conditional model; None otherwise.
        """
        outputs = self._run("encode", x, labels)
        return outputs["z_mean"], outputs["z_log_var"]

    def decode(self, z, labels=None):
        """Mean of p(x | z), e.g. pixel probabilities, for `z` `(n, latent)`."""
        return self._run("decode", z, labels)["x_mean"]

    def reconstruct(self, x, labels=None):
        """Reconstruction of `x` through the posterior mean."""
        return self._run("reconstruct", x, labels)["x_mean"]

    def sample_latents(self, num_samples, seed=None, temperature=1.0):
        """Draw `num_samples` codes z from the prior stored in the file.

        A mixture prior picks a component by its weight, then draws from
        that component; `temperature` scales each component's standard
        deviation (1 samples the prior itself).

        Args:
            num_samples: int > 0.
            seed: int >= 0 or None. Seed of numpy's generator.
            temperature: float > 0.

        Returns:
            float32 array `(num_samples, latent_dim)`.
        """
        num_samples = _check_positive_int(num_samples, "num_samples")
        seed = _check_seed(seed)
        temperature = _check_temperature(temperature)
        prior = self.prior
        if prior is None:
            raise ValueError(
                "This file stores no prior to sample from (its model's prior "
                "is not a Gaussian mixture); draw z yourself and call "
                f"`decode`. Received: path={self.path!r}"
            )
        rng = np.random.default_rng(seed)
        weights = prior["weights"] / prior["weights"].sum()
        if len(weights) == 1:
            components = np.zeros(num_samples, np.int64)
        else:
            components = rng.choice(len(weights), size=num_samples, p=weights)
        noise = rng.standard_normal((num_samples, self.latent_dim))
        z = prior["means"][components] + (
            temperature * prior["scales"][components] * noise
        )
        return z.astype(np.float32)

    def sample(self, num_samples, labels=None, seed=None, temperature=1.0):
        """Decode `num_samples` codes drawn here from the stored prior.

        Args:
            num_samples: int > 0.
            labels: class ids for a conditional model (one int for all
                samples, or one per sample); None otherwise.
            seed: int >= 0 or None. Seed of numpy's generator.
            temperature: float > 0. Scale of the prior's spread.
        """
        num_samples = _check_positive_int(num_samples, "num_samples")
        ids = _check_labels(labels, num_samples, self.num_classes)
        z = self.sample_latents(num_samples, seed, temperature)
        return self._signature("decode")(z, ids, checked=True)["x_mean"]

    def benchmark(self, signature="reconstruct", **kwargs):
        """Latency and throughput of one signature; see `benchmark_signature`."""
        return benchmark_signature(self._signature(signature), **kwargs)


# ----------------------------------------------------------------- timing
def _timed_blocks(run, value, calls, block):
    """Wall and CPU seconds per call, one reading per block of calls.

    The CPU clock of the calling thread is read once per block, so its
    cost (a system call) is spread over `block` calls; with one
    interpreter thread it counts only this thread's work, which makes it
    the steadier number on a machine shared with other processes.
    """
    wall, cpu = [], []
    for _ in range(max(1, calls // block)):
        cpu_start = time.thread_time_ns()
        wall_start = time.perf_counter_ns()
        for _ in range(block):
            run(value)
        wall.append((time.perf_counter_ns() - wall_start) / block)
        cpu.append((time.thread_time_ns() - cpu_start) / block)
    return np.asarray(wall) / 1e9, np.asarray(cpu) / 1e9


def benchmark_callable(
    run, make_batch, batch_size=1, throughput_batch_size=256, runs=2000,
    throughput_runs=200, warmup=50, block=50,
):
    """Latency and throughput of `run(batch)` for any runtime.

    Args:
        run: callable. Runs one prepared batch.
        make_batch: callable. `make_batch(n)` returns a prepared batch of n.
        batch_size: int. Batch of the latency measurement.
        throughput_batch_size: int. Batch of the throughput measurement.
        runs: int. Timed latency calls.
        throughput_runs: int. Timed throughput calls.
        warmup: int. Untimed calls before each measurement.
        block: int. Latency calls per CPU-clock reading.

    Returns:
        dict: `latency_median_us` and `latency_p95_us` (wall clock, per
        call), `latency_cpu_us` (thread CPU time per call, median over
        blocks), `throughput_per_s` (examples per second, wall clock, median
        over calls), `throughput_cpu_per_s` (the same from thread CPU time)
        and the settings.
    """
    small = make_batch(batch_size)
    for _ in range(warmup):
        run(small)
    times = np.empty(runs)
    clock = time.perf_counter_ns
    for i in range(runs):
        start = clock()
        run(small)
        times[i] = clock() - start
    _, cpu = _timed_blocks(run, small, runs, block)
    large = make_batch(throughput_batch_size)
    for _ in range(max(1, warmup // 5)):
        run(large)
    wall_large, cpu_large = _timed_blocks(run, large, throughput_runs, 1)
    return {
        "batch_size": batch_size,
        "latency_median_us": float(np.median(times) / 1e3),
        "latency_p95_us": float(np.percentile(times, 95) / 1e3),
        "latency_cpu_us": float(np.median(cpu) * 1e6),
        "throughput_batch_size": throughput_batch_size,
        "throughput_per_s": float(throughput_batch_size / np.median(wall_large)),
        "throughput_cpu_per_s": float(
            throughput_batch_size / np.median(cpu_large)
        ),
    }


def benchmark_signature(signature, seed=0, **kwargs):
    """Batch-1 latency (median, p95) and large-batch throughput.

    Times `Signature.run_raw` (set inputs, invoke, read outputs) on random
    inputs already converted to the file's input dtypes; the batch size is
    set once before each measurement, as a deployed app does.

    Args:
        signature: `Signature`.
        seed: int.
        **kwargs: settings of `benchmark_callable` (`batch_size`,
            `throughput_batch_size`, `runs`, `throughput_runs`, `warmup`,
            `block`).

    Returns:
        dict, see `benchmark_callable`, plus the signature key.
    """
    # `run_raw` resizes (and reallocates) only when the batch size changes.
    result = benchmark_callable(signature.run_raw,
                                random_inputs(signature, seed), **kwargs)
    return {"signature": signature.key, **result}


def random_inputs(signature, seed=0, num_classes=1):
    """`make(n)`: n random inputs for `signature`, in its input dtypes.

    Images are uniform in [0, 1], latent codes standard normal, labels
    uniform over `num_classes`; the result is what `Signature.run_raw`
    takes (already quantized for an int8-input file).
    """
    rng = np.random.default_rng(seed)
    shape = tuple(1 if d < 0 else d for d in signature.input_shape[1:])

    def make(size):
        if signature.input_name == "z":
            value = rng.standard_normal((size, *shape))
        else:
            value = rng.uniform(0.0, 1.0, (size, *shape))
        labels = rng.integers(0, num_classes, size).astype(np.int32) \
            if signature.conditional else None
        return signature.prepare(value.astype(np.float32), labels)

    return make


# --------------------------------------------------------------- the codec
# Lossless (bits-back) and lossy compression with the file's `encode` and
# `decode` signatures. The coding itself is keras-vae's numpy-only codec
# core, `keras_vae/codec/core.py`: on a device, copy it beside this file as
# `litert_codec.py` and `pip install constriction`. Streams are
# interchangeable with `keras_vae.codec` only between the same kind of
# model: a lossless stream, or a lossy one with refined pixels
# (`pixel_step`), written here decodes here (same `.tflite` file, same
# LiteRT build and CPU kind, same batch size and library versions).
def codec_core():
    """The codec core module: `litert_codec.py` here, else the repository's."""
    try:
        import litert_codec
    except ImportError:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            os.pardir, "keras_vae", "codec", "core.py")
        if not os.path.exists(path):
            raise ImportError(
                "compress/decompress need keras-vae's codec core: copy "
                "keras_vae/codec/core.py beside litert_vae.py as "
                "litert_codec.py, and `pip install constriction`"
            ) from None
        import importlib.util

        spec = importlib.util.spec_from_file_location("litert_codec", path)
        litert_codec = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(litert_codec)
        sys.modules["litert_codec"] = litert_codec
    return litert_codec


class CodecNetwork:
    """A `LiteRTVAE` as the network the codec core codes with.

    One `encode` and one `decode` signature call per batch. The
    fingerprint is the file's SHA-256 (from its checked metadata).

    Args:
        vae: `LiteRTVAE`. An unconditional model.
    """

    kind = "litert"

    def __init__(self, vae):
        if vae.is_conditional:
            raise ValueError(
                "The codec codes images without labels; this file is a "
                "conditional model. Received: num_classes="
                f"{vae.num_classes}"
            )
        self.vae = vae
        self.likelihood = str(vae.metadata.get("likelihood", ""))
        # The exported DiscretizedLogistic files are 8-bit (256 levels).
        self.num_levels = 256 if self.likelihood in (
            "discretizedlogistic", "contextdiscretizedlogistic") else None
        # The discretised logistic's uniform mixture weight; files exported
        # before it existed have none (0).
        self.uniform_mass = float(vae.metadata.get("uniform_mass") or 0.0)
        self.data_shape = tuple(vae.input_shape)
        self.latent_dim = vae.latent_dim
        prior = vae.prior
        self.standard_normal_prior = prior is None or (
            len(prior["weights"]) == 1 and not np.any(prior["means"])
            and bool(np.all(prior["scales"] == 1.0)))
        self.fingerprint = bytes.fromhex(vae.metadata["sha256"])
        # ContextBernoulli files: the head that codes a pixel after its
        # neighbours (weights in the checked metadata).
        self.context_head = vae.metadata.get("likelihood_head")

    def posterior(self, x):
        return self.vae.encode(x)

    def decode(self, z):
        return self.vae.signatures["decode"](z)


def compress(vae, x, mode="lossless", **options):
    """Compress images with a `LiteRTVAE`; see `keras_vae.codec.compress`.

    Args:
        vae: `LiteRTVAE`.
        x: array `(n, *input_shape)`: binary data for a Bernoulli file,
            uint8 levels (or floats k / 255) for a DiscretizedLogistic one.
        mode: str. `"lossless"` or `"lossy"`.
        **options: `batch_size`, `precision`, `step`, `entropy_model`,
            `pixel_step` (lossy, DiscretizedLogistic files: also code each
            pixel on the grid 0, q, ..., 255, so it comes back within
            q / 2; such a stream decodes with the same file and LiteRT
            build, like a lossless one), `verbose`.

    Returns:
        bytes.
    """
    return codec_core().compress(CodecNetwork(vae), x, mode=mode, **options)


def decompress(vae, data, verbose=1):
    """Decode a stream written with the same file by `compress`.

    Args:
        vae: `LiteRTVAE`.
        data: bytes.
        verbose: int. 0 hides the progress bar.
    """
    return codec_core().decompress(CodecNetwork(vae), data, verbose=verbose)


# ----------------------------------------------------------- command line
def _output_path(out, several):
    """The file `np.save`/`np.savez` would write for `--out`."""
    extension = ".npz" if several or out.endswith(".npz") else ".npy"
    return out if out.endswith(extension) else out + extension


def _check_output(args, several):
    """Refuse an existing `--out` before any work, unless `--overwrite`."""
    if args.out is None:
        return None
    path = _output_path(args.out, several)
    if os.path.lexists(path) and not args.overwrite:
        raise FileExistsError(
            f"{path} exists; pass --overwrite to replace it. "
            f"Received: --out {args.out}"
        )
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(
            f"The folder of --out does not exist: {folder}. "
            f"Received: --out {args.out}"
        )
    return path


def _save(path, arrays, overwrite):
    """Print a summary (no `path`) or write `arrays` atomically to `path`."""
    if path is None:
        for name, array in arrays.items():
            print(f"{name}: shape={array.shape} mean={float(array.mean()):.4f}")
        return
    handle, temporary = tempfile.mkstemp(
        prefix=".tmp-", suffix=os.path.basename(path),
        dir=os.path.dirname(os.path.abspath(path)),
    )
    try:
        with os.fdopen(handle, "wb") as stream:
            if path.endswith(".npz"):
                np.savez(stream, **arrays)
            else:
                np.save(stream, next(iter(arrays.values())))
            stream.flush()
            os.fsync(stream.fileno())
        if overwrite:
            os.replace(temporary, path)
        else:
            # Fails if `path` appeared meanwhile: never replaced silently.
            os.link(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    print(f"wrote {path}")


def _labels_argument(text):
    """`--labels`: one class id, or a `.npy` file of ids."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return np.load(text, allow_pickle=False)


def _input_argument(args):
    if args.input is None:
        raise ValueError(f"`{args.command}` needs --input FILE.npy")
    # No cast: integer (e.g. uint8) data is refused as in the library.
    return np.load(args.input, allow_pickle=False)


def _command_info(vae, args):
    info = {
        "signatures": {
            key: {
                "input": [s.input_name, list(s.input_shape),
                          np.dtype(s.input_dtype).name],
                "labels": s.conditional,
                "outputs": {name: np.dtype(dtype).name
                            for name, _, dtype, _ in s.outputs},
            }
            for key, s in vae.signatures.items()
        },
        "metadata": vae.metadata,
    }
    print(json.dumps(info, indent=2))


def _command_encode(vae, args):
    z_mean, z_log_var = vae.encode(_input_argument(args),
                                   _labels_argument(args.labels))
    return {"z_mean": z_mean, "z_log_var": z_log_var}


def _command_decode(vae, args):
    return {"x_mean": vae.decode(_input_argument(args),
                                 _labels_argument(args.labels))}


def _command_reconstruct(vae, args):
    return {"x_mean": vae.reconstruct(_input_argument(args),
                                      _labels_argument(args.labels))}


def _command_sample(vae, args):
    return {"x_mean": vae.sample(args.num_samples, _labels_argument(args.labels),
                                 seed=args.seed, temperature=args.temperature)}


def _command_bench(vae, args):
    print(json.dumps(vae.benchmark(args.signature, runs=args.runs), indent=2))


def _command_compress(vae, args):
    if args.out is None:
        raise ValueError("`compress` needs --out FILE.kvz")
    if os.path.lexists(args.out) and not args.overwrite:
        raise FileExistsError(f"{args.out} exists; pass --overwrite to "
                              f"replace it. Received: --out {args.out}")
    data = compress(vae, _input_argument(args), mode=args.mode,
                    batch_size=args.batch_size, precision=args.precision,
                    step=args.step, pixel_step=args.pixel_step)
    with open(args.out, "wb") as handle:
        handle.write(data)
    print(f"wrote {args.out} ({len(data)} bytes)")


def _command_decompress(vae, args):
    if args.input is None:
        raise ValueError("`decompress` needs --input FILE.kvz")
    with open(args.input, "rb") as handle:
        return {"x": decompress(vae, handle.read())}


#: Subcommand -> (function(vae, args), whether it writes several arrays).
#: A function returning `{name: array}` has them saved to `--out`.
COMMANDS = {
    "info": (_command_info, False),
    "encode": (_command_encode, True),
    "decode": (_command_decode, False),
    "reconstruct": (_command_reconstruct, False),
    "sample": (_command_sample, False),
    "bench": (_command_bench, False),
    "compress": (_command_compress, False),
    "decompress": (_command_decompress, False),
}


def build_parser():
    """The `argparse` parser of the command line."""
    parser = argparse.ArgumentParser(
        description="Run a keras-vae .tflite file with LiteRT (no TensorFlow)."
    )
    parser.add_argument("model", help=".tflite file")
    parser.add_argument("command", choices=tuple(COMMANDS))
    parser.add_argument("--input", help=".npy input (x for encode/"
                        "reconstruct, z for decode)")
    parser.add_argument("--labels", help="conditional models: one class id, "
                        "or a .npy file of ids")
    parser.add_argument("--out", help=".npy/.npz output (default: print)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out file")
    parser.add_argument("-n", "--num-samples", type=int, default=16)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--signature", default="reconstruct")
    parser.add_argument("--runs", type=int, default=2000)
    # compress / decompress (see `compress`).
    parser.add_argument("--mode", choices=("lossless", "lossy"),
                        default="lossless")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--precision", type=int, default=10)
    parser.add_argument("--step", type=float, default=0.25)
    parser.add_argument("--pixel-step", type=int, default=None,
                        help="lossy, 8-bit files: also code each pixel to "
                        "within half this grid step (a divisor of 255)")
    return parser


def main(argv=None):
    """Command line: `python litert_vae.py FILE {info,encode,...} ...`.

    Returns 0 on success; a refused file, input or output prints the
    reason and returns 2.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    function, several = COMMANDS[args.command]
    try:
        out = _check_output(args, several)
        vae = LiteRTVAE(args.model, num_threads=args.threads)
        arrays = function(vae, args)
        if arrays is not None:
            _save(out, arrays, args.overwrite)
    except (ValueError, OSError) as error:
        print(f"litert_vae: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
