"""Read a `.tflite` file's ops, tensor dtypes, sizes and metadata.

Parses the flatbuffer with the schema that ships inside `ai-edge-litert`,
so it needs neither TensorFlow nor an interpreter, and it sees exactly what
is stored: which ops exist, the dtype of every tensor they read and write,
and how many bytes the weights take.
"""

import dataclasses
import gzip
import hashlib
import json
import os
import re

import numpy as np

# Name of the metadata entry `to_tflite` writes into every file.
METADATA_NAME = "keras_vae"
# Ops that do the multiply-accumulate work of a VAE. In a full-int8 file
# each of them must read int8 activations and int8 weights.
COMPUTE_OPS = (
    "FULLY_CONNECTED",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "TRANSPOSE_CONV",
    "BATCH_MATMUL",
)
# Operand positions (activation, weights); TRANSPOSE_CONV takes the output
# shape first.
_OPERANDS = {"TRANSPOSE_CONV": (2, 1)}
# The converter keeps weight tensors smaller than this in float32 under
# dynamic-range quantization: they cost little and quantize badly.
DYNAMIC_MIN_ELEMENTS = 1024
# Ops allowed to touch float tensors in a full-int8 file with float I/O: they
# convert at the file's boundary.
BOUNDARY_OPS = ("QUANTIZE", "DEQUANTIZE")
# Signature inputs that carry class ids (conditional models), int32 in every
# quantization mode.
LABEL_INPUTS = ("label",)
# Metadata key of the SHA-256 of the file, taken with this field's 64 hex
# digits set to "0" (the file holds its own checksum).
CHECKSUM_KEY = "sha256"
_DIGITS = 64
_CHECKSUM_FIELD = re.compile(rb'"sha256": "([0-9a-f]{64})"')


def _schema():
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:  # pragma: no cover - ai-edge-litert is a dependency
        raise ImportError(
            "Reading .tflite files needs ai-edge-litert: "
            "`pip install ai-edge-litert`."
        ) from None
    return schema_py_generated


def _constant_names(cls):
    return {
        value: name
        for name, value in vars(cls).items()
        if not name.startswith("_") and isinstance(value, int)
    }


@dataclasses.dataclass
class OpInfo:
    """One operator of one signature.

    Attributes:
        signature: str. Signature key (or `subgraph_<i>` when unnamed).
        op: str. Built-in op name, e.g. `"FULLY_CONNECTED"`, or
            `"CUSTOM:<code>"`.
        input_dtypes: tuple of str. Dtype of each input tensor (`"none"`
            for an omitted optional input).
        output_dtypes: tuple of str.
        sparse_inputs: tuple of bool. Whether each input is stored sparse.
        input_sizes: tuple of int. Element count of each input (-1 when
            the shape is dynamic or the input omitted).
    """

    signature: str
    op: str
    input_dtypes: tuple
    output_dtypes: tuple
    sparse_inputs: tuple
    input_sizes: tuple = ()


@dataclasses.dataclass
class TFLiteFile:
    """What a `.tflite` file holds.

    Attributes:
        path: str or None.
        num_bytes: int. File size.
        gzip_bytes: int. Size after `gzip -9`, what a download costs.
        ops: list of `OpInfo`.
        signatures: dict. Signature key -> `{"inputs": {name: dtype},
            "outputs": {name: dtype}}`.
        weight_bytes: dict. Dtype -> bytes of constant tensors.
        sparse_tensors: int. Constant tensors stored with sparse encoding.
        metadata: dict. The `keras_vae` metadata entry (empty if absent).
        checksum_problem: str or None. Why the file's bytes do not match
            the SHA-256 stored in its metadata (None when they do).
    """

    path: object
    num_bytes: int
    gzip_bytes: int
    ops: list
    signatures: dict
    weight_bytes: dict
    sparse_tensors: int
    metadata: dict
    checksum_problem: object = None

    def op_table(self):
        """Rows `(op, input dtypes, output dtypes, count)`, all signatures."""
        counts = {}
        for info in self.ops:
            key = (
                info.op,
                ",".join(info.input_dtypes),
                ",".join(info.output_dtypes),
            )
            counts[key] = counts.get(key, 0) + 1
        return [key + (count,) for key, count in sorted(counts.items())]

    def to_markdown(self):
        """The size and op/dtype table as Markdown."""
        name = os.path.basename(self.path) if self.path else "model"
        lines = [
            f"`{name}`: {self.num_bytes:,} bytes, {self.gzip_bytes:,} gzip "
            f"bytes, {self.sparse_tensors} sparse tensors",
            "",
            "| op | input dtypes | output dtypes | count |",
            "|---|---|---|---:|",
        ]
        for op, inputs, outputs, count in self.op_table():
            lines.append(f"| {op} | {inputs} | {outputs} | {count} |")
        weights = ", ".join(
            f"{dtype}: {size:,}" for dtype, size in sorted(self.weight_bytes.items())
        )
        lines += ["", f"Constant tensor bytes by dtype: {weights}."]
        return "\n".join(lines)

    def __str__(self):
        return self.to_markdown()


def _signature_names(model, num_subgraphs):
    names = {i: f"subgraph_{i}" for i in range(num_subgraphs)}
    for i in range(model.SignatureDefsLength()):
        signature = model.SignatureDefs(i)
        names[signature.SubgraphIndex()] = signature.SignatureKey().decode()
    return names


def _read_metadata(model, raw):
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() and entry.Name().decode() == METADATA_NAME:
            buffer = model.Buffers(entry.Buffer())
            if buffer.Offset():
                data = raw[buffer.Offset() : buffer.Offset() + buffer.Size()]
            else:
                data = buffer.DataAsNumpy().tobytes()
            return json.loads(bytes(data).decode("utf-8"))
    return {}


def read_tflite(path_or_bytes):
    """Parse a `.tflite` file (path or bytes) into a `TFLiteFile`.

    Args:
        path_or_bytes: str, `os.PathLike` or bytes.

    Example:

    >>> from keras_vae.export import read_tflite  # doctest: +SKIP
    >>> print(read_tflite("vae_int8.tflite"))  # doctest: +SKIP
    """
    schema = _schema()
    if isinstance(path_or_bytes, (bytes, bytearray)):
        raw, path = bytes(path_or_bytes), None
    else:
        path = os.fspath(path_or_bytes)
        with open(path, "rb") as handle:
            raw = handle.read()
    if len(raw) < 8 or raw[4:8] != b"TFL3":
        raise ValueError(
            "Not a TFLite flatbuffer (the file identifier `TFL3` is missing); "
            "the file is corrupt or is not a .tflite model. "
            f"Received: path={path!r} with {len(raw)} bytes"
        )
    try:
        model = schema.Model.GetRootAs(raw, 0)
        op_names = _constant_names(schema.BuiltinOperator)
        type_names = {
            value: name.lower()
            for value, name in _constant_names(schema.TensorType).items()
        }
        codes = []
        for i in range(model.OperatorCodesLength()):
            code = model.OperatorCodes(i)
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            name = op_names.get(builtin, str(builtin))
            if name == "CUSTOM":
                name = f"CUSTOM:{(code.CustomCode() or b'').decode()}"
            codes.append(name)
        names = _signature_names(model, model.SubgraphsLength())
        ops, signatures, weight_bytes = [], {}, {}
        sparse_tensors = 0
        counted_buffers = set()
        for s in range(model.SubgraphsLength()):
            graph = model.Subgraphs(s)
            tensors = [graph.Tensors(t) for t in range(graph.TensorsLength())]
            dtypes = [type_names.get(t.Type(), str(t.Type())) for t in tensors]
            sparse = [t.Sparsity() is not None for t in tensors]
            sizes = [
                int(np.prod(t.ShapeAsNumpy())) if t.ShapeLength() else 1
                for t in tensors
            ]
            for t, tensor in enumerate(tensors):
                buffer_index = tensor.Buffer()
                if buffer_index == 0 or buffer_index in counted_buffers:
                    continue
                buffer = model.Buffers(buffer_index)
                size = buffer.Size() if buffer.Offset() else buffer.DataLength()
                if size:
                    counted_buffers.add(buffer_index)
                    weight_bytes[dtypes[t]] = weight_bytes.get(dtypes[t], 0) + size
                    sparse_tensors += int(sparse[t])
            for o in range(graph.OperatorsLength()):
                operator = graph.Operators(o)
                inputs = [operator.Inputs(i) for i in range(operator.InputsLength())]
                outputs = [
                    operator.Outputs(i) for i in range(operator.OutputsLength())
                ]
                ops.append(
                    OpInfo(
                        signature=names[s],
                        op=codes[operator.OpcodeIndex()],
                        input_dtypes=tuple(
                            dtypes[i] if i >= 0 else "none" for i in inputs
                        ),
                        output_dtypes=tuple(dtypes[i] for i in outputs),
                        sparse_inputs=tuple(i >= 0 and sparse[i] for i in inputs),
                        input_sizes=tuple(
                            sizes[i] if i >= 0 and sizes[i] >= 0 else -1
                            for i in inputs
                        ),
                    )
                )
        for i in range(model.SignatureDefsLength()):
            signature = model.SignatureDefs(i)
            graph = model.Subgraphs(signature.SubgraphIndex())
            entry = {"inputs": {}, "outputs": {}}
            for key, length, getter in (
                ("inputs", signature.InputsLength(), signature.Inputs),
                ("outputs", signature.OutputsLength(), signature.Outputs),
            ):
                for j in range(length):
                    tensor_map = getter(j)
                    tensor = graph.Tensors(tensor_map.TensorIndex())
                    entry[key][tensor_map.Name().decode()] = type_names.get(
                        tensor.Type(), str(tensor.Type())
                    )
            signatures[signature.SignatureKey().decode()] = entry
        metadata = _read_metadata(model, raw)
    except ValueError:
        raise
    except Exception as error:
        raise ValueError(
            f"Could not parse the TFLite flatbuffer ({type(error).__name__}: "
            f"{error}); the file is corrupt. Received: path={path!r}"
        ) from None
    return TFLiteFile(
        path=path,
        num_bytes=len(raw),
        gzip_bytes=len(gzip.compress(raw, compresslevel=9, mtime=0)),
        ops=ops,
        signatures=signatures,
        weight_bytes=weight_bytes,
        sparse_tensors=sparse_tensors,
        metadata=metadata,
        checksum_problem=checksum_problem(raw, metadata),
    )


def dtype_problems(tflite_file, quantization, int8_io=False):
    """List how a file's ops and dtypes differ from a quantization mode.

    Args:
        tflite_file: `TFLiteFile`.
        quantization: str. `"int8"`, `"dynamic"`, `"float16"` or `"none"`.
        int8_io: bool. For `"int8"`: signature inputs and outputs must be
            int8 too.

    Returns:
        list of str, empty when the file matches.
    """
    problems = []
    float_types = ("float32", "float16", "float64")
    for info in tflite_file.ops:
        where = f"{info.op} in signature `{info.signature}`"
        activation, weights = _OPERANDS.get(info.op, (0, 1))
        if info.op in COMPUTE_OPS:
            activation = info.input_dtypes[activation]
            weights = info.input_dtypes[weights]
        if quantization == "int8":
            if info.op in COMPUTE_OPS and (
                activation != "int8" or weights != "int8"
            ):
                problems.append(
                    f"{where} computes in {activation} with {weights} "
                    "weights, expected int8"
                )
            elif info.op not in BOUNDARY_OPS and any(
                d in float_types for d in info.input_dtypes + info.output_dtypes
            ):
                problems.append(
                    f"{where} has float tensors {info.input_dtypes} -> "
                    f"{info.output_dtypes}, expected integer only"
                )
        elif quantization == "dynamic":
            if (
                info.op in COMPUTE_OPS
                and weights != "int8"
                and info.input_sizes[_OPERANDS.get(info.op, (0, 1))[1]]
                >= DYNAMIC_MIN_ELEMENTS
            ):
                problems.append(
                    f"{where} has {weights} weights, expected "
                    "int8 weights (dynamic range)"
                )
        elif quantization in ("float16", "none"):
            if info.op in COMPUTE_OPS and activation != "float32":
                problems.append(
                    f"{where} computes in {activation}, expected float32"
                )
    if quantization == "float16" and "float16" not in tflite_file.weight_bytes:
        problems.append("no float16 weights stored, expected float16 weights")
    if quantization == "none" and set(tflite_file.weight_bytes) & {"int8", "float16"}:
        problems.append(
            "stores quantized weights "
            f"{sorted(set(tflite_file.weight_bytes) & {'int8', 'float16'})}, "
            "expected float32 only"
        )
    if quantization == "int8":
        expected = "int8" if int8_io else "float32"
        for key, entry in tflite_file.signatures.items():
            for direction in ("inputs", "outputs"):
                for name, dtype in entry[direction].items():
                    if direction == "inputs" and name in LABEL_INPUTS:
                        if dtype != "int32":
                            problems.append(
                                f"signature `{key}` input `{name}` is "
                                f"{dtype}, expected int32 class ids"
                            )
                    elif dtype != expected:
                        problems.append(
                            f"signature `{key}` {direction[:-1]} `{name}` is "
                            f"{dtype}, expected {expected} (int8_io={int8_io})"
                        )
    if not tflite_file.ops:
        problems.append("the file has no ops")
    return problems


def size_report(path):
    """Size, gzip size and per-op dtype table of a `.tflite` file.

    Args:
        path: str or `os.PathLike`. The `.tflite` file.

    Returns:
        `TFLiteFile`; `print` it or call `to_markdown()` for the table.

    Example:

    >>> import keras_vae  # doctest: +SKIP
    >>> print(keras_vae.export.size_report("vae_int8.tflite"))  # doctest: +SKIP
    """
    return read_tflite(path)


def add_metadata(model_bytes, name, payload):
    """Return `model_bytes` with the JSON metadata entry `name` set to `payload`.

    An existing entry of that name is replaced, its buffer reused, so the
    old payload does not stay in the file. No checksum is added: see
    `set_metadata` for the `keras_vae` entry.
    """
    schema = _schema()
    import flatbuffers

    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    data = np.frombuffer(json.dumps(payload, sort_keys=True).encode(), np.uint8)
    model.metadata = model.metadata or []
    existing = [m for m in model.metadata if m.name in (name, name.encode())]
    if existing:
        buffer = model.buffers[existing[0].buffer]
        buffer.data, buffer.offset, buffer.size = data, 0, 0
        model.metadata = [m for m in model.metadata if m not in existing[1:]]
    else:
        buffer = schema.BufferT()
        buffer.data = data
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = name
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    builder = flatbuffers.Builder(len(model_bytes) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _checksum_field(digest):
    return b'"' + CHECKSUM_KEY.encode() + b'": "' + digest + b'"'


def checksum_problem(raw, metadata):
    """Why `raw` does not match the SHA-256 in its metadata, or None.

    The checksum covers every byte of the file (weights, graph, metadata),
    taken with the 64 digits of the checksum field itself set to "0".

    Args:
        raw: bytes. The whole file.
        metadata: dict. Its `keras_vae` metadata.

    Returns:
        str or None.
    """
    stored = metadata.get(CHECKSUM_KEY)
    if not isinstance(stored, str) or not re.fullmatch(r"[0-9a-f]{64}", stored):
        return (
            "the metadata holds no SHA-256 of the file (written by an "
            "older keras_vae or edited); re-export it with "
            "keras_vae.export.to_tflite"
        )
    field = _checksum_field(stored.encode())
    if raw.count(field) != 1:
        return "the stored SHA-256 field is not found exactly once"
    actual = hashlib.sha256(
        raw.replace(field, _checksum_field(b"0" * _DIGITS))
    ).hexdigest()
    if actual != stored:
        return (
            f"the file's SHA-256 is {actual[:12]}..., the one stored at "
            f"export is {stored[:12]}...: the file was changed or damaged "
            "after export"
        )
    return None


def stamp_checksum(model_bytes):
    """Return `model_bytes` with the SHA-256 of the file in its metadata.

    The `keras_vae` metadata must already hold a `"sha256"` field of 64
    hex digits (any value, e.g. all "0"); it is set in place, so no offset
    in the file moves.

    Args:
        model_bytes: bytes. A `.tflite` file with `keras_vae` metadata.
    """
    raw = bytes(model_bytes)
    fields = _CHECKSUM_FIELD.findall(raw)
    if len(fields) != 1:
        raise ValueError(
            "Expected exactly one `sha256` field of 64 hex digits in the "
            "file's keras_vae metadata. "
            f"Received: {len(fields)} such fields"
        )
    zeroed = raw.replace(_checksum_field(fields[0]),
                         _checksum_field(b"0" * _DIGITS))
    digest = hashlib.sha256(zeroed).hexdigest().encode()
    return zeroed.replace(_checksum_field(b"0" * _DIGITS),
                          _checksum_field(digest))


def set_metadata(model_bytes, metadata):
    """Return `model_bytes` with `metadata` as its checksummed keras_vae entry.

    Replaces any `keras_vae` entry, adds a `"sha256"` field and stamps it
    (see `stamp_checksum`). `keras_vae.export.to_tflite` writes every file
    through it; use it to edit a file's metadata on purpose.

    Args:
        model_bytes: bytes. A `.tflite` file.
        metadata: dict. JSON-serializable metadata.
    """
    payload = dict(metadata, **{CHECKSUM_KEY: "0" * _DIGITS})
    return stamp_checksum(add_metadata(model_bytes, METADATA_NAME, payload))
