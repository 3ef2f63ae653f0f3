"""Reading an ONNX file into a small, queryable view: constants folded, fp16 and QDQ weights as float32.

Only what recognising an AnimeGAN generator needs is folded: initializers,
``Constant`` nodes, and the ops exporters put between a stored weight and its
use (DequantizeLinear, QuantizeLinear, Cast, Reshape, Transpose, Identity,
Squeeze, Unsqueeze). Nothing here runs the network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from animecli.errors import WeightsError, first_line

SUPPORTED = "supported: AnimeGANv3 (full or tiny) and AnimeGANv2 generator exports (RGB image in, RGB image out)"

# Ops through which a value keeps its meaning (layout or precision changes only).
PASS_THROUGH = frozenset({"Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "QuantizeLinear",
                          "DequantizeLinear", "Cast"})

Array = np.ndarray[Any, Any]


def refuse(path: Path | str, message: str) -> WeightsError:
    """The one-line error for a file the importer cannot use."""
    return WeightsError(f"{path}: {message}; {SUPPORTED}")


@dataclass
class Graph:
    """A loaded ONNX graph with its constants folded.

    Attributes:
        model: the parsed file (unchanged).
        nodes: the graph's nodes in file order (exporters write them topologically sorted).
        consts: every constant value by name, float16 widened to float32, QDQ weights dequantised.
        producer: the node that writes each non-constant value.
        consumers: the nodes that read each value.
    """

    model: onnx.ModelProto
    nodes: list[onnx.NodeProto]
    consts: dict[str, Array] = field(default_factory=dict)
    producer: dict[str, onnx.NodeProto] = field(default_factory=dict)
    consumers: dict[str, list[onnx.NodeProto]] = field(default_factory=dict)

    def const(self, name: str) -> Array | None:
        """The constant value called ``name``, or ``None`` if it is computed at run time."""
        return self.consts.get(name)

    def source(self, name: str) -> onnx.NodeProto | None:
        """The node that really computes ``name``, looking through layout/precision ops; ``None`` for inputs."""
        node = self.producer.get(name)
        while node is not None and node.op_type in PASS_THROUGH and node.input:
            node = self.producer.get(node.input[0])
        return node

    def users(self, name: str) -> list[onnx.NodeProto]:
        """The nodes that really use ``name``, looking through layout/precision ops."""
        out: list[onnx.NodeProto] = []
        for node in self.consumers.get(name, []):
            if node.op_type in PASS_THROUGH and node.input[0] == name:
                out.extend(self.users(node.output[0]))
            else:
                out.append(node)
        return out


def attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """Attribute ``name`` of ``node`` as a Python value (bytes decoded), or ``default``."""
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _widen(a: Array) -> Array:
    return a.astype(np.float32) if a.dtype in (np.float16, np.float64) else a


def _dequantize(node: onnx.NodeProto, x: Array, scale: Array, zero: Array | None) -> Array:
    axis = int(attr(node, "axis", 1))
    shape = [1] * x.ndim
    if scale.size > 1:
        shape[axis] = scale.size
    z = np.zeros(1, np.float32) if zero is None else zero.astype(np.float32).reshape(shape)
    result: Array = ((x.astype(np.float32) - z) * scale.astype(np.float32).reshape(shape)).astype(np.float32)
    return result


def _quantize(node: onnx.NodeProto, x: Array, scale: Array, zero: Array | None) -> Array:
    axis = int(attr(node, "axis", 1))
    shape = [1] * x.ndim
    if scale.size > 1:
        shape[axis] = scale.size
    dtype = np.uint8 if zero is None else zero.dtype
    info = np.iinfo(dtype)
    z = 0.0 if zero is None else zero.astype(np.float32).reshape(shape)
    q = np.rint(x / scale.astype(np.float32).reshape(shape)) + z
    result: Array = np.clip(q, info.min, info.max).astype(dtype)
    return result


def _reshape(x: Array, shape: Array) -> Array:
    dims = [int(d) if d != 0 else x.shape[i] for i, d in enumerate(shape.tolist())]
    return x.reshape(dims)


def _axes(node: onnx.NodeProto, ins: list[Array | None]) -> list[int] | None:
    if len(ins) > 1 and ins[1] is not None:
        return [int(a) for a in ins[1].tolist()]
    axes = attr(node, "axes")
    return None if axes is None else [int(a) for a in axes]


def _unsqueeze(x: Array, axes: list[int]) -> Array:
    for a in sorted(a % (x.ndim + len(axes)) for a in axes):
        x = np.expand_dims(x, a)
    return x


def _fold(node: onnx.NodeProto, ins: list[Array | None]) -> Array | None:
    """The value of a node whose inputs are all constant, for the few ops weights pass through."""
    op = node.op_type
    x = ins[0] if ins else None
    folders: dict[str, Callable[[], Array | None]] = {
        "Identity": lambda: x,
        "Cast": lambda: None if x is None else _widen(
            x.astype(onnx.helper.tensor_dtype_to_np_dtype(int(attr(node, "to"))))),
        "Reshape": lambda: None if x is None or ins[1] is None else _reshape(x, ins[1]),
        "Transpose": lambda: None if x is None else np.transpose(x, attr(node, "perm")),
        "DequantizeLinear": lambda: None if x is None or ins[1] is None else _dequantize(
            node, x, ins[1], ins[2] if len(ins) > 2 else None),
        "QuantizeLinear": lambda: None if x is None or ins[1] is None else _quantize(
            node, x, ins[1], ins[2] if len(ins) > 2 else None),
        "Squeeze": lambda: None if x is None else (
            np.squeeze(x) if _axes(node, ins) is None else np.squeeze(x, tuple(_axes(node, ins) or ()))),
        "Unsqueeze": lambda: None if x is None else _unsqueeze(x, _axes(node, ins) or []),
    }
    fn = folders.get(op)
    return None if fn is None else fn()


def load_graph(path: Path | str) -> Graph:
    """Parse ``path`` and fold its weights' constant chains.

    Raises:
        WeightsError: the file cannot be read or is not a valid ONNX model (one line).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read the file ({first_line(exc)})") from exc
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeWarning-derived and others
        raise refuse(path, f"not an ONNX model ({len(data)} bytes that do not parse: {first_line(exc, 80)})") from exc
    if not model.graph.node:
        raise refuse(path, f"an ONNX file with no graph nodes ({len(data)} bytes; truncated?)")
    return build_graph(model)


def build_graph(model: onnx.ModelProto) -> Graph:
    """A :class:`Graph` over an already parsed model."""
    g = Graph(model=model, nodes=list(model.graph.node))
    for t in model.graph.initializer:
        g.consts[t.name] = _widen(numpy_helper.to_array(t))
    for node in g.nodes:
        for name in node.input:
            g.consumers.setdefault(name, []).append(node)
        if node.op_type == "Constant":
            value = attr(node, "value")
            if isinstance(value, onnx.TensorProto):
                g.consts[node.output[0]] = _widen(numpy_helper.to_array(value))
            continue
        ins = [g.consts.get(n) if n else None for n in node.input]
        folded = None
        if node.input and all(a is not None for a, n in zip(ins, node.input, strict=True) if n):
            try:
                folded = _fold(node, ins)
            except (ValueError, TypeError):
                folded = None
        if folded is not None:
            g.consts[node.output[0]] = folded
        else:
            for out in node.output:
                g.producer[out] = node
    return g


def strip_activation_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose activation QuantizeLinear/DequantizeLinear nodes are Identity.

    Weight dequantisation (a DequantizeLinear of a stored integer tensor) is
    kept: the result is the file's own network in float, without the 8-bit
    rounding of every intermediate value.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    stored = {t.name for t in out.graph.initializer}
    for node in out.graph.node:
        # A node of constants only (a weight's DequantizeLinear, say) computes a constant.
        if all(n in stored for n in node.input if n):
            stored.update(node.output)
        elif node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            first = node.input[0]
            node.op_type = "Identity"
            del node.input[:]
            node.input.append(first)
            del node.attribute[:]
            node.domain = ""
    return out
