"""A minimal reader of ONNX model files: nodes, attributes and initializers.

The GPU machines this path is meant for have torch, numpy, OpenCV, Pillow and
onnxruntime, but not the ``onnx`` package, so the protobuf wire format is read
here directly. Only the fields the packaged YuNet and SFace graphs use are
decoded (tests/ml/test_torch_models.py checks this reader against ``onnx``);
anything else is skipped, and an unknown tensor type is a clear error.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from ml.errors import ModelFileError

# TensorProto.DataType -> numpy dtype (the types these graphs use, and the common ones).
_DTYPES = {
    1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32,
    7: np.int64, 9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64,
}


@dataclass
class OnnxNode:
    op_type: str
    inputs: list[str]
    outputs: list[str]
    attributes: dict = field(default_factory=dict)


@dataclass
class OnnxGraph:
    nodes: list[OnnxNode]
    initializers: dict[str, np.ndarray]
    inputs: list[str]  # graph inputs that have no initializer
    outputs: list[str]


def read_onnx(data: bytes) -> OnnxGraph:
    """Parse a serialized ModelProto; raises ModelFileError on anything malformed."""
    try:
        graph_bytes = None
        for number, _, value in _fields(memoryview(data)):
            if number == 7:  # ModelProto.graph
                graph_bytes = value
        if graph_bytes is None:
            raise ModelFileError("ONNX file has no graph")
        return _graph(graph_bytes)
    except (IndexError, ValueError, struct.error) as exc:
        raise ModelFileError(f"ONNX file is malformed: {exc}") from exc


def _graph(buf: memoryview) -> OnnxGraph:
    nodes, initializers, inputs, outputs = [], {}, [], []
    for number, _, value in _fields(buf):
        if number == 1:
            nodes.append(_node(value))
        elif number == 5:
            name, array = _tensor(value)
            initializers[name] = array
        elif number == 11:
            inputs.append(_value_info_name(value))
        elif number == 12:
            outputs.append(_value_info_name(value))
    return OnnxGraph(nodes=nodes, initializers=initializers,
                     inputs=[name for name in inputs if name not in initializers], outputs=outputs)


def _node(buf: memoryview) -> OnnxNode:
    node = OnnxNode(op_type="", inputs=[], outputs=[])
    for number, _, value in _fields(buf):
        if number == 1:
            node.inputs.append(bytes(value).decode())
        elif number == 2:
            node.outputs.append(bytes(value).decode())
        elif number == 4:
            node.op_type = bytes(value).decode()
        elif number == 5:
            name, attr = _attribute(value)
            node.attributes[name] = attr
        elif number == 7 and bytes(value) not in (b"", b"ai.onnx"):
            raise ModelFileError(f"ONNX operator domain {bytes(value).decode()!r} is not supported")
    return node


def _attribute(buf: memoryview):
    name, scalar, floats, ints, attr_type = "", None, [], [], 0
    for number, wire, value in _fields(buf):
        if number == 1:
            name = bytes(value).decode()
        elif number == 2:
            scalar = struct.unpack("<f", value)[0]
        elif number == 3:
            scalar = _signed(value)
        elif number == 4:
            scalar = bytes(value)
        elif number == 5:
            scalar = _tensor(value)[1]
        elif number == 7:
            floats.extend(_packed_floats(value) if wire == 2 else [struct.unpack("<f", value)[0]])
        elif number == 8:
            ints.extend(_packed_varints(value) if wire == 2 else [_signed(value)])
        elif number == 20:
            attr_type = value
    if attr_type == 6:  # FLOATS
        return name, floats
    if attr_type == 7:  # INTS
        return name, ints
    return name, scalar


def _tensor(buf: memoryview) -> tuple[str, np.ndarray]:
    dims, data_type, name, raw = [], 0, "", None
    floats, int32s, int64s = [], [], []
    for number, wire, value in _fields(buf):
        if number == 1:
            dims.extend(_packed_varints(value) if wire == 2 else [_signed(value)])
        elif number == 2:
            data_type = value
        elif number == 4:
            floats.extend(_packed_floats(value) if wire == 2 else [struct.unpack("<f", value)[0]])
        elif number == 5:
            int32s.extend(_packed_varints(value) if wire == 2 else [_signed(value)])
        elif number == 7:
            int64s.extend(_packed_varints(value) if wire == 2 else [_signed(value)])
        elif number == 8:
            name = bytes(value).decode()
        elif number == 9:
            raw = bytes(value)
        elif number == 14:
            raise ModelFileError(f"tensor {name!r} keeps its data outside the file (external data)")
    dtype = _DTYPES.get(data_type)
    if dtype is None:
        raise ModelFileError(f"tensor {name!r} has unsupported ONNX data type {data_type}")
    if raw is not None:
        array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
    elif floats:
        array = np.asarray(floats, dtype=dtype)
    elif int64s:
        array = np.asarray(int64s, dtype=dtype)
    else:  # int32_data also carries int8/uint8/int16/bool/float16 values
        array = np.asarray(int32s, dtype=np.int64).astype(dtype)
    return name, array.reshape(dims)


def _value_info_name(buf: memoryview) -> str:
    for number, _, value in _fields(buf):
        if number == 1:
            return bytes(value).decode()
    return ""


def _fields(buf: memoryview):
    """(field number, wire type, value) for each field of one message."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > end:
            raise ValueError("truncated message")
        yield number, wire, value


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _signed(value: int) -> int:
    """Protobuf int64 fields store negatives as 64-bit two's complement varints."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _packed_varints(buf: memoryview) -> list[int]:
    values, pos = [], 0
    while pos < len(buf):
        value, pos = _varint(buf, pos)
        values.append(_signed(value))
    return values


def _packed_floats(buf: memoryview) -> list[float]:
    return list(struct.unpack(f"<{len(buf) // 4}f", buf))
