"""Small, seeded ONNX graphs with the structure of the published AnimeGAN generator files.

Each builder writes the ops the way the real exports do (tf2onnx style):
separate reflect ``Pad`` nodes, NHWC input transposed to NCHW before the first
conv (or a plain NCHW graph), norms spelled out as GlobalAveragePool / Sub /
Mul / Sqrt / Reciprocal chains (AnimeGANv3's LADE) or ReduceMean chains with
gamma/beta (AnimeGANv2's layer norm), asymmetric ``Resize`` ×2, and for the
v2 file 8-bit QDQ weights and activations. A few KB each; no ../shared needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class _Builder:
    """Accumulates nodes and initializers; values are NCHW inside the graph."""

    def __init__(self, seed: int, fp16: bool = False, qdq: bool = False) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0
        self.fp16 = fp16
        self.qdq = qdq
        self._act_q: tuple[str, str] | None = None

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}_{self.n}"

    def op(self, op_type: str, inputs: list[str], **attrs: Any) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return self.act(out) if self.qdq and op_type not in ("Shape", "Reshape") else out

    def act(self, x: str) -> str:
        """Activation quantisation (QDQ files only): uint8-range int8 Q -> DQ with a fixed scale."""
        if self._act_q is None:
            # One scale for every activation, as a per-tensor calibration might give.
            self._act_q = (self.raw(np.array(0.02, np.float32)), self.raw(np.array(0, np.int8)))
        scale, zero = self._act_q
        q = self.name("q")
        self.nodes.append(helper.make_node("QuantizeLinear", [x, scale, zero], [q], name=q))
        dq = self.name("dq")
        self.nodes.append(helper.make_node("DequantizeLinear", [q, scale, zero], [dq], name=dq))
        return dq

    def raw(self, arr: np.ndarray[Any, Any]) -> str:
        name = self.name("c")
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def weight(self, arr: np.ndarray[Any, Any], per_channel: bool = True) -> str:
        """A stored float tensor: plain, fp16 + Cast, or int8 + DequantizeLinear."""
        arr = arr.astype(np.float32)
        if self.qdq:
            if per_channel and arr.ndim > 1:
                scale = np.maximum(np.abs(arr).reshape(arr.shape[0], -1).max(axis=1), 1e-8) / 127.0
                q = np.clip(np.rint(arr / scale.reshape(-1, *[1] * (arr.ndim - 1))), -127, 127).astype(np.int8)
                zero = np.zeros(arr.shape[0], np.int8)
                ins = [self.raw(q), self.raw(scale.astype(np.float32)), self.raw(zero)]
                out = self.name("w_dq")
                self.nodes.append(helper.make_node("DequantizeLinear", ins, [out], name=out, axis=0))
                return out
            scale = np.float32(max(float(np.abs(arr).max()), 1e-8) / 127.0)
            q = np.clip(np.rint(arr / scale), -127, 127).astype(np.int8)
            ins = [self.raw(q), self.raw(np.array(scale, np.float32)), self.raw(np.array(0, np.int8))]
            out = self.name("w_dq")
            self.nodes.append(helper.make_node("DequantizeLinear", ins, [out], name=out))
            return out
        if self.fp16:
            half = self.raw(arr.astype(np.float16))
            out = self.name("w_cast")
            self.nodes.append(helper.make_node("Cast", [half], [out], name=out, to=TensorProto.FLOAT))
            return out
        return self.raw(arr)

    def pad(self, x: str, left: int, right: int, top: int, bottom: int, nhwc: bool = False) -> str:
        pads = [0, top, left, 0, 0, bottom, right, 0] if nhwc else [0, 0, top, left, 0, 0, bottom, right]
        return self.op("Pad", [x, self.raw(np.array(pads, np.int64))], mode="reflect")

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
             bias: str = "random") -> str:
        """``bias``: "random", "zero" (stored zeros, as some exports do) or "none"."""
        fan_in = cin // groups * k * k
        w = self.rng.normal(0.0, 1.0 / np.sqrt(fan_in), (cout, cin // groups, k, k))
        ins = [x, self.weight(w)]
        if bias != "none":
            b = self.rng.normal(0.0, 0.1, cout) if bias == "random" else np.zeros(cout)
            ins.append(self.weight(b, per_channel=False) if bias == "zero" else self.weight(b))
        return self.op("Conv", ins, kernel_shape=[k, k], strides=[stride, stride], group=groups)

    def padded_conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
                    bias: str = "random", nhwc_in: bool = False) -> str:
        p = k // 2
        if stride == 1:
            x = self.pad(x, p, p, p, p, nhwc_in)
        else:
            x = self.pad(x, p, p - 1, p, p - 1, nhwc_in)
        if nhwc_in:
            x = self.op("Transpose", [x], perm=[0, 3, 1, 2])
        return self.conv(x, cin, cout, k, stride, groups, bias)

    def lrelu(self, x: str) -> str:
        return self.op("LeakyRelu", [x], alpha=0.2)

    def lade(self, x: str, c: int, eps: float, bias: str = "random") -> str:
        """AnimeGANv3's norm, spelled as the files do."""
        e = self.raw(np.full((1, 1, 1, 1), eps, np.float32))
        m = self.op("GlobalAveragePool", [x])
        d = self.op("Sub", [x, m])
        v = self.op("GlobalAveragePool", [self.op("Mul", [d, d])])
        n = self.op("Mul", [d, self.op("Reciprocal", [self.op("Sqrt", [self.op("Add", [v, e])])])])
        t = self.conv(self.pad(x, 0, 0, 0, 0), c, c, 1, bias=bias)
        mt = self.op("GlobalAveragePool", [t])
        dt = self.op("Sub", [t, mt])
        vt = self.op("GlobalAveragePool", [self.op("Mul", [dt, dt])])
        st = self.op("Sqrt", [self.op("Add", [vt, e])])
        return self.op("Add", [self.op("Mul", [n, st]), mt])

    def layer_norm(self, x: str, c: int) -> str:
        """TF layer norm over (C, H, W) with per-channel gamma/beta, eps 1e-12."""
        gamma = self.weight(1.0 + self.rng.normal(0.0, 0.1, (1, c, 1, 1)), per_channel=False)
        beta = self.weight(self.rng.normal(0.0, 0.1, (1, c, 1, 1)), per_channel=False)
        mean = self.op("ReduceMean", [x], axes=[2, 3, 1], keepdims=1)
        d = self.op("Sub", [x, mean])
        var = self.op("ReduceMean", [self.op("Mul", [d, d])], axes=[2, 3, 1], keepdims=1)
        eps = self.raw(np.full((1, 1, 1, 1), 1e-12, np.float32))
        rstd = self.op("Reciprocal", [self.op("Sqrt", [self.op("Add", [var, eps])])])
        mul = self.op("Mul", [rstd, gamma])
        sub = self.op("Sub", [beta, self.op("Mul", [mean, mul])])
        return self.op("Add", [self.op("Mul", [x, mul]), sub])

    def up(self, x: str) -> str:
        scales = self.raw(np.array([1.0, 1.0, 2.0, 2.0], np.float32))
        return self.op("Resize", [x, "", scales], mode="linear", coordinate_transformation_mode="asymmetric",
                       nearest_mode="floor")

    def model(self, x_in: str, out: str, in_shape: list[int | str], out_shape: list[int | str],
              in_channels: int = 3) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "generator",
            [helper.make_tensor_value_info(x_in, TensorProto.FLOAT, in_shape)],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
            initializer=self.inits,
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="animecli-tests")
        m.ir_version = 8
        return m


def _shapes(nhwc: bool, size: tuple[int, int] | None, ch: int) -> tuple[list[int | str], list[int | str]]:
    h: int | str = size[0] if size else "H"
    w: int | str = size[1] if size else "W"
    if nhwc:
        return [1, h, w, ch], [1, h, w, 3]
    return [1, ch, h, w], [1, 3, h, w]


def _stem(b: _Builder, nhwc: bool, cin: int, cout: int, k: int = 7) -> str:
    return b.padded_conv("image", cin, cout, k, nhwc_in=nhwc)


def _finish(b: _Builder, x: str, cin: int, nhwc: bool, size: tuple[int, int] | None, in_ch: int,
            bias: str = "random") -> onnx.ModelProto:
    y = b.op("Tanh", [b.conv(b.pad(x, 3, 3, 3, 3), cin, 3, 7, bias=bias)])
    if nhwc:
        y = b.op("Transpose", [y], perm=[0, 2, 3, 1])
    ins, outs = _shapes(nhwc, size, in_ch)
    return b.model("image", y, ins, outs)


def v3_graph(base: int = 2, nhwc: bool = True, size: tuple[int, int] | None = None, seed: int = 0,
             fp16: bool = False, eps: float = 1e-5, in_channels: int = 3) -> onnx.ModelProto:
    """AnimeGANv3 (full) structure: LADE after every conv, external attention, 3 levels."""
    b = _Builder(seed, fp16=fp16)
    b1, b2, b4 = base, 2 * base, 4 * base

    def block(x: str, i: int, o: int, k: int = 3, s: int = 1) -> str:
        return b.lrelu(b.lade(b.padded_conv(x, i, o, k, s), o, eps))

    s1 = b.lrelu(b.lade(_stem(b, nhwc, in_channels, b1), b1, eps))
    s2 = block(block(s1, b1, b1, s=2), b1, b2)
    s4 = block(block(s2, b2, b2, s=2), b2, b4)
    h = block(block(s4, b4, b4, s=2), b4, b4)
    # external attention
    a = b.conv(b.pad(h, 0, 0, 0, 0), b4, b4, 1)
    k = b.conv(a, b4, b4, 1)
    flat = b.op("Reshape", [k, b.raw(np.array([0, b4, -1], np.int64))])
    sm = b.op("Softmax", [flat], axis=2)
    ssum = b.op("ReduceSum", [sm, b.raw(np.array([1], np.int64))], keepdims=1)
    attn = b.op("Div", [sm, b.op("Add", [ssum, b.raw(np.array(1e-9, np.float32))])])
    attn = b.op("Reshape", [attn, b.op("Shape", [k])])
    v = b.conv(attn, b4, b4, 1)
    o = b.conv(b.pad(v, 0, 0, 0, 0), b4, b4, 1)
    h = b.lrelu(b.op("Add", [o, h]))
    for cin, cout, skip in ((b4, b4, s4), (b4, b2, s2), (b2, b1, s1)):
        h = b.op("Add", [block(b.up(h), cin, cout), skip])
        h = block(h, cout, cout)
    return _finish(b, h, b1, nhwc, size, in_channels, bias="zero")


def v3_tiny_graph(base: int = 1, nhwc: bool = True, size: tuple[int, int] | None = None, seed: int = 1,
                  final_norm: bool = True, in_channels: int = 3) -> onnx.ModelProto:
    """AnimeGANv3 tiny (tiny_Cute) structure: 4 levels, no norms except optionally one LADE at the end."""
    b = _Builder(seed)
    b1, b2, b4, b8 = base, 2 * base, 4 * base, 8 * base

    def block(x: str, i: int, o: int, k: int = 3, s: int = 1) -> str:
        return b.lrelu(b.padded_conv(x, i, o, k, s))

    s1 = b.lrelu(_stem(b, nhwc, in_channels, b1))
    s2 = block(block(s1, b1, b1, s=2), b1, b1)
    s4 = block(block(s2, b1, b2, s=2), b2, b2)
    s8 = block(block(s4, b2, b4, s=2), b4, b4)
    h = block(block(s8, b4, b8, s=2), b8, b8)
    for _ in range(2):
        r = block(block(h, b8, b4, k=1), b4, b4)
        h = b.lrelu(b.op("Add", [b.conv(b.pad(r, 0, 0, 0, 0), b4, b8, 1, bias="none"), h]))
    for cin, cout, skip, n in ((b8, b4, s8, 2), (b4, b2, s4, 2), (b2, b1, s2, 2)):
        h = b.op("Add", [block(b.up(h), cin, cout), skip])
        for _ in range(n):
            h = block(h, cout, cout)
    h = b.op("Add", [block(b.up(h), b1, b1), s1])
    last = b.padded_conv(h, b1, b1, 3, bias="none")
    h = b.lrelu(b.lade(last, b1, 1e-5, bias="none") if final_norm else last)
    return _finish(b, h, b1, nhwc, size, in_channels, bias="none")


def v2_qdq_graph(base: int = 4, size: tuple[int, int] = (32, 32), seed: int = 2) -> onnx.ModelProto:
    """AnimeGANv2 TF structure, NHWC, fixed size, 8-bit QDQ weights and activations."""
    b = _Builder(seed, qdq=True)
    c32, c64, c128, c256 = base, 2 * base, 4 * base, 8 * base

    def cnl(x: str, i: int, o: int, k: int = 3, s: int = 1, groups: int = 1, bias: str = "zero",
            act: bool = True) -> str:
        if k == 1:
            y = b.conv(x, i, o, 1, bias=bias)
        elif s == 2:
            y = b.conv(b.pad(x, 0, 1, 0, 1), i, o, k, 2, bias=bias)
        else:
            y = b.conv(b.pad(x, k // 2, k // 2, k // 2, k // 2), i, o, k, groups=groups, bias=bias)
        y = b.layer_norm(y, o)
        return b.lrelu(y) if act else y

    def irb(x: str, i: int, o: int) -> str:
        hidden = 2 * i
        y = cnl(x, i, hidden, 1)
        y = cnl(y, hidden, hidden, 3, groups=hidden, bias="random")
        y = cnl(y, hidden, o, 1, act=False)
        return b.op("Add", [x, y]) if i == o else y

    x = b.op("Transpose", [b.pad("image", 3, 3, 3, 3, nhwc=True)], perm=[0, 3, 1, 2])
    x = b.lrelu(b.layer_norm(b.conv(x, 3, c32, 7, bias="zero"), c32))
    x = cnl(cnl(x, c32, c64, s=2), c64, c64)
    x = cnl(cnl(x, c64, c128, s=2), c128, c128)
    x = cnl(x, c128, c128)
    x = irb(x, c128, c256)
    for _ in range(3):
        x = irb(x, c256, c256)
    x = cnl(x, c256, c128)
    x = cnl(cnl(b.up(x), c128, c128), c128, c128)
    x = cnl(cnl(cnl(b.up(x), c128, c64), c64, c64), c64, c32, k=7)
    y = b.op("Tanh", [b.conv(x, c32, 3, 1, bias="zero")])
    y = b.op("Transpose", [y], perm=[0, 2, 3, 1])
    ins, outs = _shapes(True, size, 3)
    return b.model("image", y, ins, outs)


def classifier_graph(seed: int = 3) -> onnx.ModelProto:
    """A tiny image classifier (conv, pool, dense): an ONNX file that is not a generator."""
    b = _Builder(seed)
    x = b.lrelu(b.conv("image", 3, 8, 3, 2))
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x])])
    y = b.op("Gemm", [x, b.weight(b.rng.normal(0, 0.3, (8, 10))), b.weight(np.zeros(10))])
    return b.model("image", y, [1, 3, 32, 32], [1, 10])
