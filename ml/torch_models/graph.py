"""Run an ONNX graph as a torch module, with its int8 weights dequantized once at load.

The packaged YuNet and SFace files store every weight as int8 with a
``DequantizeLinear`` node (blocked: one scale and zero point per ``block_size``
values along ``axis``) followed by a ``Reshape`` to the conv kernel's shape.
Every node whose inputs are all constants is evaluated here, once, in float32,
so what runs per batch is only the float network: Conv, BatchNormalization,
PRelu, Relu, MaxPool, nearest Resize, Add, Gemm and the head reshapes.

Batches: the graphs were exported for batch 1 and a fixed input size. Convs do
not care; a run-time ``Reshape`` whose target starts with 1 gets the batch size
instead, and the head reshapes already use -1 for the spatial size.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ml.errors import ModelFileError
from ml.torch_models.onnx_proto import OnnxGraph, OnnxNode


def dequantize_blocked(values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None,
                       *, axis: int = 1, block_size: int = 0) -> np.ndarray:
    """ONNX DequantizeLinear (opset 21): per-tensor, per-axis or blocked along ``axis``."""
    values = values.astype(np.float32)
    scale = np.asarray(scale, dtype=np.float32)
    zero = np.zeros_like(scale) if zero_point is None else np.asarray(zero_point).astype(np.float32)
    if scale.size == 1 and block_size == 0:
        return (values - zero.reshape(())) * scale.reshape(())
    axis = axis % values.ndim
    if scale.ndim == 1 and values.ndim > 1 and block_size == 0:  # per-axis
        shape = [1] * values.ndim
        shape[axis] = -1
        return (values - zero.reshape(shape)) * scale.reshape(shape)
    # Blocked: scale has values' shape with dim ``axis`` = ceil(n / block_size).
    block = block_size or values.shape[axis]
    expand = lambda a: np.repeat(a, block, axis=axis).take(range(values.shape[axis]), axis=axis)  # noqa: E731
    if scale.ndim != values.ndim:
        raise ModelFileError(f"blocked DequantizeLinear: scale shape {scale.shape} vs values {values.shape}")
    return (values - expand(zero)) * expand(scale)


def _fold(node: OnnxNode, args: list[np.ndarray]) -> np.ndarray:
    """Evaluate a node whose inputs are all constants."""
    op, attrs = node.op_type, node.attributes
    if op == "DequantizeLinear":
        return dequantize_blocked(args[0], args[1], args[2] if len(args) > 2 else None,
                                  axis=int(attrs.get("axis", 1)), block_size=int(attrs.get("block_size", 0)))
    if op == "Reshape":
        return args[0].reshape([int(v) for v in args[1]])
    if op == "Constant":
        return np.asarray(attrs["value"])
    raise ModelFileError(f"cannot fold constant ONNX node {op}")


class OnnxModule(nn.Module):
    """The graph's float network; ``forward(x)`` returns the graph outputs in order."""

    def __init__(self, graph: OnnxGraph, input_name: str):
        super().__init__()
        constants: dict[str, np.ndarray] = dict(graph.initializers)
        steps = []
        for node in graph.nodes:
            if node.op_type == "Dropout":  # inference: identity
                steps.append(("Identity", node.inputs[:1], node.outputs[:1], {}))
            elif node.op_type == "Constant" or (node.inputs and all(i in constants for i in node.inputs if i)):
                constants[node.outputs[0]] = _fold(node, [constants[i] for i in node.inputs if i])
            else:
                steps.append((node.op_type, node.inputs, node.outputs, node.attributes))
        steps = _fold_batch_norms(steps, constants)
        used = {name for _, inputs, _, _ in steps for name in inputs}
        self._names: dict[str, str] = {}
        for name in sorted(used & constants.keys()):
            key = f"c{len(self._names)}"
            self._names[name] = key
            array = constants[name]
            tensor = torch.from_numpy(np.ascontiguousarray(array))
            if tensor.is_floating_point():
                tensor = tensor.float()
            self.register_buffer(key, tensor, persistent=False)
        # Integer constants (Reshape targets, Resize scales) are read on the host, never per batch.
        self._host = {name: constants[name] for name in used & constants.keys()}
        for op, *_ in steps:
            if op not in _OPS:
                raise ModelFileError(f"ONNX operator {op} is not supported by the torch runner")
        self._steps = steps
        self._input = input_name
        self._outputs = list(graph.outputs)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        env = {self._input: x}

        def value(name):
            if name in env:
                return env[name]
            return getattr(self, self._names[name])

        for op, inputs, outputs, attrs in self._steps:
            env[outputs[0]] = _OPS[op](self, [value(i) if i else None for i in inputs], inputs, attrs)
        return [env[name] for name in self._outputs]


def _fold_batch_norms(steps: list, constants: dict[str, np.ndarray]) -> list:
    """Merge each BatchNormalization into the Conv that alone feeds it (as cv2.dnn does)."""
    consumers: dict[str, int] = {}
    for _, inputs, _, _ in steps:
        for name in inputs:
            consumers[name] = consumers.get(name, 0) + 1
    producer = {outputs[0]: i for i, (_, _, outputs, _) in enumerate(steps)}
    merged, dropped = list(steps), set()
    for i, (op, inputs, outputs, attrs) in enumerate(steps):
        if op != "BatchNormalization" or not all(n in constants for n in inputs[1:5]):
            continue
        j = producer.get(inputs[0])
        if j is None or steps[j][0] != "Conv" or consumers.get(inputs[0], 0) != 1 or steps[j][1][1] not in constants:
            continue
        conv_op, conv_in, conv_out, conv_attrs = steps[j]
        gamma, beta, mean, var = (constants[n].astype(np.float64) for n in inputs[1:5])
        factor = gamma / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
        weight = constants[conv_in[1]].astype(np.float64) * factor[:, None, None, None]
        bias = constants[conv_in[2]].astype(np.float64) if len(conv_in) > 2 and conv_in[2] else 0.0
        bias = (bias - mean) * factor + beta
        weight_name, bias_name = outputs[0] + "/folded_weight", outputs[0] + "/folded_bias"
        constants[weight_name] = weight.astype(np.float32)
        constants[bias_name] = bias.astype(np.float32)
        merged[j] = (conv_op, [conv_in[0], weight_name, bias_name], outputs, conv_attrs)
        dropped.add(i)
    return [step for i, step in enumerate(merged) if i not in dropped]


def _conv(self, args, names, attrs):
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    if pads[:2] != pads[2:]:
        raise ModelFileError(f"asymmetric conv padding {pads} is not supported")
    return F.conv2d(args[0], args[1], args[2] if len(args) > 2 else None,
                    stride=tuple(attrs.get("strides", [1, 1])), padding=tuple(pads[:2]),
                    dilation=tuple(attrs.get("dilations", [1, 1])), groups=int(attrs.get("group", 1)))


def _batch_norm(self, args, names, attrs):
    x, gamma, beta, mean, var = args
    return F.batch_norm(x, mean, var, gamma, beta, training=False, eps=float(attrs.get("epsilon", 1e-5)))


def _prelu(self, args, names, attrs):
    x, slope = args
    if slope.dim() == 3 and slope.shape[1:] == (1, 1):  # per channel: the fused kernel
        return F.prelu(x, slope.reshape(-1).to(x.dtype))
    return torch.where(x >= 0, x, x * slope.to(x.dtype))


def _max_pool(self, args, names, attrs):
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    return F.max_pool2d(args[0], tuple(attrs["kernel_shape"]), stride=tuple(attrs.get("strides", [1, 1])),
                        padding=tuple(pads[:2]), ceil_mode=bool(attrs.get("ceil_mode", 0)))


def _resize(self, args, names, attrs):
    mode = attrs.get("mode", b"nearest")
    scales = self._host.get(names[2]) if len(names) > 2 and names[2] else None
    if mode != b"nearest" or attrs.get("coordinate_transformation_mode") != b"asymmetric" or scales is None:
        raise ModelFileError(f"Resize {attrs} is not supported (only nearest, asymmetric, by scales)")
    if list(scales[:2]) != [1.0, 1.0] or float(scales[2]) != float(int(scales[2])) or scales[2] != scales[3]:
        raise ModelFileError(f"Resize scales {scales} are not supported")
    # Integer factor, asymmetric + floor: each value repeats (= F.interpolate 'nearest').
    factor = int(scales[2])
    return args[0].repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)


def _reshape(self, args, names, attrs):
    shape = [int(v) for v in self._host[names[1]]]
    if shape and shape[0] == 1:
        shape[0] = args[0].shape[0]  # exported for batch 1: keep the batch
    return args[0].reshape(shape)


def _gemm(self, args, names, attrs):
    a, b = args[0], args[1]
    if attrs.get("transA", 0):
        a = a.t()
    if attrs.get("transB", 0):
        b = b.t()
    out = float(attrs.get("alpha", 1.0)) * (a @ b)
    if len(args) > 2 and args[2] is not None:
        out = out + float(attrs.get("beta", 1.0)) * args[2]
    return out


_OPS = {
    "Conv": _conv,
    "BatchNormalization": _batch_norm,
    "PRelu": _prelu,
    "Relu": lambda self, a, n, t: F.relu(a[0]),
    "Sigmoid": lambda self, a, n, t: torch.sigmoid(a[0]),
    "MaxPool": _max_pool,
    "Resize": _resize,
    "Reshape": _reshape,
    "Transpose": lambda self, a, n, t: a[0].permute(*t["perm"]),
    "Add": lambda self, a, n, t: a[0] + a[1],
    "Sub": lambda self, a, n, t: a[0] - a[1],
    "Mul": lambda self, a, n, t: a[0] * a[1],
    "Flatten": lambda self, a, n, t: torch.flatten(a[0], int(t.get("axis", 1))),
    "Gemm": _gemm,
    "Identity": lambda self, a, n, t: a[0],
}
