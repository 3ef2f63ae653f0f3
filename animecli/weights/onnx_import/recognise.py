"""What an ONNX file holds, read from its graph: layout, names, sizes, the convs in order, norms, eps.

The facts are read from the structure (which ops, which shapes, how values
flow), never from file or node names; :mod:`animecli.weights.onnx_import.mapping` then
decides which of our generators they describe.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import onnx

from animecli.weights.onnx_import.graph import Array, Graph, attr, refuse


class Layout(str, Enum):
    """Memory layout of the file's image input and output."""

    NHWC = "nhwc"
    NCHW = "nchw"


class NormKind(str, Enum):
    """How a file normalises activations."""

    NONE = "none"
    INSTANCE = "instance"  # per-channel statistics (GlobalAveragePool chains): AnimeGANv3's LADE
    LAYER = "layer"  # whole-sample statistics (ReduceMean over C, H, W): AnimeGANv2


@dataclass(frozen=True)
class ConvFact:
    """One Conv node: its stored weight (float32), bias (or None), stride, groups and reflect padding.

    ``pads`` is (left, right, top, bottom) of the Pad node feeding the conv
    (plus the conv's own pads, which must then be zero-padding: ``zero_pad``).
    """

    weight: Array
    bias: Array | None
    stride: int
    groups: int
    pads: tuple[int, int, int, int]
    zero_pad: bool

    def signature(self) -> tuple[int, ...]:
        """(out, in/groups, kh, kw, stride, groups, left, right, top, bottom, zero_pad)."""
        o, i, kh, kw = self.weight.shape
        return (o, i, kh, kw, self.stride, self.groups, *self.pads, int(self.zero_pad))


@dataclass(frozen=True)
class GraphFacts:
    """Everything the importer reads from a file before choosing a generator."""

    input_name: str
    output_name: str
    input_dtype: int  # onnx.TensorProto element type
    layout: Layout
    fixed_size: tuple[int, int] | None  # (H, W) when the file only takes one size
    convs: tuple[ConvFact, ...]
    norm: NormKind
    norm_count: int  # number of normalised tensors (a LADE counts two)
    norm_eps: float | None
    attention: bool  # a softmax (AnimeGANv3's external attention)
    attn_eps: float | None
    upsamples: int  # Resize nodes
    tanh_out: bool
    leaky_slopes: frozenset[float]
    layer_norm_affine: tuple[tuple[Array, Array], ...]  # (gamma, beta) per layer norm, in order

    @property
    def downsamples(self) -> int:
        """Number of stride-2 convs."""
        return sum(1 for c in self.convs if c.stride == 2)

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this: 2 to the number of stride-2 levels."""
        return int(2 ** self.downsamples)


def _dims(vi: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in vi.type.tensor_type.shape.dim]


def _fmt(dims: list[int | str]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def _conv_pads(g: Graph, conv: onnx.NodeProto, nhwc_input: bool) -> tuple[tuple[int, int, int, int], bool]:
    """(left, right, top, bottom) of the reflect Pad feeding ``conv``, and whether the conv zero-pads."""
    own = [int(p) for p in attr(conv, "pads", [0, 0, 0, 0])]
    zero_pad = any(own) or attr(conv, "auto_pad", "NOTSET") not in ("NOTSET", "VALID")
    name = conv.input[0]
    nhwc = False
    node = g.producer.get(name)
    while node is not None and node.op_type in ("Transpose", "Identity", "QuantizeLinear", "DequantizeLinear"):
        if node.op_type == "Transpose" and list(attr(node, "perm", [])) == [0, 3, 1, 2]:
            nhwc = True
        node = g.producer.get(node.input[0])
    left = right = top = bottom = 0
    if node is not None and node.op_type == "Pad" and attr(node, "mode", "constant") == "reflect":
        pads = g.const(node.input[1]) if len(node.input) > 1 else np.asarray(attr(node, "pads", []))
        if pads is None or pads.size != 8:
            raise ValueError("a Pad with computed or non-4-D pads")
        p = [int(v) for v in pads.tolist()]
        # ONNX pads: all begins, then all ends; H, W are axes 1, 2 (NHWC) or 2, 3 (NCHW).
        h, w = (1, 2) if nhwc else (2, 3)
        top, left, bottom, right = p[h], p[w], p[4 + h], p[4 + w]
    if zero_pad:
        top, left, bottom, right = own[0], own[1], own[2], own[3]
    return (left, right, top, bottom), zero_pad


def _scalar_add_consts(g: Graph, after: set[str]) -> list[float]:
    """The scalar constants added to values computed by ``after`` ops (the eps of a norm or a division)."""
    found: list[float] = []
    for node in g.nodes:
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        a, b = (g.const(n) for n in node.input)
        const, other = (a, node.input[1]) if a is not None else (b, node.input[0])
        if const is None or const.size != 1:
            continue
        src = g.source(other)
        if src is not None and src.op_type in after:
            found.append(float(const.reshape(-1)[0]))
    return found


def _one_eps(values: list[float]) -> float | None:
    return max(set(values), key=values.count) if values else None


def _layer_norm_affine(g: Graph) -> tuple[tuple[Array, Array], ...]:
    """(gamma, beta) of each TF-style layer norm, in graph order.

    TensorFlow writes ``y = x * (rstd * gamma) + (beta - mean * rstd * gamma)``:
    gamma is the constant multiplied into the reciprocal square root, beta the
    constant the scaled mean is subtracted from.
    """
    gammas: list[Array] = []
    betas: list[Array] = []
    for node in g.nodes:
        if node.op_type == "Mul" and len(node.input) == 2:
            for i in (0, 1):
                c, other = g.const(node.input[i]), node.input[1 - i]
                src = g.source(other)
                if c is not None and c.size > 1 and src is not None and src.op_type in ("Reciprocal", "Sqrt"):
                    gammas.append(c.reshape(-1))
        elif node.op_type == "Sub" and len(node.input) == 2:
            c = g.const(node.input[0])
            src = g.source(node.input[1])
            if c is not None and c.size > 1 and src is not None and src.op_type == "Mul":
                betas.append(c.reshape(-1))
    return tuple(zip(gammas, betas, strict=False))


def read_facts(g: Graph, path: Path | str) -> GraphFacts:
    """Read the :class:`GraphFacts` of a loaded graph.

    Raises:
        WeightsError: not one 4-D 3-channel image input and one 4-D output, or
            convs whose weights are not stored (one line, naming what was found).
    """
    model = g.model
    stored = set(g.consts)
    inputs = [vi for vi in model.graph.input if vi.name not in stored]
    outputs = list(model.graph.output)
    if len(inputs) != 1 or len(outputs) != 1:
        raise refuse(path, f"found {len(inputs)} inputs and {len(outputs)} outputs, not one image in and one out")
    inp, out = inputs[0], outputs[0]
    idims, odims = _dims(inp), _dims(out)
    if len(idims) != 4 or len(odims) != 4:
        raise refuse(path, f"found input {inp.name!r} {_fmt(idims)} and output {out.name!r} {_fmt(odims)}, "
                           "not 4-D images")
    convs_nodes = [n for n in g.nodes if n.op_type == "Conv"]
    if not convs_nodes:
        raise refuse(path, f"found no convolutions among {len(g.nodes)} nodes")
    # NHWC files transpose the (padded) input to NCHW before the first conv.
    first = convs_nodes[0]
    node = g.producer.get(first.input[0])
    nhwc = False
    while node is not None and node.input:
        if node.op_type == "Transpose" and list(attr(node, "perm", [])) == [0, 3, 1, 2]:
            nhwc = True
        node = g.producer.get(node.input[0])
    layout = Layout.NHWC if nhwc else Layout.NCHW
    ch, h, w = (idims[3], idims[1], idims[2]) if nhwc else (idims[1], idims[2], idims[3])
    och = odims[3] if nhwc else odims[1]
    if ch != 3 or (isinstance(och, int) and och not in (0, 3)):
        raise refuse(path, f"input {inp.name!r} {_fmt(idims)} has {ch} channels and output {_fmt(odims)} has {och} "
                           f"({layout.value}); a generator takes and returns 3 (RGB)")
    fixed = (h, w) if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0 else None

    convs: list[ConvFact] = []
    for i, c in enumerate(convs_nodes):
        weight = g.const(c.input[1])
        if weight is None or weight.ndim != 4:
            raise refuse(path, f"conv {i} has no stored 4-D weight")
        bias = g.const(c.input[2]) if len(c.input) > 2 and c.input[2] else None
        strides = [int(s) for s in attr(c, "strides", [1, 1])]
        if len(set(strides)) != 1 or [int(d) for d in attr(c, "dilations", [1, 1])] != [1, 1]:
            raise refuse(path, f"conv {i} has strides {strides} or dilations; only square strides, no dilation")
        try:
            pads, zero_pad = _conv_pads(g, c, nhwc)
        except ValueError as exc:
            raise refuse(path, f"conv {i} is fed by {exc}") from exc
        convs.append(ConvFact(weight.astype(np.float32), None if bias is None else bias.astype(np.float32).reshape(-1),
                              strides[0], int(attr(c, "group", 1)), pads, zero_pad))

    ops = [n.op_type for n in g.nodes]
    gap = ops.count("GlobalAveragePool")
    layer_means = [n for n in g.nodes if n.op_type == "ReduceMean"
                   and sorted(int(a) for a in (attr(n, "axes") or [])) == [1, 2, 3]]
    if gap:
        norm, count = NormKind.INSTANCE, gap // 2
        eps = _one_eps(_scalar_add_consts(g, {"GlobalAveragePool"}))
    elif layer_means:
        norm, count = NormKind.LAYER, len(layer_means) // 2
        eps = _one_eps(_scalar_add_consts(g, {"ReduceMean"}))
    else:
        norm, count, eps = NormKind.NONE, 0, None
    tanh_src = g.source(out.name)
    return GraphFacts(
        input_name=inp.name,
        output_name=out.name,
        input_dtype=inp.type.tensor_type.elem_type,
        layout=layout,
        fixed_size=fixed,
        convs=tuple(convs),
        norm=norm,
        norm_count=count,
        norm_eps=eps,
        attention="Softmax" in ops,
        attn_eps=_one_eps(_scalar_add_consts(g, {"ReduceSum"})),
        upsamples=ops.count("Resize") + ops.count("Upsample"),
        tanh_out=tanh_src is not None and tanh_src.op_type == "Tanh",
        leaky_slopes=frozenset(round(float(attr(n, "alpha", 0.01)), 6) for n in g.nodes if n.op_type == "LeakyRelu"),
        layer_norm_affine=_layer_norm_affine(g) if norm is NormKind.LAYER else (),
    )
