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
    samples = vae.sample(16, seed=0)         # noise drawn here, on the host

or as a command:

    python litert_vae.py vae_int8.tflite info
    python litert_vae.py vae_int8.tflite sample -n 16 --seed 0 --out s.npy
    python litert_vae.py vae_int8.tflite reconstruct --input x.npy --out r.npy
    python litert_vae.py vae_int8.tflite bench --threads 1

It never imports TensorFlow or Keras. Inputs and outputs are float32 numpy
arrays whatever the file stores: a file exported with `int8_io=True` is
quantized and dequantized here with the scales stored in the file.
"""

import argparse
import json
import sys
import time

import numpy as np

try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:  # pragma: no cover - depends on the device
    raise ImportError(
        "litert_vae needs the LiteRT interpreter: `pip install ai-edge-litert`"
    ) from None

SIGNATURE_INPUTS = {"encode": "x", "decode": "z", "reconstruct": "x"}


def read_metadata(path):
    """The `keras_vae` metadata dict stored in a `.tflite` file ({} if none).

    Args:
        path: str. The `.tflite` file.
    """
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # pragma: no cover - older LiteRT wheels
        return {}
    with open(path, "rb") as handle:
        raw = handle.read()
    model = schema.Model.GetRootAs(raw, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if (entry.Name() or b"").decode() != "keras_vae":
            continue
        buffer = model.Buffers(entry.Buffer())
        if buffer.Offset():
            data = raw[buffer.Offset() : buffer.Offset() + buffer.Size()]
        else:
            data = buffer.DataAsNumpy().tobytes()
        return json.loads(bytes(data).decode("utf-8"))
    return {}


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


class Signature:
    """One signature of the file, callable on a float32 numpy array.

    Resizes the batch axis only when the batch size changes, then sets the
    input, invokes and reads the outputs; int8 inputs and outputs are
    converted with the file's scale and zero point.

    Args:
        interpreter: `ai_edge_litert.interpreter.Interpreter`.
        key: str. Signature key.
    """

    def __init__(self, interpreter, key):
        self.key = key
        self.runner = interpreter.get_signature_runner(key)
        inputs = self.runner.get_input_details()
        if len(inputs) != 1:
            raise ValueError(
                f"Expected signature `{key}` to have one input. "
                f"Received: inputs={sorted(inputs)}"
            )
        (self.input_name, details), = inputs.items()
        self.input_index = details["index"]
        self.input_dtype = details["dtype"]
        self.input_quantization = details["quantization"]
        self.input_shape = tuple(int(d) for d in details["shape_signature"])
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
        # (low, high) the data must lie in, e.g. (0, 1) for Bernoulli x.
        self.data_range = None

    def _prepare(self, value):
        value = _check_input(value, self.input_name, self.data_range)
        if self.input_dtype == np.int8:
            scale, zero_point = self.input_quantization
            value = np.clip(np.round(value / scale) + zero_point, -128, 127)
        value = np.ascontiguousarray(value, dtype=self.input_dtype)
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

    def resize(self, batch_size):
        """Set the batch size; later calls of that size skip reallocation."""
        if self._fast and batch_size != self._batch:
            shape = np.array((batch_size, *self.input_shape[1:]), np.int32)
            self._wrapper.ResizeInputTensor(
                self.input_index, shape, False, self._subgraph
            )
            self._wrapper.AllocateTensors(self._subgraph)
            self._batch = batch_size

    def run_raw(self, value):
        """Run on an already prepared array; return the raw outputs."""
        if not self._fast:
            result = self.runner(**{self.input_name: value})
            return [result[name] for name, *_ in self.outputs]
        if value.shape[0] != self._batch:
            self.resize(value.shape[0])
        self._wrapper.SetTensor(self.input_index, value, self._subgraph)
        self._wrapper.Invoke(self._subgraph)
        return [
            self._wrapper.GetTensor(index, self._subgraph)
            for _, index, _, _ in self.outputs
        ]

    def __call__(self, value):
        """Run on float32 `value`; return `{output name: float32 array}`."""
        raw = self.run_raw(self._prepare(value))
        result = {}
        for (name, _, dtype, quantization), array in zip(self.outputs, raw):
            if dtype == np.int8:
                scale, zero_point = quantization
                array = (array.astype(np.float32) - zero_point) * scale
            result[name] = np.asarray(array, np.float32)
        return result


class LiteRTVAE:
    """A keras-vae `.tflite` file ready to encode, decode and sample.

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
            not isinstance(num_threads, int) or num_threads < 1
        ):
            raise ValueError(
                "Expected `num_threads` to be a positive int or None. "
                f"Received: num_threads={num_threads!r}"
            )
        self.path = str(path)
        self.num_threads = num_threads
        try:
            self.interpreter = Interpreter(
                model_path=self.path, num_threads=num_threads
            )
        except ValueError as error:  # missing, truncated or foreign file
            raise ValueError(
                f"LiteRT could not load {self.path} ({error}); the file is "
                f"missing, truncated or not a .tflite model. Re-export it. "
                f"Received: path={self.path!r}"
            ) from None
        self.metadata = read_metadata(self.path)
        self.signatures = {
            key: Signature(self.interpreter, key)
            for key in self.interpreter.get_signature_list()
        }
        if self.metadata.get("likelihood") == "bernoulli":
            for signature in self.signatures.values():
                if signature.input_name == "x":
                    signature.data_range = (0.0, 1.0)

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
        """int. Size of z (from the `decode` or `encode` signature)."""
        if "decode" in self.signatures:
            return self.signatures["decode"].input_shape[-1]
        if "latent_dim" in self.metadata:
            return int(self.metadata["latent_dim"])
        encode = self._signature("encode")
        for name, _index, *_ in encode.outputs:
            if name == "z_mean":
                return int(encode.runner.get_output_details()[name]["shape_signature"][-1])
        raise ValueError(f"Unknown latent size. Received: path={self.path!r}")

    @property
    def input_shape(self):
        """tuple. Per-example shape of `x`."""
        for key in ("encode", "reconstruct"):
            if key in self.signatures:
                return self.signatures[key].input_shape[1:]
        return tuple(self.metadata.get("input_shape", ()))

    def encode(self, x):
        """`(z_mean, z_log_var)` of q(z | x) for float32 `x` `(n, ...)`."""
        outputs = self._signature("encode")(x)
        return outputs["z_mean"], outputs["z_log_var"]

    def decode(self, z):
        """Mean of p(x | z), e.g. pixel probabilities, for `z` `(n, latent)`."""
        return self._signature("decode")(z)["x_mean"]

    def reconstruct(self, x):
        """Reconstruction of `x` through the posterior mean."""
        return self._signature("reconstruct")(x)["x_mean"]

    def sample(self, num_samples, seed=None, temperature=1.0):
        """Decode `num_samples` codes z ~ N(0, temperature^2 I) drawn here.

        Args:
            num_samples: int > 0.
            seed: int or None. Seed of numpy's generator.
            temperature: float > 0. Scale of the prior noise.
        """
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(
                "Expected `num_samples` to be a positive int. "
                f"Received: num_samples={num_samples!r}"
            )
        noise = np.random.default_rng(seed).standard_normal(
            (num_samples, self.latent_dim)
        )
        return self.decode((temperature * noise).astype(np.float32))

    def benchmark(self, signature="reconstruct", **kwargs):
        """Latency and throughput of one signature; see `benchmark_signature`."""
        return benchmark_signature(self._signature(signature), **kwargs)


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

    Times `Signature.run_raw` (set input, invoke, read output) on random
    inputs already converted to the file's input dtype; the batch size is
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


def random_inputs(signature, seed=0):
    """`make(n)`: n random inputs for `signature`, in its input dtype.

    Images are uniform in [0, 1], latent codes standard normal; the
    result is what `Signature.run_raw` takes (already quantized for an
    int8-input file).
    """
    rng = np.random.default_rng(seed)
    shape = tuple(1 if d < 0 else d for d in signature.input_shape[1:])

    def make(size):
        if signature.input_name == "z":
            value = rng.standard_normal((size, *shape))
        else:
            value = rng.uniform(0.0, 1.0, (size, *shape))
        return signature._prepare(value.astype(np.float32))

    return make


def _save(path, arrays):
    if path is None:
        for name, array in arrays.items():
            print(f"{name}: shape={array.shape} mean={float(array.mean()):.4f}")
        return
    if path.endswith(".npz") or len(arrays) > 1:
        np.savez(path, **arrays)
    else:
        np.save(path, next(iter(arrays.values())))
    print(f"wrote {path}")


def main(argv=None):
    """Command line: `python litert_vae.py FILE {info,encode,...} ...`."""
    parser = argparse.ArgumentParser(
        description="Run a keras-vae .tflite file with LiteRT (no TensorFlow)."
    )
    parser.add_argument("model", help=".tflite file")
    parser.add_argument(
        "command",
        choices=("info", "encode", "decode", "reconstruct", "sample", "bench"),
    )
    parser.add_argument("--input", help=".npy input (x for encode/"
                        "reconstruct, z for decode)")
    parser.add_argument("--out", help=".npy/.npz output (default: print)")
    parser.add_argument("-n", "--num-samples", type=int, default=16)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--signature", default="reconstruct")
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args(argv)
    vae = LiteRTVAE(args.model, num_threads=args.threads)
    if args.command == "info":
        info = {
            "signatures": {
                key: {
                    "input": [s.input_name, list(s.input_shape),
                              np.dtype(s.input_dtype).name],
                    "outputs": {name: np.dtype(dtype).name
                                for name, _, dtype, _ in s.outputs},
                }
                for key, s in vae.signatures.items()
            },
            "metadata": vae.metadata,
        }
        print(json.dumps(info, indent=2))
    elif args.command == "sample":
        _save(args.out, {"x_mean": vae.sample(args.num_samples, args.seed)})
    elif args.command == "bench":
        print(json.dumps(vae.benchmark(args.signature, runs=args.runs), indent=2))
    else:
        if args.input is None:
            parser.error(f"{args.command} needs --input FILE.npy")
        value = np.load(args.input).astype(np.float32)
        if args.command == "encode":
            z_mean, z_log_var = vae.encode(value)
            _save(args.out, {"z_mean": z_mean, "z_log_var": z_log_var})
        elif args.command == "decode":
            _save(args.out, {"x_mean": vae.decode(value)})
        else:
            _save(args.out, {"x_mean": vae.reconstruct(value)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
