"""ONNX export: a generator rewritten to export fast (norms, dynamic sizes), as one, tiling or split graphs."""

from __future__ import annotations

import copy
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from animecli.inference.ort_session import OPSET
from animecli.inference.staged import EPS_KEY, TINY_PLAN, V3_PLAN, Stage, StagedGraph, StageKind, column_pad
from animecli.models.animeganv3 import (
    LADE,
    AnimeGANv3Generator,
    AnimeGANv3TinyGenerator,
    ExternalAttention,
    GeneratorV2TF,
    lade_apply,
    mix_log_mean_exp,
    moments,
)
from animecli.models.lite import GeneratorLite
from animecli.models.norm import FastGroupNorm, mix_moments
from animecli.models.v2 import GeneratorV2

__all__ = [
    "ExportGroupNorm",
    "StatsFeed",
    "can_split",
    "can_stage",
    "export_onnx",
    "export_onnx_carry",
    "export_onnx_split",
    "export_onnx_staged",
    "exportable",
    "has_stats_graphs",
    "stage_plan",
    "stats_size",
]


class ExportGroupNorm(nn.Module):
    """``GroupNorm(1, C)`` written in ops that export to a fast ONNX graph.

    Same function and parameters as :class:`~animecli.models.norm.FastGroupNorm` (and
    ``nn.GroupNorm(1, C)``). The statistics are per-row partial sums, like the eager
    version (accurate to ~1e-6 where one float32 sum over millions of values is not), and
    the normalisation itself is one ``BatchNormalization`` node over the (1, N·C, H, W)
    view, with per-(sample, channel) mean, variance, weight and bias: a single pass over
    the activations, where ``x * scale + shift`` would be two.

    Args:
        norm: the layer to mirror (its ``weight`` and ``bias`` are shared, not copied).
        feed: where given statistics come from in a statistics graph (``None`` = never).
        offset: where this layer's (mean, var) start in ``feed.stats``.
    """

    def __init__(self, norm: FastGroupNorm | nn.GroupNorm, feed: StatsFeed | None = None, offset: int = 0) -> None:
        super().__init__()
        self.weight = norm.weight
        self.bias = norm.bias
        self.eps = float(norm.eps)
        self.feed = feed
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) float32 contiguous → (N, C, H, W), normalised over (C, H, W) per sample."""
        n, c, h, w = x.shape
        feed, k = self.feed, self.offset
        if feed is not None and feed.stats is not None and feed.blend is None:
            # Tiling: the whole image's (mean, var), a graph input, instead of this tile's own.
            mean = feed.stats[k].expand(n)
            var = feed.stats[k + 1].expand(n)
        else:
            rows = x.reshape(n, c * h, w)
            mean = rows.mean(dim=2).mean(dim=1)
            mean_sq = torch.linalg.vector_norm(rows, 2, dim=2).square().mean(dim=1) / w
            var = (mean_sq - mean * mean).clamp_min(0.0)
            if feed is not None and feed.stats is not None and feed.blend is not None:
                # Video: mixed with the previous frame's (one frame at a time, N = 1).
                mean, var = mix_moments(feed.stats[k : k + 1], feed.stats[k + 1 : k + 2], mean, var, feed.blend)
                feed.out.extend((mean, var))
        mean_nc = mean.view(-1, 1).expand(n, c).reshape(-1)
        var_nc = var.view(-1, 1).expand(n, c).reshape(-1)
        weight_nc = self.weight.view(1, -1).expand(n, c).reshape(-1)
        bias_nc = self.bias.view(1, -1).expand(n, c).reshape(-1)
        y = F.batch_norm(x.reshape(1, n * c, h, w), mean_nc, var_nc, weight_nc, bias_nc, False, 0.0, self.eps)
        return y.reshape(n, c, h, w)


class _StatsLADE(nn.Module):
    """:class:`~animecli.models.animeganv3.LADE` for the statistics graphs: its (μx, σx², μt, σt²)
    are ``4·C`` values of the flat ``stats`` input, from ``offset`` (tiles), or its own mixed
    with them (video). Same parameters (``proj`` is shared, not copied)."""

    def __init__(self, lade: LADE, feed: StatsFeed, offset: int) -> None:
        super().__init__()
        self.proj = lade.proj
        self.eps = lade.eps
        self.channels = lade.proj.out_channels
        self.feed = feed
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) → (N, C, H, W); N = 1 in the video graph."""
        t = self.proj(x)
        stats, c, k = self.feed.stats, self.channels, self.offset
        assert stats is not None
        given = [stats[k + i * c : k + (i + 1) * c].view(1, c, 1, 1) for i in range(4)]
        if self.feed.blend is None:
            mean_x, var_x, mean_t, var_t = given
        else:
            (own_mx, own_vx), (own_mt, own_vt) = moments(x), moments(t)
            mean_x, var_x = mix_moments(given[0], given[1], own_mx, own_vx, self.feed.blend)
            mean_t, var_t = mix_moments(given[2], given[3], own_mt, own_vt, self.feed.blend)
            self.feed.out.extend(v.reshape(-1) for v in (mean_x, var_x, mean_t, var_t))
        return lade_apply(x, mean_x, var_x, mean_t, var_t, self.eps)


class _StatsAttention(nn.Module):
    """:class:`~animecli.models.animeganv3.ExternalAttention` for the statistics graphs: its softmax
    normaliser (per-unit log-mean-exp, ``M`` values of ``stats`` from ``offset``) given, or its
    own mixed with it. The ``eps·H·W`` term takes H·W from the tensor (a traced Python int would
    be a constant of the sample size)."""

    def __init__(self, attn: ExternalAttention, feed: StatsFeed, offset: int) -> None:
        super().__init__()
        self.inp, self.key, self.value, self.out = attn.inp, attn.key, attn.value, attn.out
        self.eps = attn.eps
        self.units = attn.key.out_channels
        self.feed = feed
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) → (N, C, H, W); N = 1 in the video graph."""
        a = self.key(self.inp(x))
        n, m, h, w = a.shape
        flat = a.reshape(n, m, h * w)
        stats, k = self.feed.stats, self.offset
        assert stats is not None
        lme = stats[k : k + m].view(1, m, 1)
        if self.feed.blend is not None:
            top = flat.amax(dim=2, keepdim=True)
            own = top + torch.log(torch.exp(flat - top).mean(dim=2, keepdim=True))
            lme = mix_log_mean_exp(lme, own, self.feed.blend)
            self.feed.out.append(lme.reshape(-1))
        e = torch.exp(flat - lme)
        positions = torch.ones_like(flat[:, :1]).sum(dim=2, keepdim=True)
        attn = e / (e.sum(dim=1, keepdim=True) + self.eps * positions)
        y = self.out(self.value(attn.reshape(n, m, h, w)))
        return F.leaky_relu(y + x, 0.2)


class _V2Export(nn.Module):
    """GeneratorV2 with upsampling sizes taken from tensor shapes, so that H and W stay dynamic.

    ``GeneratorV2.forward`` turns the skip sizes into Python ints, which a trace records
    as constants; this mirrors it (same modules, same order) without the conversion.
    The ONNX tests compare it with the eager model at two input sizes.
    """

    def __init__(self, model: GeneratorV2) -> None:
        super().__init__()
        self.inner = model

    def _up(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if self.inner.align_corners:
            return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] → same; H and W multiples of 4."""
        m = self.inner
        half = m.block_a(x)
        out = m.block_c(m.block_b(half))
        out = m.block_d(self._up(out, half))
        out = m.block_e(self._up(out, x))
        result: torch.Tensor = m.out_layer(out)
        return result


class _MatMulSkip(nn.Module):
    """A 1×1 convolution on the 3-channel input photo, written as a MatMul for export.

    onnxruntime's NCHWc layout pass turns the lite models' colour skip (``Conv2d(3, 3, 1)``
    on the input) into a blocked convolution whose output is padded to 16 channels on
    AVX-512 (8 on AVX2); and since it depends only on the input, the skip runs first and
    its padded output stays alive through the whole network: 45 MB at 1024×684, measured
    as a 268 → 223 MB drop in the graph's memory rise once it is a MatMul, which runs at
    the end on 3 channels. Same function (the ONNX tests compare with eager).
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        assert conv.bias is not None  # GeneratorLite builds it with bias=True
        self.weight = nn.Parameter(conv.weight.detach()[:, :, 0, 0].clone(), requires_grad=False)
        self.bias = nn.Parameter(conv.bias.detach().view(1, -1, 1).clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) → (N, 3, H, W): per-pixel ``weight @ rgb + bias``."""
        n, c, h, w = x.shape
        y = torch.matmul(self.weight, x.reshape(n, c, h * w)) + self.bias
        return y.reshape(n, -1, h, w)


class StatsFeed:
    """What the statistics graphs' layers read and write while they are traced.

    Attributes:
        stats: the flat ``stats`` input (S,) float32: every whole-image layer's statistics in
            module order (:func:`stats_size`).
        blend: ``None`` in the tiling graph (the layers use ``stats`` as given); the video
            graph's ``blend`` input (1,), the weight of ``stats`` (the previous frame's) in the
            mixture with each layer's own.
        out: the video graph's mixed statistics, appended in module order (its ``stats_out``).
    """

    def __init__(self) -> None:
        self.stats: torch.Tensor | None = None
        self.blend: torch.Tensor | None = None
        self.out: list[torch.Tensor] = []


def _is_norm(mod: nn.Module) -> bool:
    is_gn1 = isinstance(mod, nn.GroupNorm) and mod.num_groups == 1 and mod.affine
    return isinstance(mod, FastGroupNorm) or is_gn1


def _frozen(mod: nn.Module) -> bool:
    return _is_norm(mod) or isinstance(mod, (LADE, ExternalAttention))


def _stats_width(mod: nn.Module) -> int:
    """Values a whole-image layer takes in the flat ``stats`` vector."""
    if isinstance(mod, LADE):
        return 4 * mod.proj.out_channels
    if isinstance(mod, ExternalAttention):
        return mod.key.out_channels
    return 2


def stats_size(model: nn.Module) -> int:
    """S, the length of a statistics graph's ``stats`` input: (mean, var) per one-group norm,
    (μx, σx², μt, σt²) per channel per LADE, one log-mean-exp per attention unit, in module
    order (the order of :func:`animecli.inference.tiling.record_stats`, flattened)."""
    return sum(_stats_width(m) for m in model.modules() if _frozen(m))


def exportable(model: nn.Module, feed: StatsFeed | None = None) -> nn.Module:
    """A float32, CPU, gradient-free copy of ``model`` whose norms export to fast ONNX.

    Args:
        model: the generator.
        feed: for a statistics graph: every whole-image layer reads (and in the video graph
            writes) its statistics there, at its offset in module order.
    """
    clone = copy.deepcopy(model).to("cpu", torch.float32).requires_grad_(False).eval()
    clone = clone.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    offsets: dict[int, int] = {}
    total = 0
    for m in clone.modules():
        if _frozen(m):
            offsets[id(m)] = total
            total += _stats_width(m)
    for mod in list(clone.modules()):
        for name, child in list(mod.named_children()):
            if _is_norm(child):
                setattr(mod, name, ExportGroupNorm(child, feed, offsets[id(child)]))
            elif feed is not None and isinstance(child, LADE):
                setattr(mod, name, _StatsLADE(child, feed, offsets[id(child)]))
            elif feed is not None and isinstance(child, ExternalAttention):
                setattr(mod, name, _StatsAttention(child, feed, offsets[id(child)]))
    if isinstance(clone, GeneratorLite):
        setattr(clone, "skip", _MatMulSkip(clone.skip))  # noqa: B010  (the attribute is typed Conv2d)
    # GeneratorV2TF's own upsampling already keeps H and W dynamic (and is not _V2Export's).
    v2 = isinstance(clone, GeneratorV2) and not isinstance(clone, GeneratorV2TF)
    wrapped: nn.Module = _V2Export(clone) if v2 else clone
    return wrapped.eval()


def has_stats_graphs(model: nn.Module) -> bool:
    """Whether the model has whole-image layers, so that the tiling and video graphs exist."""
    return any(_frozen(m) for m in model.modules())


class _FixedStatsExport(nn.Module):
    """A generator whose whole-image layers take their statistics from a second input, (S,)."""

    def __init__(self, net: nn.Module, feed: StatsFeed) -> None:
        super().__init__()
        self.net = net
        self.feed = feed

    def forward(self, x: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        self.feed.stats = stats
        try:
            out: torch.Tensor = self.net(x)
        finally:
            self.feed.stats = None
        return out


class _CarryExport(nn.Module):
    """A generator whose whole-image layers mix their statistics with given ones (video)."""

    def __init__(self, net: nn.Module, feed: StatsFeed) -> None:
        super().__init__()
        self.net = net
        self.feed = feed

    def forward(self, x: torch.Tensor, stats: torch.Tensor, blend: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.feed.stats, self.feed.blend, self.feed.out = stats, blend, []
        try:
            out: torch.Tensor = self.net(x)
            used = torch.cat(self.feed.out)
        finally:
            self.feed.stats, self.feed.blend, self.feed.out = None, None, []
        return out, used


def export_onnx(model: nn.Module, sample_size: int = 64, fixed_stats: bool = False) -> bytes:
    """Export the generator to ONNX (opset 17) with dynamic batch, height and width.

    Args:
        model: the generator (any device/dtype; a float32 CPU copy is exported).
        sample_size: side of the dummy input used for tracing (a multiple of 4).
        fixed_stats: export the tiling graph: a second input ``stats`` (S,) float32 holds
            every whole-image layer's statistics (:func:`stats_size`), used instead of the input's.

    Returns:
        The serialised ONNX model, input ``input`` (and ``stats``) and output ``output``,
        both (N, 3, H, W) float32 in [-1, 1].
    """
    x = torch.zeros(1, 3, sample_size, sample_size)
    dyn = {0: "n", 2: "h", 3: "w"}
    args: tuple[torch.Tensor, ...] = (x,)
    names = ["input"]
    if fixed_stats:
        feed = StatsFeed()
        net: nn.Module = _FixedStatsExport(exportable(model, feed), feed)
        args = (x, torch.ones(stats_size(model)))
        names = ["input", "stats"]
    else:
        net = exportable(model)
    return _export(net, args, names, {"input": dyn, "output": dyn})


def export_onnx_carry(model: nn.Module, sample_size: int = 64) -> bytes:
    """Export the video graph: statistics carried from the previous frame.

    Inputs ``input`` (1, 3, H, W) float32 in [-1, 1], ``stats`` (S,) float32 (the previous
    frame's, :func:`stats_size`) and ``blend`` (1,) float32 (their weight; 0 = this frame's
    own, as the plain graph). Outputs ``output`` (1, 3, H, W) and ``stats_out`` (S,), the
    statistics this frame used (the next frame's ``stats``). Each layer mixes as
    :func:`~animecli.models.norm.mix_moments` / :func:`~animecli.models.animeganv3.mix_log_mean_exp`,
    the eager carry's functions.
    """
    feed = StatsFeed()
    net = _CarryExport(exportable(model, feed), feed)
    x = torch.zeros(1, 3, sample_size, sample_size)
    args = (x, torch.zeros(stats_size(model)), torch.full((1,), 0.5))
    dyn = {2: "h", 3: "w"}
    return _export(net, args, ["input", "stats", "blend"], {"input": dyn, "output": dyn},
                   outputs=["output", "stats_out"])


class _Encoder(nn.Module):
    def __init__(self, net: GeneratorLite) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.encode(x)


class _Decoder(nn.Module):
    def __init__(self, net: GeneratorLite) -> None:
        super().__init__()
        self.net = net

    def forward(self, feats: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.net.decode(feats, x)


def can_split(model: nn.Module) -> bool:
    """Whether :func:`export_onnx_split` applies: a generator whose decoder has no whole-image
    norms (for a built model, what :func:`animecli.models.spec.has_local_decoder` says of its arch)."""
    return isinstance(model, GeneratorLite) and model.local_decoder


def export_onnx_split(model: nn.Module, sample_size: int = 64) -> tuple[bytes, bytes]:
    """Export the encoder and the decoder of a ``lite3`` generator as two graphs.

    The decoder has no whole-image norms, so :class:`~animecli.inference.ort_session.OrtSession` can run it
    on bands of rows (same result; far less memory on large photos).

    Args:
        model: a generator for which :func:`can_split` is true.
        sample_size: side of the dummy input used for tracing (a multiple of 4).

    Returns:
        The encoder (input ``input`` (N, 3, H, W) float32 in [-1, 1], output ``features``
        (N, C, H/4, W/4)) and the decoder (inputs ``features`` and ``input``, output
        ``output`` (N, 3, H, W) float32 in [-1, 1]).
    """
    if not can_split(model):
        raise ValueError("only a generator with a norm-free decoder (lite3) can be split")
    net = exportable(model)
    assert isinstance(net, GeneratorLite)
    x = torch.zeros(1, 3, sample_size, sample_size)
    with torch.no_grad():
        feats = net.encode(x)
    dyn = {0: "n", 2: "h", 3: "w"}
    fdyn = {0: "n", 2: "fh", 3: "fw"}
    encoder = _export(_Encoder(net), (x,), ["input"], {"input": dyn, "features": fdyn}, output="features")
    decoder = _export(_Decoder(net), (feats, x), ["features", "input"],
                      {"features": fdyn, "input": dyn, "output": dyn})
    return encoder, decoder


def stage_plan(model: nn.Module) -> tuple[Stage, ...] | None:
    """The stage plan :func:`export_onnx_staged` exports ``model`` as, or ``None`` (it runs as
    one graph): an AnimeGANv3 generator (the full-size one, any widths) or a tiny one with its
    final LADE. For a model's arch, :func:`animecli.inference.staged.plan_for` says the same."""
    if isinstance(model, AnimeGANv3Generator):
        return V3_PLAN
    if isinstance(model, AnimeGANv3TinyGenerator) and model.final_norm:
        return TINY_PLAN
    return None


def can_stage(model: nn.Module) -> bool:
    """Whether :func:`export_onnx_staged` applies (:func:`stage_plan` has a plan for it)."""
    return stage_plan(model) is not None


def _band_moments(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(4, C): per channel, the mean and the sum of squared deviations of ``x``, then of ``t``
    (what :func:`animecli.inference.staged.combine_moments` pools over bands)."""
    rows = []
    for v in (x, t):
        mean = v.mean(dim=(0, 2, 3))
        dev = v - mean.view(1, -1, 1, 1)
        rows += [mean, (dev * dev).sum(dim=(0, 2, 3))]
    return torch.stack(rows)


# How a stage graph treats each input (see Stage.inputs): used as it is; LeakyReLU only (a
# norm-free conv's output); its LADE as a scale and shift (two more inputs), then LeakyReLU.
_RAW, _ACT, _NORM = "raw", "act", "norm"


def _input_modes(stage: Stage, plan: tuple[Stage, ...]) -> tuple[str, ...]:
    producers = {st.output: st for st in plan}
    return tuple(_RAW if raw else _NORM if producers[name].normed else _ACT for name, raw in stage.inputs)


def _normed_sum(maps: tuple[torch.Tensor, ...], modes: tuple[str, ...],
                affine: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Σ of the inputs, each as its mode says (:data:`_RAW`, :data:`_ACT`, :data:`_NORM`; a norm's
    LADE from whole-image moments is ``map · scale + shift``)."""
    total: torch.Tensor | None = None
    k = 0
    for m, mode in zip(maps, modes, strict=True):
        v = m.float()
        if mode == _NORM:
            v = v * affine[k] + affine[k + 1]
            k += 2
        if mode != _RAW:
            v = F.leaky_relu(v, 0.2)
        total = v if total is None else total + v
    assert total is not None
    return total


# Bilinear ×2 upsampling (TensorFlow's asymmetric grid) then a 3×3 conv, seen from the low-res
# rows: output row 2i + py reads source rows i … i+2 (the source padded by one row, reflected
# on top and repeated below, as source_rows gives them) through tap weights _PHASE_TAPS[py]
# (row r of the source, tap a of the kernel): even rows read (s0+s1)/2, s1, (s1+s2)/2; odd
# rows s1, (s1+s2)/2, s2. The same holds for columns.
_PHASE_TAPS = ((( 0.5, 0.0, 0.0), (0.5, 1.0, 0.5), (0.0, 0.0, 0.5)),
               (( 0.0, 0.0, 0.0), (1.0, 0.5, 0.0), (0.0, 0.5, 1.0)))


def _phase_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """The 3×3 conv that follows a ×2 upsampling, as one 3×3 conv on the source with 4× the
    output channels: phase ``2·py + px`` (output row parity py, column parity px) first."""
    assert conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.groups == 1 and conv.bias is not None
    taps = torch.tensor(_PHASE_TAPS, dtype=torch.float64)
    w = conv.weight.detach().double()
    # K[py, px, o, i, r, s] = Σ_ab taps[py][r][a] · W[o, i, a, b] · taps[px][s][b]
    k = torch.einsum("yra,oiab,xsb->yxoirs", taps, w, taps).reshape(4 * conv.out_channels, conv.in_channels, 3, 3)
    out = nn.Conv2d(conv.in_channels, 4 * conv.out_channels, 3)
    with torch.no_grad():
        out.weight.copy_(k.float())
        bias = out.bias
        assert bias is not None
        bias.copy_(conv.bias.detach().repeat(4))
    return out


class _StageExport(nn.Module):
    """One banded stage (:class:`~animecli.inference.staged.Stage`): inputs activated (and
    normalised) and summed, upsampled (``UP``), one conv; its output stored as ``store`` with
    the band's moments (none for a norm-free conv), or, for the last stage, tanh.

    The caller pads the rows and the columns (:func:`~animecli.inference.staged.column_pad`):
    padding a stored float16 map in numpy is one copy that the band's gather makes anyway,
    where onnxruntime's reflect ``Pad`` on the float32 map was ~10 % of the stage's time."""

    def __init__(self, stage: Stage, modes: tuple[str, ...], conv: nn.Conv2d, proj: nn.Conv2d | None,
                 store: torch.dtype, recomputed: dict[int, nn.Conv2d] | None = None) -> None:
        super().__init__()
        self.conv = _phase_conv(conv) if stage.kind is StageKind.UP else conv
        self.out_channels = conv.out_channels
        # Inputs computed here from rows of x (Stage.recompute): input index → that stage's conv.
        self.recomputed = nn.ModuleDict({str(j): c for j, c in (recomputed or {}).items()})
        self.proj = proj
        self.modes = modes
        self.kind = stage.kind
        self.final = stage.final
        self.store = store
        self.halo = conv.kernel_size[0] // 2

    def forward(self, *args: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        n = len(self.modes)
        affine = 2 * self.modes.count(_NORM)
        maps = list(args[:n])
        indexes = iter(args[n + affine :])
        p = self.halo
        for key, conv in self.recomputed.items():
            assert isinstance(conv, nn.Conv2d) and self.kind is StageKind.SAME
            rows = next(indexes)  # the recomputed map's rows, in the order the band reads them
            # x comes padded for its own conv; the recomputed map is padded here, as the stored ones are.
            m = torch.index_select(conv(maps[int(key)]), 2, rows)
            maps[int(key)] = F.pad(m, (p, p, 0, 0), mode="reflect")
        z = _normed_sum(tuple(maps), self.modes, args[n : n + affine])
        if self.kind is StageKind.UP:
            # Upsampling and conv in one (see _PHASE_TAPS): the caller's rows and columns are the
            # band's sources with one more each side (reflected before, repeated after), which
            # is what the upsampled map's reflect padding reads. Out: the 4 phases as a batch,
            # (4, C, rows/2, W/2), that the caller interleaves into the full-resolution map.
            # Against Resize + Pad + conv on the upsampled band: no upsampled copy and no pad;
            # the conv runs on a quarter of the pixels with 4× the channels.
            y4: torch.Tensor = self.conv(z).reshape(4, self.out_channels, z.shape[2] - 2, z.shape[3] - 2)
            if self.proj is None:
                return y4.to(self.store)
            return y4.to(self.store), _band_moments(y4, self.proj(y4))
        y: torch.Tensor = self.conv(z)
        if self.final:
            return torch.tanh(y)
        if self.proj is None:
            return y.to(self.store)
        return y.to(self.store), _band_moments(y, self.proj(y))


class _AttentionExport(nn.Module):
    """V3's 1/8 level, whole: LADE + LeakyReLU of the last stride-2 conv, the last encoder block
    and the external attention (global softmax)."""

    def __init__(self, net: AnimeGANv3Generator) -> None:
        super().__init__()
        self.block = net.enc[6]
        self.attention = net.attention

    def forward(self, m: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.attention(self.block(_normed_sum((m,), (_NORM,), (scale, shift))))
        return out


class _TinyLowExport(nn.Module):
    """The tiny generator's levels of 1/4 and below, whole (:data:`~animecli.inference.staged.TINY_PLAN`'s
    ``low``): LeakyReLU of e3, then :meth:`AnimeGANv3TinyGenerator.low_levels`; returns d5's activation."""

    def __init__(self, net: AnimeGANv3TinyGenerator) -> None:
        super().__init__()
        self.net = net

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        return self.net.low_levels(_normed_sum((m,), (_ACT,), ()))


def export_onnx_staged(model: nn.Module, store: torch.dtype = torch.float16, sample_size: int = 64) -> StagedGraph:
    """Export an AnimeGANv3 generator (full size or tiny) as the stage graphs of its
    :func:`stage_plan` (:data:`~animecli.inference.staged.V3_PLAN`, :data:`~animecli.inference.staged.TINY_PLAN`).

    Args:
        model: a generator for which :func:`can_stage` is true.
        store: the dtype of the maps stored between stages (float32: the whole graph's result to
            ~1e-5, for the tests; float16: half the memory, ~90 dB from it).
        sample_size: side of the dummy input used for tracing (a multiple of 16).

    Returns:
        One graph per stage. A banded stage's inputs are ``map0`` … (rows with their context;
        float32 for a raw map, ``store`` otherwise) and ``scale0``/``shift0`` … ((1, C, 1, 1)
        float32, per normalised input); its outputs ``output`` (``store``; the last stage:
        float32 in [-1, 1]) and, after a LADE, ``moments`` (4, C) float32. A whole stage maps
        ``map0`` (and V3's ``scale0``, ``shift0``) to ``output`` (float32).
    """
    plan = stage_plan(model)
    if plan is None:
        raise ValueError("only an AnimeGANv3 generator (full size, or tiny with its final LADE) runs in stages")
    net = exportable(model)
    assert isinstance(net, (AnimeGANv3Generator, AnimeGANv3TinyGenerator))
    import onnx  # installed with torch's ONNX export (the onnx extra)

    blocks: dict[str, nn.Module] = {f"e{i}": b for i, b in enumerate(net.enc)}
    blocks |= {f"d{i}": b for i, b in enumerate(net.dec)}

    def conv_of(block: nn.Module) -> nn.Conv2d:
        conv = block[1]  # type: ignore[index]  # ConvLReLU / _OutLayer: pad, conv, ...
        assert isinstance(conv, nn.Conv2d)
        return conv

    producers = {st.output: st for st in plan}
    channels = {"x": 3}
    sizes = {"x": sample_size}
    graphs: dict[str, bytes] = {}
    dyn = {2: "h", 3: "w"}
    for stage in plan:
        src = stage.inputs[0][0]
        side = sizes[src]
        out_side = {StageKind.DOWN: side // 2, StageKind.UP: side * 2}.get(stage.kind, side)
        rows = side + 2 * stage.halo if stage.kind is StageKind.SAME else side
        modes = _input_modes(stage, plan)
        names = [f"map{j}" for j in range(len(stage.inputs))]
        args = []
        left, right = column_pad(stage)
        for name, raw in stage.inputs:
            if name in stage.recompute:  # rows of x, with the context of its own stage's conv
                halo = producers[name].halo
                args.append(torch.zeros(1, 3, rows + 2 * halo, side + 2 * halo))
            else:
                args.append(torch.zeros(1, channels[name], rows + (2 if stage.kind is StageKind.UP else 0),
                                        side + left + right, dtype=torch.float32 if raw else store))
        for j, (name, mode) in enumerate(zip((n for n, _ in stage.inputs), modes, strict=True)):
            if mode == _NORM:
                names += [f"scale{j}", f"shift{j}"]
                args += [torch.ones(1, channels[name], 1, 1), torch.zeros(1, channels[name], 1, 1)]
        recomputed: dict[int, nn.Conv2d] = {}
        for j, (name, _) in enumerate(stage.inputs):
            if name in stage.recompute:
                names.append(f"index{j}")
                args.append(torch.arange(rows, dtype=torch.int64))
                recomputed[j] = conv_of(blocks[producers[name].name])
        axes = {n: dyn for n in names if n.startswith("map")} | {"output": dyn}
        axes |= {n: {0: "rows"} for n in names if n.startswith("index")}
        if stage.kind is StageKind.WHOLE:
            if isinstance(net, AnimeGANv3Generator):
                net_stage: nn.Module = _AttentionExport(net)
                channels[stage.output] = conv_of(net.enc[6]).out_channels
            else:
                net_stage = _TinyLowExport(net)
                channels[stage.output] = conv_of(net.dec[5]).out_channels
            outputs = ["output"]
        else:
            proj: nn.Conv2d | None = None
            if stage.final:
                conv = conv_of(net.out_layer)
            else:
                block = blocks[stage.name]
                conv = conv_of(block)
                if stage.normed:
                    lade = block[2]  # type: ignore[index]
                    assert isinstance(lade, LADE)
                    proj = lade.proj
            net_stage = _StageExport(stage, modes, conv, proj, store, recomputed)
            outputs = ["output", "moments"] if proj is not None else ["output"]
            channels[stage.output] = conv.out_channels
        sizes[stage.output] = out_side
        data = _export(net_stage, tuple(args), names, axes, outputs=outputs)
        proto = onnx.load_from_string(data)
        # The output's channels, static (the UP stages' reshape leaves them symbolic): the
        # engine sizes its bands by them (staged._out_channels).
        dims = proto.graph.output[0].type.tensor_type.shape.dim
        dims[1].Clear()
        dims[1].dim_value = channels[stage.output] if not stage.final else 3
        entry = proto.metadata_props.add()
        entry.key, entry.value = EPS_KEY, repr(float(net.eps))
        graphs[stage.name] = proto.SerializeToString()
    return StagedGraph(graphs, float(net.eps), plan)


def _export(net: nn.Module, args: tuple[torch.Tensor, ...], names: list[str],
            dynamic_axes: dict[str, dict[int, str]], output: str = "output",
            outputs: list[str] | None = None) -> bytes:
    with tempfile.TemporaryDirectory(prefix="animecli-export-") as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about shapes (handled) and deprecations
        path = Path(tmp) / "model.onnx"
        # The TorchScript-based exporter: the dynamo one needs onnxscript and gives no faster graph here.
        torch.onnx.export(
            net, args, str(path), dynamo=False, opset_version=OPSET, input_names=names,
            output_names=outputs or [output], dynamic_axes=dynamic_axes, do_constant_folding=True,
        )
        return path.read_bytes()

