# Over 400 lines: the two published generators (full and tiny) share their blocks, norms and prunable widths.
"""The AnimeGAN generators that the author publishes as ONNX files, as PyTorch modules.

Written from the structure of the graphs (layer order, shapes, padding, the
arithmetic of the norm chains), not from any other implementation:

* :class:`AnimeGANv3Generator` — AnimeGANv3 (Hayao_36, Shinkai_37 and the other
  full-size releases, about 1 M parameters): a U-Net-like encoder/decoder whose
  every 3×3/7×7 conv is followed by :class:`LADE` and LeakyReLU(0.2), an
  :class:`ExternalAttention` block at 1/8 resolution, and additive skips.
* :class:`AnimeGANv3TinyGenerator` — AnimeGANv3 ``tiny_*`` releases (tiny_Cute,
  0.6 M parameters): plain conv + LeakyReLU, one level deeper (1/16), two
  residual bottleneck blocks, and a single :class:`LADE` on the last decoder conv.
* :class:`GeneratorV2TF` — the AnimeGANv2 TensorFlow generator as exported to
  ONNX. Its layers and parameters are exactly those of
  :class:`~animecli.models.v2.GeneratorV2` (same state-dict keys), but the
  TensorFlow graph upsamples with *asymmetric* bilinear interpolation
  (``tf.image.resize`` without half-pixel centres) and its layer norms use
  eps = 1e-12; see the class docstring.

All three take and return (N, 3, H, W) float RGB in [-1, 1]; no ONNX needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from animecli.models.norm import FastGroupNorm, mix_moments
from animecli.models.v2 import GeneratorV2

__all__ = [
    "LADE",
    "AnimeGANv3Generator",
    "AnimeGANv3TinyGenerator",
    "ConvLReLU",
    "ExternalAttention",
    "GeneratorV2TF",
    "StatsHook",
    "lade_apply",
    "mix_log_mean_exp",
    "mix_stats",
    "moments",
    "upsample2x_asymmetric",
]

# The LeakyReLU slope of every AnimeGAN generator.
_SLOPE = 0.2


def upsample2x_asymmetric(x: torch.Tensor) -> torch.Tensor:
    """Bilinear ×2 upsampling with TensorFlow's legacy ("asymmetric") sampling grid.

    Output pixel ``o`` samples input position ``o / 2`` (no half-pixel shift),
    so even outputs copy an input pixel and odd outputs average two neighbours;
    the last odd row/column repeats the edge. This is ONNX ``Resize`` with
    ``coordinate_transformation_mode="asymmetric"``, which neither
    ``align_corners=True`` nor ``False`` of ``F.interpolate`` reproduces.

    In an ONNX export it is that one ``Resize`` node (:class:`_ResizeAsymmetric`), the op
    the published files use; spelled out in slices and stacks it cost the tiny model ~10 %
    of its time in onnxruntime (full-size copies, and layout reorders around them).

    Args:
        x: (N, C, H, W) float tensor.

    Returns:
        (N, C, 2H, 2W) tensor of ``x``'s dtype.
    """
    if torch.onnx.is_in_onnx_export():
        out: torch.Tensor = _ResizeAsymmetric.apply(x)  # type: ignore[no-untyped-call]
        return out
    return _upsample2x(x)


def _upsample2x(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    nxt = torch.cat((x[..., 1:], x[..., -1:]), dim=-1)
    x = torch.stack((x, (x + nxt) * 0.5), dim=-1).reshape(n, c, h, 2 * w)
    nxt = torch.cat((x[..., 1:, :], x[..., -1:, :]), dim=-2)
    return torch.stack((x, (x + nxt) * 0.5), dim=-2).reshape(n, c, 2 * h, 2 * w)


class _ResizeAsymmetric(torch.autograd.Function):
    """:func:`upsample2x_asymmetric` for the TorchScript-based ONNX exporter: one ``Resize``
    (linear, asymmetric, scales 1, 1, 2, 2); traced, it computes the same as eagerly."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return _upsample2x(x)

    @staticmethod
    def symbolic(g: Any, x: Any) -> Any:
        roi = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
        scales = g.op("Constant", value_t=torch.tensor([1.0, 1.0, 2.0, 2.0], dtype=torch.float32))
        return g.op("Resize", x, roi, scales, coordinate_transformation_mode_s="asymmetric",
                    mode_s="linear", nearest_mode_s="floor")


def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel (mean, biased variance) over H, W, in float32, each (N, C, 1, 1)."""
    var, mean = torch.var_mean(x.float(), dim=(2, 3), correction=0, keepdim=True)
    return mean, var


def _pooled_moments(x: torch.Tensor, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, variance) pooled over a batch of crops of ONE image, borders left out.

    The crops stand for the whole image (tiling's sampled statistics pass, see
    :func:`animecli.models.norm.pooled_stats` for the scalar version).

    Args:
        x: (N, C, H, W) activations of N equal crops.
        margin: fraction of H and of W left out on each side, in [0, 0.5).

    Returns:
        (mean, var), each (1, C, 1, 1) float32.
    """
    h, w = x.shape[-2:]
    mh, mw = round(margin * h), round(margin * w)
    if h - 2 * mh > 0 and w - 2 * mw > 0:
        x = x[:, :, mh : h - mh, mw : w - mw]
    mean, var = moments(x)
    # Equal-sized crops: the pooled mean is the mean of means, and E[x²] pools the same way.
    pooled_mean = mean.mean(dim=0, keepdim=True)
    pooled_var = ((var + mean * mean).mean(dim=0, keepdim=True) - pooled_mean * pooled_mean).clamp_min(0.0)
    return pooled_mean, pooled_var


def mix_log_mean_exp(prev: torch.Tensor, lme: torch.Tensor, weight: float | torch.Tensor) -> torch.Tensor:
    """The attention normaliser of the mixture ``weight``·previous + (1 − ``weight``)·current.

    ``lme`` is log(mean exp(a)) over the image's positions; for the mixture of two frames'
    positions it is log(w·exp(prev) + (1 − w)·exp(lme)), computed around the larger of the
    two so nothing overflows. ``weight`` 0 gives ``lme`` exactly (not a log of an underflow).

    Args:
        prev, lme: (N or 1, M, 1) float32.
        weight: in [0, 1], a float or a 1-element tensor.
    """
    top = torch.maximum(prev, lme)
    mixed = top + torch.log(weight * torch.exp(prev - top) + (1.0 - weight) * torch.exp(lme - top))
    if isinstance(weight, torch.Tensor):
        return torch.where(weight > 0, mixed, lme)
    return mixed if weight > 0 else lme


def mix_stats(layer: nn.Module, prev: tuple[torch.Tensor, ...], cur: tuple[torch.Tensor, ...],
              weight: float | torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Mix one whole-image layer's statistics of two frames, as a mixture of the two frames'
    pixels: the log-mean-exp for an :class:`ExternalAttention`; otherwise (mean, var) pairs,
    mixed as moments (one pair for a :class:`~animecli.models.norm.FastGroupNorm`, two for a
    :class:`LADE`: μx, σx², μt, σt²)."""
    if isinstance(layer, ExternalAttention):
        return (mix_log_mean_exp(prev[0], cur[0], weight),)
    mixed: list[torch.Tensor] = []
    for i in range(0, len(cur), 2):
        mixed.extend(mix_moments(prev[i], prev[i + 1], cur[i], cur[i + 1], weight))
    return tuple(mixed)


# (layer, the statistics it just computed) → the statistics to use (video: carried across frames).
StatsHook = Callable[[nn.Module, tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]]


class _Freezable(nn.Module):
    """Statistics over the whole image that tiled inference can record once and then freeze.

    The same protocol as :class:`~animecli.models.norm.FastGroupNorm`: with
    :attr:`record_stats` set a forward pass keeps its statistics in
    :attr:`recorded`; :meth:`set_fixed_stats` makes later passes (tiles) use
    them instead of their own; :attr:`pooled_margin` makes a batch of crops
    of one image pool theirs. None of it is part of the state dict.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fixed_stats: tuple[torch.Tensor, ...] | None = None
        self.record_stats: bool = False
        self.recorded: tuple[torch.Tensor, ...] | None = None
        self.pooled_margin: float | None = None
        # Video (animecli.inference.temporal): applied to the statistics just computed (not to
        # frozen ones), before they are recorded, like FastGroupNorm.stats_hook.
        self.stats_hook: StatsHook | None = None

    def set_fixed_stats(self, stats: tuple[torch.Tensor, ...] | None) -> None:
        """Use ``stats`` (what :attr:`recorded` held) instead of the input's own statistics."""
        self.fixed_stats = stats


def lade_apply(x: torch.Tensor, mean_x: torch.Tensor, var_x: torch.Tensor, mean_t: torch.Tensor,
               var_t: torch.Tensor, eps: float) -> torch.Tensor:
    """``(x − μx) / sqrt(σx² + eps) · sqrt(σt² + eps) + μt`` as one multiply-add over ``x``.

    Args:
        x: (N, C, H, W).
        mean_x, var_x, mean_t, var_t: (N or 1, C, 1, 1) float32.
        eps: the file's; 0 or less adds the flat-channel guard below.

    Returns:
        (N, C, H, W), ``x``'s dtype.
    """
    scale = torch.sqrt(var_t + eps) / torch.sqrt(var_x + eps)
    if eps <= 0:
        # The fp16 Hayao file stores eps 0: a flat channel (a one-colour image, a black video
        # frame) would give 0/0 = NaN. Its x − μx is 0, so any scale gives the same μt; 0 keeps
        # it finite. Decided at build time, so other files' graphs carry no extra op.
        scale = torch.where(var_x > 0, scale, torch.zeros_like(scale))
    shift = mean_t - mean_x * scale
    return torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype))


class LADE(_Freezable):
    """Linearly adaptive denormalisation (AnimeGANv3's norm).

    ``x`` is instance-normalised (each channel over H, W) and then given the
    per-channel mean and standard deviation of ``proj(x)``, a 1×1 conv of the
    same input: ``(x - μx) / sqrt(σx² + eps) · sqrt(σt² + eps) + μt`` with
    ``t = proj(x)``. There are no affine parameters besides ``proj``'s.

    The files spell this out as GlobalAveragePool / Sub / Mul / GlobalAveragePool
    / Add(eps) / Sqrt (/ Reciprocal) chains; ``eps`` is read from the file
    (1e-5 in most, 0 in the fp16 Hayao conversion).

    Tiling freezes the four statistics (μx, σx², μt, σt², each (N or 1, C, 1, 1)
    float32, in that order): ``t`` is computed per tile, its moments are not.

    Args:
        channels: C.
        eps: added to both variances.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) → (N, C, H, W), same dtype."""
        t = self.proj(x)
        if self.fixed_stats is not None:
            mean_x, var_x, mean_t, var_t = self.fixed_stats
        else:
            if self.pooled_margin is not None:
                (mean_x, var_x), (mean_t, var_t) = (_pooled_moments(x, self.pooled_margin),
                                                    _pooled_moments(t, self.pooled_margin))
            else:
                (mean_x, var_x), (mean_t, var_t) = moments(x), moments(t)
            if self.stats_hook is not None:
                mean_x, var_x, mean_t, var_t = self.stats_hook(self, (mean_x, var_x, mean_t, var_t))
            if self.record_stats:
                self.recorded = (mean_x.detach(), var_x.detach(), mean_t.detach(), var_t.detach())
        return lade_apply(x, mean_x, var_x, mean_t, var_t, self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


class ConvLReLU(nn.Sequential):
    """Reflect pad → conv (bias) → optional :class:`LADE` → LeakyReLU(0.2).

    Stride 1 pads ``k // 2`` on every side; stride 2 (3×3) pads one row on top
    and one column on the left only, as the files do.

    Indices: ``0`` pad, ``1`` conv, ``2`` norm (``nn.Identity`` without one), ``3`` activation.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1,
                 norm: bool = True, eps: float = 1e-5) -> None:
        p = kernel_size // 2
        # (left, right, top, bottom): stride 2 pads only before, so the 3×3 windows start at 0, 2, 4...
        pad = (p, p, p, p) if stride == 1 else (p, p - 1, p, p - 1)
        super().__init__(
            nn.ReflectionPad2d(pad),
            nn.Conv2d(in_ch, out_ch, kernel_size, stride),
            LADE(out_ch, eps) if norm else nn.Identity(),
            nn.LeakyReLU(_SLOPE, inplace=True),
        )


class ExternalAttention(_Freezable):
    """AnimeGANv3's external-attention block with a residual connection.

    ``a = key(inp(x))`` gives M memory-unit logits per pixel; a softmax over
    all H·W positions, then a division by the sum over the M units (+ eps),
    gives the attention map, which ``value`` maps back to C channels; ``out``
    (1×1) and a residual add follow, then LeakyReLU(0.2). The softmax is over
    the whole image, like the norms: the result depends on every pixel.

    Tiling freezes the softmax's normaliser: per memory unit, the log of the
    *mean* of ``exp(a)`` over the whole image (``lme``, (N or 1, M, 1) float32).
    A tile then computes ``e = exp(a - lme)`` and ``e / (Σ_M e + eps·H·W)``:
    the whole image's softmax is ``e / (H·W)`` with its own H·W, and a factor
    common to every unit cancels in the division by their sum, except against
    ``eps``, which is 1e-9 next to a sum of about M (so the tile's H·W stands in).

    Args:
        channels: C.
        memory: M, the number of memory units (the files: C).
        eps: added to the per-pixel sum (1e-9 in the files; 0 in the fp16 one).
        inner: output channels of ``inp`` (default C; fewer in pruned models).
        value_channels: output channels of ``value`` (default C; fewer in pruned models).
    """

    def __init__(self, channels: int, memory: int, eps: float = 1e-9, inner: int | None = None,
                 value_channels: int | None = None) -> None:
        super().__init__()
        self.eps = eps
        inner = channels if inner is None else inner
        value_channels = channels if value_channels is None else value_channels
        self.inp = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(inner, memory, 1)
        self.value = nn.Conv2d(memory, value_channels, 1)
        self.out = nn.Conv2d(value_channels, channels, 1)

    def _log_mean_exp(self, a: torch.Tensor) -> torch.Tensor:
        """(N, M, H, W) logits → per-unit log-mean-exp over positions, (N, M, 1), or (1, M, 1) pooled."""
        if self.pooled_margin is not None:
            h, w = a.shape[-2:]
            mh, mw = round(self.pooled_margin * h), round(self.pooled_margin * w)
            if h - 2 * mh > 0 and w - 2 * mw > 0:
                a = a[:, :, mh : h - mh, mw : w - mw]
            n, m = a.shape[:2]
            flat = a.float().permute(1, 0, 2, 3).reshape(1, m, -1)  # every crop's positions, per unit
        else:
            n, m = a.shape[:2]
            flat = a.float().reshape(n, m, -1)
        return torch.logsumexp(flat, dim=2, keepdim=True) - math.log(flat.shape[2])

    def _attend(self, a: torch.Tensor, lme: torch.Tensor) -> torch.Tensor:
        """(N, M, H, W) logits and a given normaliser (N or 1, M, 1) → (N, M, H·W) attention."""
        n, m, h, w = a.shape
        e = torch.exp(a.reshape(n, m, h * w).float() - lme)
        return (e / (e.sum(dim=1, keepdim=True) + self.eps * h * w)).to(a.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) → (N, C, H, W)."""
        a = self.key(self.inp(x))
        n, m, h, w = a.shape
        if self.fixed_stats is not None:
            attn = self._attend(a, self.fixed_stats[0])
        elif self.stats_hook is not None:
            # Carried across frames: the normaliser of the frames' mixture, used as a tile uses
            # the whole image's (for one frame alone this equals the softmax below).
            (lme,) = self.stats_hook(self, (self._log_mean_exp(a),))
            if self.record_stats:
                self.recorded = (lme.detach(),)
            attn = self._attend(a, lme)
        else:
            if self.record_stats:
                self.recorded = (self._log_mean_exp(a).detach(),)
            if self.pooled_margin is not None:
                # The crops' own softmax does not matter here: the pass only gathers statistics
                # (later layers see attention from this crop's positions only, as in a tile).
                attn = self._attend(a, self._log_mean_exp(a))
            else:
                attn = torch.softmax(a.reshape(n, m, h * w), dim=2)
                attn = attn / (attn.sum(dim=1, keepdim=True) + self.eps)
        y = self.out(self.value(attn.reshape(n, m, h, w)))
        return F.leaky_relu(y + x, _SLOPE)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


class _OutLayer(nn.Sequential):
    """Reflect pad 3 → 7×7 conv to RGB → tanh."""

    def __init__(self, in_ch: int) -> None:
        super().__init__(nn.ReflectionPad2d(3), nn.Conv2d(in_ch, 3, 7), nn.Tanh())


class AnimeGANv3Generator(nn.Module):
    """AnimeGANv3 generator (the full-size releases: Hayao_36, Shinkai_37, ...).

    With ``base=32``: encoder 7×7 3→32 (1/1), s2 32→32, 32→64 (1/2), s2 64→64,
    64→128 (1/4), s2 128→128, 128→128 (1/8), every conv followed by LADE and
    LeakyReLU; external attention at 1/8; decoder of three stages, each
    ×2 upsampling, a conv whose output gets the encoder feature of that
    resolution added, and a second conv (128,128 | 64,64 | 32,32 channels); a
    7×7 conv to RGB and tanh. 31 convs (13 of them the LADE projections),
    1.02 M parameters.

    Modules are registered in the order the files run their convs.

    Args:
        base: channels at full resolution (32 in the releases; small for tests).
        eps: the LADE eps.
        attn_eps: the external attention's eps.
        widths: the output channels of every layer, for structurally pruned
            models (default: those ``base`` gives), in the order of
            :meth:`default_widths`: ``enc[0..6]``, ``dec[0..5]``, then the
            attention's ``inp``, ``key`` (memory units) and ``value``. The
            additive skips need ``enc[0] == dec[4]``, ``enc[2] == dec[2]`` and
            ``enc[4] == dec[0]``; the attention's residual keeps ``enc[6]``.
    """

    WIDTHS = 16

    def __init__(self, base: int = 32, eps: float = 1e-5, attn_eps: float = 1e-9,
                 widths: Sequence[int] | None = None) -> None:
        super().__init__()
        w = self.default_widths(base) if widths is None else tuple(int(v) for v in widths)
        if len(w) != self.WIDTHS or min(w) < 1:
            raise ValueError(f"AnimeGANv3Generator needs {self.WIDTHS} positive widths, got {w}")
        if (w[0], w[2], w[4]) != (w[11], w[9], w[7]):
            raise ValueError(f"AnimeGANv3Generator widths break the skip additions (enc0/2/4 vs dec4/2/0): {w}")
        self.widths = w
        self.eps = eps
        self.attn_eps = attn_eps
        e, d = w[:7], w[7:13]

        def block(i: int, o: int, k: int = 3, s: int = 1) -> ConvLReLU:
            return ConvLReLU(i, o, k, s, norm=True, eps=eps)

        self.enc = nn.ModuleList([
            block(3, e[0], 7), block(e[0], e[1], s=2), block(e[1], e[2]), block(e[2], e[3], s=2),
            block(e[3], e[4]), block(e[4], e[5], s=2), block(e[5], e[6]),
        ])
        self.attention = ExternalAttention(e[6], w[14], attn_eps, inner=w[13], value_channels=w[15])
        self.dec = nn.ModuleList([
            block(e[6], d[0]), block(d[0], d[1]), block(d[1], d[2]), block(d[2], d[3]), block(d[3], d[4]),
            block(d[4], d[5]),
        ])
        self.out_layer = _OutLayer(d[5])

    @staticmethod
    def default_widths(base: int = 32) -> tuple[int, ...]:
        """The release's layer widths for ``base`` (see ``widths``)."""
        b1, b2, b4 = base, 2 * base, 4 * base
        return (b1, b1, b2, b2, b4, b4, b4, b4, b4, b2, b2, b1, b1, b4, b4, b4)

    @property
    def size_multiple(self) -> int:
        """Input H and W must be multiples of this (three stride-2 levels)."""
        return 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stylise a batch.

        Args:
            x: (N, 3, H, W) RGB in [-1, 1]; H and W multiples of 8.

        Returns:
            (N, 3, H, W) RGB in [-1, 1].
        """
        e = self.enc
        s1 = e[0](x)
        s2 = e[2](e[1](s1))
        s4 = e[4](e[3](s2))
        h = self.attention(e[6](e[5](s4)))
        d = self.dec
        for i, skip in enumerate((s4, s2, s1)):
            h = d[2 * i](upsample2x_asymmetric(h)) + skip
            h = d[2 * i + 1](h)
        out: torch.Tensor = self.out_layer(h)
        return out


class _Bottleneck(nn.Module):
    """1×1 C→C/2 LeakyReLU, 3×3 C/2→C/2 LeakyReLU, 1×1 C/2→C, + x, LeakyReLU (tiny generators)."""

    def __init__(self, channels: int, reduce: int | None = None, inner: int | None = None) -> None:
        super().__init__()
        reduce = channels // 2 if reduce is None else reduce
        inner = channels // 2 if inner is None else inner
        self.reduce = ConvLReLU(channels, reduce, 1, norm=False)
        self.conv = ConvLReLU(reduce, inner, 3, norm=False)
        self.expand = nn.Conv2d(inner, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) → (N, C, H, W)."""
        return F.leaky_relu(self.expand(self.conv(self.reduce(x))) + x, _SLOPE)


class AnimeGANv3TinyGenerator(nn.Module):
    """AnimeGANv3 ``tiny`` generator (tiny_Cute).

    With ``base=16``: encoder 7×7 3→16 (1/1), s2 16→16, 16→16 (1/2), s2 16→32,
    32→32 (1/4), s2 32→64, 64→64 (1/8), s2 64→128, 128→128 (1/16), all conv +
    LeakyReLU without norms; two bottleneck residual blocks (128→64→64→128);
    decoder of four stages, each ×2 upsampling, a conv plus the encoder feature
    of that resolution, and more convs (64,64,64 | 32,32,32 | 16,16,16 | 16,16);
    the very last decoder conv has a :class:`LADE` (the only norm in the
    network, ``final_norm``); a 7×7 conv to RGB and tanh. 28 convs, 0.6 M parameters.

    Args:
        base: channels at full resolution (16 in tiny_Cute).
        final_norm: the LADE on the last decoder conv (tiny_Cute has it).
        eps: that LADE's eps.
        widths: the output channels of every layer, for structurally pruned
            models (default: those ``base`` gives), in the order of
            :meth:`default_widths`: ``enc[0..8]``, then ``reduce`` and
            ``conv`` of ``res[0]`` and of ``res[1]``, then ``dec[0..10]``.
            The additive skips need ``enc[0] == dec[9]``, ``enc[2] == dec[6]``,
            ``enc[4] == dec[3]`` and ``enc[6] == dec[0]``; the residual blocks keep ``enc[8]``.
    """

    WIDTHS = 24

    def __init__(self, base: int = 16, final_norm: bool = True, eps: float = 1e-5,
                 widths: Sequence[int] | None = None) -> None:
        super().__init__()
        w = self.default_widths(base) if widths is None else tuple(int(v) for v in widths)
        if len(w) != self.WIDTHS or min(w) < 1:
            raise ValueError(f"AnimeGANv3TinyGenerator needs {self.WIDTHS} positive widths, got {w}")
        e, r, d = w[:9], w[9:13], w[13:]
        if (e[0], e[2], e[4], e[6]) != (d[9], d[6], d[3], d[0]):
            raise ValueError(f"AnimeGANv3TinyGenerator widths break the skip additions (enc0/2/4/6 vs dec9/6/3/0): {w}")
        self.widths = w
        self.final_norm = final_norm
        self.eps = eps

        def block(i: int, o: int, k: int = 3, s: int = 1, norm: bool = False) -> ConvLReLU:
            return ConvLReLU(i, o, k, s, norm=norm, eps=eps)

        self.enc = nn.ModuleList([
            block(3, e[0], 7), block(e[0], e[1], s=2), block(e[1], e[2]), block(e[2], e[3], s=2),
            block(e[3], e[4]), block(e[4], e[5], s=2), block(e[5], e[6]), block(e[6], e[7], s=2),
            block(e[7], e[8]),
        ])
        self.res = nn.ModuleList([_Bottleneck(e[8], r[0], r[1]), _Bottleneck(e[8], r[2], r[3])])
        ins = (e[8], *d[:-1])
        self.dec = nn.ModuleList([
            block(ins[i], d[i], norm=final_norm and i == len(d) - 1) for i in range(len(d))
        ])
        self.out_layer = _OutLayer(d[-1])

    @staticmethod
    def default_widths(base: int = 16) -> tuple[int, ...]:
        """The release's layer widths for ``base`` (see ``widths``)."""
        b1, b2, b4, b8 = base, 2 * base, 4 * base, 8 * base
        enc = (b1, b1, b1, b2, b2, b4, b4, b8, b8)
        dec = (b4, b4, b4, b2, b2, b2, b1, b1, b1, b1, b1)
        return (*enc, b8 // 2, b8 // 2, b8 // 2, b8 // 2, *dec)

    @property
    def size_multiple(self) -> int:
        """Input H and W must be multiples of this (four stride-2 levels)."""
        return 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stylise a batch.

        Args:
            x: (N, 3, H, W) RGB in [-1, 1]; H and W multiples of 16.

        Returns:
            (N, 3, H, W) RGB in [-1, 1].
        """
        e = self.enc
        s1 = e[0](x)
        s2 = e[2](e[1](s1))
        h = self.low_levels(e[3](s2))
        h = self._up_level(2, h, s2)
        h = self._up_level(3, h, s1)
        out: torch.Tensor = self.out_layer(h)
        return out

    # Where each decoder level starts in ``dec`` (the last level has two convs), and its end.
    _LEVEL_STARTS = (0, 3, 6, 9, 11)

    def _up_level(self, level: int, h: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Decoder level ``level`` (0: 1/16 → 1/8 … 3: 1/2 → 1/1): ×2 upsampling, its first conv
        plus the encoder's skip of that resolution, then its other convs."""
        d, starts = self.dec, self._LEVEL_STARTS
        h = d[starts[level]](upsample2x_asymmetric(h)) + skip
        for j in range(starts[level] + 1, starts[level + 1]):
            h = d[j](h)
        return h

    def low_levels(self, a4: torch.Tensor) -> torch.Tensor:
        """The levels of 1/4 and below: ``enc[4]`` … ``enc[8]``, the residual blocks and
        decoder levels 0 and 1 with their skips (the staged export's ``low`` stage runs this).

        Args:
            a4: (N, enc[3] channels, H/4, W/4), the activated output of ``enc[3]``.

        Returns:
            (N, dec[5] channels, H/4, W/4), the activated output of ``dec[5]``.
        """
        e = self.enc
        s4 = e[4](a4)
        s8 = e[6](e[5](s4))
        h: torch.Tensor = e[8](e[7](s8))
        for r in self.res:
            h = r(h)
        h = self._up_level(0, h, s8)
        return self._up_level(1, h, s4)


class GeneratorV2TF(GeneratorV2):
    """AnimeGANv2 generator as the TensorFlow original computes it.

    Same layers, parameters and state-dict keys as
    :class:`~animecli.models.v2.GeneratorV2` (a v2 state dict loads with
    ``strict=True`` and vice versa). Two differences, both read from the
    exported graph:

    * upsampling is :func:`upsample2x_asymmetric` (TF1 ``resize_bilinear``,
      no half-pixel centres), where ``GeneratorV2`` offers only
      ``align_corners=True`` (the PyTorch ports) or half-pixel ×2;
    * the one-group layer norms use ``norm_eps`` (TensorFlow's 1e-12, not 1e-5).

    Args:
        width: channel multiplier (1.0 = the release).
        norm_eps: eps of every layer norm.
    """

    def __init__(self, width: float = 1.0, norm_eps: float = 1e-12) -> None:
        super().__init__(width, align_corners=False, fast_norm=True)
        for m in self.modules():
            if isinstance(m, (FastGroupNorm, nn.GroupNorm)):
                m.eps = norm_eps

    @property
    def size_multiple(self) -> int:
        """Input H and W must be multiples of this (two stride-2 levels)."""
        return 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stylise a batch.

        Args:
            x: (N, 3, H, W) RGB in [-1, 1]; H and W multiples of 4.

        Returns:
            (N, 3, H, W) RGB in [-1, 1].
        """
        out = self.block_c(self.block_b(self.block_a(x)))
        out = self.block_d(upsample2x_asymmetric(out))
        out = self.block_e(upsample2x_asymmetric(out))
        result: torch.Tensor = self.out_layer(out)
        return result
