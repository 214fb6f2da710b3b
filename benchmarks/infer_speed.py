"""Inference speed of `reconstruct`: Keras, LiteRT variants, PyTorch, ONNX Runtime.

One MLP VAE (784-512-256-16) is trained briefly on MNIST-5k (speed does
not depend on how well) and written as LiteRT files with
`keras_vae.export.to_tflite`: float32, dynamic-range int8 (int8 weights,
activations quantized per batch at run time, which XNNPACK runs as its
"qd8" kernels), full int8 with per-tensor Dense weight scales (the
default) and with per-channel scales, and an 80% 1x16-block pruned copy
written both ways `optimize_for` offers: `"latency"` (dense int8 weights)
and `"size"` (LiteRT's sparse encoding). A plain
`model.export(format="litert")` post-training int8 file of the same model
is the no-keras-vae reference. The same trained weights are also built
as an ONNX graph and quantized with ONNX Runtime's own tools
(`onnxruntime.quantization`: static QDQ int8 calibrated on the same 500
images, per-channel weights with `reduce_range` as ONNX Runtime advises
for AVX2 without VNNI, and dynamic int8). Then, in a fresh process per thread count (1
and 2), the candidates are timed round-robin:

- `keras_call`: Keras float `model(x)` (the same as `model.reconstruct`),
- `keras_predict_on_batch`: Keras `model.predict_on_batch(x)`,
- `tflite_<kind>`: the `reconstruct` signature in the LiteRT interpreter,
  through the TensorFlow-free runtime `export/litert_vae.py`,
- `tflite_plain_int8`: the plain Keras export's serving signature,
- `onnx_<kind>`: ONNX Runtime (CPU provider) on the float32, static int8
  and dynamic int8 ONNX files,
- `torch_eager`: the same MLP in PyTorch eager under `torch.inference_mode`,
- `torch_int8_fbgemm`: the same MLP as PyTorch's int8 quantized `Linear`
  layers on the fbgemm engine, a reference for what a specialised AVX2
  int8 library reaches on this CPU (speed only: untrained scales).

Per candidate: batch-1 latency (median and p95 over many calls) and
batch-256 throughput (images per second); min/median/max over rounds. The
ratios are taken round by round (both candidates timed in the same round)
and summarised as median (min-max) over rounds. The reconstruction NLL of
every int8 file on the 1,000 test images is recorded beside (`quality`),
so a fast file that loses quality shows.

    .venv/bin/python benchmarks/infer_speed.py --threads 1 2 --rounds 3

(`make bench` runs it through `benchmarks/run.py`; ONNX Runtime comes with
the `bench` extra, `pip install -e .[bench]`.)
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common
import cpu_peak

TFLITE_KINDS = ("float32", "dynamic", "int8", "int8_per_channel",
                "pruned_int8_dense", "pruned_int8_sparse", "plain_int8")
ONNX_KINDS = ("onnx_float32", "onnx_int8_static", "onnx_int8_dynamic")
# Candidates that compute in int8, for "the fastest int8 runtime".
INT8_CANDIDATES = ("tflite_int8", "tflite_dynamic", "tflite_int8_per_channel",
                   "tflite_plain_int8", "onnx_int8_static", "onnx_int8_dynamic",
                   "torch_int8_fbgemm")
THROUGHPUT_BATCH = 256
# Nominal int8 multiply-accumulates per cycle and core, used only when the
# measured ceiling (`cpu_peak.py`) is not available: AVX2 `vpmaddubsw` on
# two ports (2 x 32); AVX-512 VNNI `vpdpbusd` on two ports (2 x 64).
_INT8_MACS_PER_CYCLE = {"avx512_vnni": 128, "avx_vnni": 64, "avx2": 64}


# ------------------------------------------------------------ prepare
def prepare(directory, epochs=2, prune_epochs=2):
    """Train, export every file into `directory`; return their paths."""
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_vae
    from keras_vae.compression import ConstantSparsity, PruningCallback, strip_pruning
    from keras_vae.export import to_tflite, verify

    (x_train, _), (x_test, _) = keras_vae.datasets.load("mnist5k")
    keras.utils.set_random_seed(0)
    model = keras_vae.models.mlp_vae((28, 28, 1), 16, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(x_train, epochs=epochs, batch_size=128, verbose=0)
    paths = {"keras": os.path.join(directory, "model.keras")}
    model.save(paths["keras"])
    calibration = x_train[:500]
    quality = {}
    for kind, kwargs in (
        ("float32", {"quantization": "none"}),
        ("dynamic", {"quantization": "dynamic"}),
        ("int8", {}),
        ("int8_per_channel", {"per_channel_dense": True}),
    ):
        paths[kind] = os.path.join(directory, f"{kind}.tflite")
        to_tflite(model, paths[kind], representative_data=calibration,
                  overwrite=True, **kwargs)
        quality[f"tflite_{kind}"] = verify(paths[kind], model, x_test).nll_delta_pct

    pruned = keras_vae.models.mlp_vae((28, 28, 1), 16, seed=0)
    pruned.set_weights(model.get_weights())
    pruned.compile(optimizer=keras.optimizers.Adam(1e-3))
    pruned.fit(x_train, epochs=prune_epochs, batch_size=128, verbose=0,
               callbacks=[PruningCallback(ConstantSparsity(0.8, 0, frequency=8),
                                          block_size=(16, 1))])
    pruned = strip_pruning(pruned)
    for kind, optimize_for in (("pruned_int8_dense", "latency"),
                               ("pruned_int8_sparse", "size")):
        paths[kind] = os.path.join(directory, f"{kind}.tflite")
        to_tflite(pruned, paths[kind], representative_data=calibration,
                  overwrite=True, optimize_for=optimize_for)
        quality[f"tflite_{kind}"] = verify(paths[kind], pruned, x_test).nll_delta_pct

    def representative_dataset():
        for row in calibration:
            yield [row[None]]

    paths["plain_int8"] = os.path.join(directory, "plain_int8.tflite")
    model.export(
        paths["plain_int8"], format="litert", verbose=False,
        optimizations=[tf.lite.Optimize.DEFAULT],
        representative_dataset=representative_dataset,
        target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
    )
    onnx_quality = export_onnx(model, directory, calibration, x_test, paths)
    quality.update(onnx_quality)
    with open(os.path.join(directory, "paths.json"), "w") as handle:
        json.dump(paths, handle)
    sizes = {k: os.path.getsize(v) for k, v in paths.items()
             if v.endswith((".tflite", ".onnx"))}
    gzip_sizes = {k: _gzip_size(v) for k, v in paths.items()
                  if v.endswith((".tflite", ".onnx"))}
    return {"paths": paths, "bytes": sizes, "gzip_bytes": gzip_sizes,
            "nll_delta_pct": quality,
            "macs_per_image": reconstruct_macs(model),
            "kernel_sparsity_pruned": float(np.mean(
                [np.mean(w == 0) for w in pruned.get_weights()
                 if w.ndim == 2]))}


def _gzip_size(path):
    import gzip

    with open(path, "rb") as handle:
        return len(gzip.compress(handle.read(), compresslevel=9, mtime=0))


# ------------------------------------------------------------ ONNX Runtime
def onnx_graph(model):
    """The MLP VAE's `reconstruct` path as an ONNX model, same weights.

    Built from the Keras Dense kernels with `onnx.helper` (MatMul + Add +
    Relu, Sigmoid on the logits), the graph a converter would write, so
    ONNX Runtime's quantizer sees plain MatMuls.
    """
    import keras
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dense = [layer for part in (model.encoder, model.decoder)
             for layer in part.layers
             if isinstance(layer, keras.layers.Dense)
             and "log_var" not in layer.name]
    shape = tuple(model.input_spec_shape)
    nodes = [helper.make_node("Flatten", ["x"], ["h0"], axis=1)]
    weights = []
    for i, layer in enumerate(dense):
        kernel, bias = (keras.ops.convert_to_numpy(w) for w in layer.weights)
        weights += [numpy_helper.from_array(kernel.astype(np.float32), f"w{i}"),
                    numpy_helper.from_array(bias.astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [f"h{i}", f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"])]
        last = i == len(dense) - 1
        # No activation after the posterior mean; sigmoid after the logits.
        op = "Sigmoid" if last else (
            "Identity" if layer.name == "z_mean" else "Relu")
        nodes.append(helper.make_node(op, [f"a{i}"],
                                      ["flat"] if last else [f"h{i + 1}"]))
    weights.append(numpy_helper.from_array(
        np.array((-1, *shape), np.int64), "shape"))
    nodes.append(helper.make_node("Reshape", ["flat", "shape"], ["x_mean"]))
    graph = helper.make_graph(
        nodes, "reconstruct",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, *shape])],
        [helper.make_tensor_value_info("x_mean", TensorProto.FLOAT,
                                       [None, *shape])],
        initializer=weights,
    )
    onnx_model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx_model.ir_version = 9
    onnx.checker.check_model(onnx_model)
    return onnx_model


def export_onnx(model, directory, calibration, x_test, paths):
    """Float32, static int8 (QDQ) and dynamic int8 ONNX files; their NLL.

    Quantized with ONNX Runtime's own tools: `quantize_static` (QDQ,
    uint8 activations with MinMax ranges from the 500 calibration images,
    int8 weights per channel with `reduce_range`, the setting ONNX
    Runtime recommends for AVX2 CPUs without VNNI: its u8s8 kernels
    multiply with `vpmaddubsw`, whose 16-bit sums saturate on full 8-bit
    weights; with the defaults the NLL was +1.3% on MNIST-5k, with these
    +0.6%) and `quantize_dynamic` (int8 weights, activation ranges per
    batch at run time).
    """
    import keras
    import numpy as np
    import onnx

    try:
        import onnxruntime as ort
        from onnxruntime import quantization
    except ImportError:
        print("onnxruntime is not installed (pip install -e .[bench]): "
              "no ONNX Runtime rows", flush=True)
        return {}

    class Reader(quantization.CalibrationDataReader):
        def __init__(self, rows):
            self.rows = iter(rows)

        def get_next(self):
            row = next(self.rows, None)
            return None if row is None else {"x": row[None]}

    paths["onnx_float32"] = os.path.join(directory, "float32.onnx")
    onnx.save(onnx_graph(model), paths["onnx_float32"])
    paths["onnx_int8_static"] = os.path.join(directory, "int8_static.onnx")
    quantization.quantize_static(
        paths["onnx_float32"], paths["onnx_int8_static"], Reader(calibration),
        quant_format=quantization.QuantFormat.QDQ, per_channel=True,
        reduce_range=True, activation_type=quantization.QuantType.QUInt8,
        weight_type=quantization.QuantType.QInt8)
    paths["onnx_int8_dynamic"] = os.path.join(directory, "int8_dynamic.onnx")
    quantization.quantize_dynamic(
        paths["onnx_float32"], paths["onnx_int8_dynamic"],
        weight_type=quantization.QuantType.QInt8)
    likelihood = model.likelihood
    z_mean, _ = model.posterior(x_test)
    keras_nll = float(np.mean(keras.ops.convert_to_numpy(
        likelihood.negative_log_prob(x_test, model.decoder_params(z_mean)))))
    quality = {}
    for kind in ONNX_KINDS:
        session = ort.InferenceSession(paths[kind],
                                       providers=["CPUExecutionProvider"])
        mean = session.run(None, {"x": x_test})[0]
        nll = float(np.mean(keras.ops.convert_to_numpy(
            likelihood.negative_log_prob_from_mean(x_test, mean))))
        quality[kind] = 100.0 * (nll - keras_nll) / keras_nll
    return quality


def onnx_runner(path, threads):
    """`run(batch)` of an ONNX file with `threads` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, options,
                                   providers=["CPUExecutionProvider"])
    outputs = ["x_mean"]

    def run(value):
        return session.run(outputs, {"x": value})[0]

    return run


def reconstruct_macs(model):
    """Multiply-accumulates of one `reconstruct` (the z_log_var head unused)."""
    macs = 0
    for part in (model.encoder, model.decoder):
        for layer in part.layers:
            kernel = getattr(layer, "kernel", None)
            if kernel is None or "log_var" in layer.name:
                continue
            macs += int(kernel.shape[0]) * int(kernel.shape[1])
    return macs


# ------------------------------------------------------------ timing
def _latency(fn, value, runs, warmup=20):
    import numpy as np

    for _ in range(warmup):
        fn(value)
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter_ns()
        fn(value)
        times[i] = time.perf_counter_ns() - start
    return float(np.median(times) / 1e3), float(np.percentile(times, 95) / 1e3)


def _throughput(fn, value, runs, warmup=3):
    for _ in range(warmup):
        fn(value)
    start = time.perf_counter()
    for _ in range(runs):
        fn(value)
    return len(value) * runs / (time.perf_counter() - start)


def interleaved(candidates, cycles, throughput_cycles, block=25, warmup=5,
                throughput_block=4):
    """Time fast candidates side by side: short blocks, in turn.

    Each cycle runs every candidate for `warmup` untimed and `block` timed
    batch-1 calls, one after the other, so all of them meet the same load
    within milliseconds (this shared VM's speed drifts by 30% between
    seconds). The warm-up calls bring the candidate's weights back into
    the cache, as in an app that calls one model repeatedly. Batch-256
    throughput is timed the same way with `throughput_block` calls.

    Args:
        candidates: `{name: (run, batch1, batch256)}`.

    Returns:
        `{name: {"latency_median_us", "latency_p95_us",
        "throughput_per_s"}}` over all the cycles.
    """
    import numpy as np

    clock = time.perf_counter_ns
    times = {name: [] for name in candidates}
    for _ in range(cycles):
        for name, (run, small, _) in candidates.items():
            for _ in range(warmup):
                run(small)
            for _ in range(block):
                start = clock()
                run(small)
                times[name].append(clock() - start)
    seconds = {name: [] for name in candidates}
    for _ in range(throughput_cycles):
        for name, (run, _, large) in candidates.items():
            run(large)
            start = clock()
            for _ in range(throughput_block):
                run(large)
            seconds[name].append((clock() - start) / throughput_block / 1e9)
    return {
        name: {
            "latency_median_us": float(np.median(times[name]) / 1e3),
            "latency_p95_us": float(np.percentile(times[name], 95) / 1e3),
            "throughput_per_s": float(THROUGHPUT_BATCH
                                      / np.median(seconds[name])),
        }
        for name in candidates
    }


def _runtime():
    """The TensorFlow-free runtime `export/litert_vae.py` as a module."""
    sys.path.insert(0, os.path.join(_common.REPO_DIR, "export"))
    import litert_vae

    return litert_vae


def _litert_signature(path, threads):
    """The `reconstruct` signature of a file (or its only signature)."""
    runtime = _runtime()
    interpreter = runtime.Interpreter(model_path=path, num_threads=threads)
    keys = list(interpreter.get_signature_list())
    key = "reconstruct" if "reconstruct" in keys else keys[0]
    return runtime.Signature(interpreter, key)


def measure(paths, threads, rounds=3, runs=1000, keras_runs=200,
            throughput_runs=100, quick=False):
    """Time every candidate round-robin with `threads` threads."""
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras
    import train_speed

    import keras_vae  # noqa: F401  (registers the classes to load)

    rng = np.random.default_rng(0)
    x1 = rng.uniform(size=(1, 28, 28, 1)).astype("float32")
    x256 = rng.uniform(size=(THROUGHPUT_BATCH, 28, 28, 1)).astype("float32")
    model = keras.saving.load_model(paths["keras"])
    t1, t256 = tf.constant(x1), tf.constant(x256)

    def keras_call(value):
        return model(value, training=False).numpy()

    # Slow candidates are timed one after the other, with their own call
    # counts; fast ones (< 1 ms per batch-1 call) side by side.
    slow = {
        "keras_call": (keras_call, t1, t256, keras_runs),
        "keras_predict_on_batch": (model.predict_on_batch, x1, x256,
                                   keras_runs),
    }
    fast = {}
    runtime = _runtime()
    for kind in TFLITE_KINDS:
        if kind in paths:
            signature = _litert_signature(paths[kind], threads)
            make = runtime.random_inputs(signature)
            fast[f"tflite_{kind}"] = (signature.run_raw, make(1),
                                      make(THROUGHPUT_BATCH))
    for kind in ONNX_KINDS:
        if kind in paths:
            fast[kind] = (onnx_runner(paths[kind], threads), x1, x256)

    torch = train_speed.ensure_torch()
    torch.set_num_threads(threads)
    torch_model = train_speed.build_reference_torch(
        (28, 28, 1), deterministic=True, **train_speed.ARCHITECTURE).eval()

    def torch_call(value):
        with torch.inference_mode():
            return torch_model(torch.from_numpy(value)).numpy()

    fast["torch_eager"] = (torch_call, x1, x256)
    torch_int8 = build_torch_int8(torch, torch_model, x256)
    if torch_int8 is not None:
        fast["torch_int8_fbgemm"] = (torch_int8, x1, x256)

    results = {name: [] for name in [*slow, *fast]}
    for _ in range(rounds):
        for name, row in interleaved(
                fast, cycles=max(2, runs // 25),
                throughput_cycles=max(2, throughput_runs // 10)).items():
            results[name].append(row)
        for name, (fn, small, large, n) in slow.items():
            median, p95 = _latency(fn, small, n)
            results[name].append({
                "latency_median_us": median, "latency_p95_us": p95,
                "throughput_per_s": _throughput(
                    fn, large, max(5, throughput_runs // 5)),
            })
    return {name: {key: _common.summary([row[key] for row in rows])
                   for key in rows[0]}
            for name, rows in results.items()}


def build_torch_int8(torch, torch_model, calibration):
    """`reconstruct` of `torch_model` as int8 quantized `Linear` layers.

    PyTorch's fbgemm engine multiplies uint8 activations by int8 weights
    with `vpmaddubsw` on AVX2, the densest int8 multiply this CPU has; it
    is here as a speed reference for int8 on this CPU, not as a model
    (per-tensor scales from one batch, no quality checks). Returns a
    callable on float32 numpy batches, or None without fbgemm.
    """
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        return None
    import warnings

    torch.backends.quantized.engine = "fbgemm"
    quantized = torch.ao.nn.quantized
    chain = [torch_model.encoder[0], torch_model.encoder[2], torch_model.mu,
             torch_model.decoder[0], torch_model.decoder[2], torch_model.out]
    layers, value = [], torch.from_numpy(calibration).reshape(
        len(calibration), -1)

    def activation_params(tensor):
        # uint8 (scale, zero point) covering the tensor's range and zero.
        low, high = min(float(tensor.min()), 0.0), max(float(tensor.max()),
                                                         1e-6)
        scale = (high - low) / 255.0
        return scale, int(round(-low / scale))

    input_params = activation_params(value)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for index, linear in enumerate(chain):
            value = linear(value)
            if index not in (2, 5):  # ReLU but after the mean and logits
                value = torch.relu(value)
            weight = linear.weight.detach()
            layer = quantized.Linear(linear.in_features, linear.out_features)
            layer.set_weight_bias(
                torch.quantize_per_tensor(
                    weight, float(weight.abs().max()) / 127.0, 0, torch.qint8),
                linear.bias.detach())
            layer.scale, layer.zero_point = activation_params(value)
            layers.append((layer, index not in (2, 5)))

    def reconstruct(batch):
        with torch.inference_mode():
            flat = torch.from_numpy(batch).reshape(len(batch), -1)
            value = torch.quantize_per_tensor(flat, *input_params,
                                              torch.quint8)
            for layer, relu in layers:
                value = layer(value)
                if relu:
                    value = torch.relu(value)
            return torch.sigmoid(value.dequantize()).numpy()

    return reconstruct


# ------------------------------------------------------------ report
def int8_peak_ops(threads, info=None, ceilings=None):
    """int8 ops/s (2 per multiply-accumulate) of `threads` cores.

    The measured ceiling of `cpu_peak.py` (the densest int8 multiply of
    the CPU, all cores at once) when given; otherwise the nominal value
    from the CPU flags and clock.
    """
    rates = (ceilings or {}).get("per_threads", {}).get(str(threads))
    if rates:
        return 2.0 * rates["maddubs_u8s8"]
    info = info or _common.machine_info()
    flags = set(info.get("cpu_flags") or [])
    per_cycle = next((v for k, v in _INT8_MACS_PER_CYCLE.items()
                      if k in flags), 16)
    mhz = info.get("cpu_mhz") or _common.cpu_mhz()
    return 2.0 * per_cycle * mhz * 1e6 * threads


def _per_round(table, numerator, denominator, key):
    """`numerator / denominator` of `key` round by round, summarised.

    Both candidates were timed in the same rounds (round-robin), so each
    round's ratio compares them under the same load; the median over
    rounds is the figure, min-max its spread.
    """
    top = table[numerator][key]["values"]
    bottom = table[denominator][key]["values"]
    return _common.summary([a / b for a, b in zip(top, bottom, strict=True)])


def ratios(table, macs_per_image, threads, info=None, ceilings=None):
    """The export issue's speed targets and the int8 peak fraction.

    Each ratio is the median over rounds of the same-round ratio; its
    min-max over rounds is stored under the same name plus `_range`.
    """
    def med(name, key):
        return table[name][key]["median"]

    out = {}
    if "tflite_int8" not in table:
        return out

    def put(name, stats, scale=1.0, shift=0.0):
        out[name] = scale * stats["median"] + shift
        out[name + "_range"] = [scale * stats["min"] + shift,
                                scale * stats["max"] + shift]

    latency, throughput = "latency_median_us", "throughput_per_s"
    # The default int8 file against the fastest int8 runtime measured: how
    # much more time it takes per call (batch 1) or per image (batch 256).
    int8 = [name for name in INT8_CANDIDATES if name in table]
    fastest1 = min(int8, key=lambda name: med(name, latency))
    fastest256 = max(int8, key=lambda name: med(name, throughput))
    out["fastest_int8_batch1"], out["fastest_int8_batch256"] = (
        fastest1, fastest256)
    put("default_int8_slowdown_vs_fastest_batch1_pct",
        _per_round(table, "tflite_int8", fastest1, latency), 100.0, -100.0)
    put("default_int8_slowdown_vs_fastest_batch256_pct",
        _per_round(table, fastest256, "tflite_int8", throughput), 100.0, -100.0)
    if "tflite_pruned_int8_sparse" in table and "tflite_pruned_int8_dense" in table:
        put("pruned_sparse_vs_dense_time_batch1",
            _per_round(table, "tflite_pruned_int8_sparse",
                       "tflite_pruned_int8_dense", latency))
        put("pruned_sparse_vs_dense_time_batch256",
            _per_round(table, "tflite_pruned_int8_dense",
                       "tflite_pruned_int8_sparse", throughput))
    if "tflite_float32" in table:
        put("int8_vs_float32_batch1",
            _per_round(table, "tflite_float32", "tflite_int8", latency))
        put("int8_vs_float32_batch256",
            _per_round(table, "tflite_int8", "tflite_float32", throughput))
    if "torch_eager" in table:
        put("int8_vs_torch_batch1",
            _per_round(table, "torch_eager", "tflite_int8", latency))
    if "tflite_plain_int8" in table:
        put("int8_slowdown_vs_plain_batch1_pct",
            _per_round(table, "tflite_int8", "tflite_plain_int8", latency),
            100.0, -100.0)
        put("int8_slowdown_vs_plain_batch256_pct",
            _per_round(table, "tflite_plain_int8", "tflite_int8", throughput),
            100.0, -100.0)
    int8_tp = med("tflite_int8", throughput)
    rates = (ceilings or {}).get("per_threads", {}).get(str(threads))
    out["int8_batch256_ops_per_s"] = int8_tp * 2.0 * macs_per_image
    out["int8_peak_ops_per_s"] = int8_peak_ops(threads, info, ceilings)
    out["int8_peak_measured"] = bool(rates)
    out["int8_batch256_fraction_of_peak"] = (
        out["int8_batch256_ops_per_s"] / out["int8_peak_ops_per_s"])
    if rates and "tflite_float32" in table:
        float_macs = med("tflite_float32", throughput) * macs_per_image
        out["float32_batch256_fraction_of_fma_ceiling"] = (
            float_macs / rates["fma_f32"])
        # What the 3x batch-256 target asks of int8 arithmetic, over the
        # densest int8 multiply this CPU retires (no loads, no stores).
        out["int8_needed_for_3x_over_best_int8_ceiling"] = (
            3.0 * float_macs / rates["maddubs_u8s8"])
        if "torch_int8_fbgemm" in table:
            out["torch_int8_fraction_of_int8_ceiling"] = (
                med("torch_int8_fbgemm", throughput) * macs_per_image
                / rates["maddubs_u8s8"])
    return out


def benchmark(threads=(1, 2), rounds=3, epochs=2, quick=False, log=print):
    """Prepare the files once, then time them per thread count."""
    directory = tempfile.mkdtemp(prefix="keras_vae_infer_")
    prepared = _common.run_child("infer_speed",
                                 ["--prepare", directory, "--epochs", epochs])
    log(f"  infer: files {prepared['bytes']}")
    ceilings = cpu_peak.measure(threads)
    log(f"  infer: CPU ceilings {ceilings}")
    result = {"prepared": prepared, "threads": {}, "cpu_peak": ceilings}
    for count in threads:
        args = ["--measure", directory, "--threads", count, "--rounds",
                rounds] + (["--quick"] if quick else [])
        table = _common.run_child("infer_speed", args, threads=count)
        result["threads"][str(count)] = {
            "table": table,
            "targets": ratios(table, prepared["macs_per_image"], count,
                              ceilings=ceilings),
        }
        for name, row in table.items():
            log(f"  infer {count} thread(s) {name:24s} "
                f"batch1 {row['latency_median_us']['median']:9.1f} us  "
                f"batch256 {row['throughput_per_s']['median']:10.0f}/s")
    return result


def _child_main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--prepare")
    parser.add_argument("--measure")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.prepare:
        return _common.emit(prepare(args.prepare, args.epochs,
                                    prune_epochs=args.epochs))
    with open(os.path.join(args.measure, "paths.json")) as handle:
        paths = json.load(handle)
    runs = 100 if args.quick else 1000
    _common.emit(measure(paths, args.threads, args.rounds, runs=runs,
                         keras_runs=20 if args.quick else 200,
                         throughput_runs=10 if args.quick else 100))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--child" in argv:
        return _child_main(argv)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    result = benchmark(args.threads, args.rounds, args.epochs)
    print(json.dumps({k: v["targets"] for k, v in result["threads"].items()},
                     indent=1))


if __name__ == "__main__":
    main()
