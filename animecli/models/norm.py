"""Whole-image normalisation (``GroupNorm`` with one group), fast and exact.

``nn.GroupNorm(1, C)`` normalises each sample over (C, H, W) and then applies a
per-channel affine transform. PyTorch's generic GroupNorm kernel is slow on GPU
at batch 1 and does not keep channels-last tensors in their layout, so the
generator spends most of its time there. :class:`FastGroupNorm` computes the
same function in two passes: float32 statistics, then one fused
multiply-add with a per-sample, per-channel scale and shift.

It has the same parameters (``weight``, ``bias``) as ``nn.GroupNorm(1, C)``, so
upstream state dicts load into it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class FastGroupNorm(nn.Module):
    """Drop-in replacement for ``nn.GroupNorm(1, num_channels, affine=True)``.

    Statistics are always computed in float32, even when the input is float16
    or bfloat16, because the variance of a large activation map overflows or
    loses precision in half precision.

    The statistics can be *frozen* (see :meth:`set_fixed_stats`): tiled
    inference computes each layer's whole-image mean and variance once and then
    runs tiles with those values, so tiles look exactly like the whole image.

    Args:
        num_channels: C, the number of channels.
        eps: added to the variance for numerical stability.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        # Tiling support; not part of the state dict.
        self.fixed_stats: tuple[torch.Tensor, torch.Tensor] | None = None
        self.record_stats: bool = False
        self.recorded: tuple[torch.Tensor, torch.Tensor] | None = None
        # Pooled statistics (tiling's sampled statistics pass): when set, the batch is a set of
        # crops of ONE image, and this fraction of each crop's side, on every side, is left out
        # of one shared mean and variance (see pooled_stats).
        self.pooled_margin: float | None = None
        # Set by networks whose norm input is a private conv output.
        self.inplace: bool = False
        # Video (animecli.inference.temporal): given this layer and the statistics just computed, returns
        # those to normalise with (carried across frames). Not applied to frozen statistics.
        self.stats_hook: Callable[[FastGroupNorm, torch.Tensor, torch.Tensor],
                                  tuple[torch.Tensor, torch.Tensor]] | None = None

    def set_fixed_stats(self, stats: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        """Use the given (mean, var), each shaped (N, 1, 1, 1) float32, instead of the input's."""
        self.fixed_stats = stats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x``.

        Args:
            x: (N, C, H, W) activations, any float dtype, contiguous or channels-last.

        Returns:
            (N, C, H, W) tensor of ``x``'s dtype and memory format. When
            :attr:`inplace` is set and no gradient is needed, ``x`` itself is
            overwritten and returned (saves a large allocation per layer on CPU).
        """
        if self.fixed_stats is not None:
            mean, var = self.fixed_stats
        else:
            if self.pooled_margin is not None:
                mean, var = pooled_stats(x, self.pooled_margin)
            else:
                mean, var = whole_image_stats(x)
            if self.stats_hook is not None:  # before recording: tiles then use the carried statistics
                mean, var = self.stats_hook(self, mean, var)
            if self.record_stats:
                self.recorded = (mean.detach(), var.detach())
        rstd = torch.rsqrt(var + self.eps)
        # y = (x - mean) * rstd * w + b  ==  x * scale + shift: one pass over x.
        scale = self.weight.float().view(1, -1, 1, 1) * rstd
        shift = self.bias.float().view(1, -1, 1, 1) - mean * scale
        scale, shift = scale.to(x.dtype), shift.to(x.dtype)
        if self.inplace and not x.requires_grad:
            return x.mul_(scale).add_(shift)
        return torch.addcmul(shift, x, scale)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}"


def whole_image_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean and (biased) variance over (C, H, W), in float32.

    ``torch.var_mean`` is exact but slow on CPU (about 8x a plain sum), and
    ``E[x^2] - E[x]^2`` over millions of values loses precision when summed in
    one float32 run. So the sums are taken per memory row (H*W*C split into
    H rows for channels-last, C*H rows otherwise) and then added: each partial
    sum is short enough to stay accurate (relative error ~1e-7).

    Args:
        x: (N, C, H, W) tensor, any float dtype.

    Returns:
        (mean, var), each (N, 1, 1, 1) float32.
    """
    n, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        rows = x.permute(0, 2, 3, 1).reshape(n, h, w * c)
    else:
        rows = x.reshape(n, c * h, w)
    count = float(c * h * w)
    if rows.dtype in (torch.bfloat16, torch.float16) and rows.device.type == "cpu":
        total, squares = _half_row_sums(rows)
    else:
        total = rows.sum(dim=2, dtype=torch.float32).sum(dim=1)
        squares = torch.linalg.vector_norm(rows, dim=2, dtype=torch.float32).square().sum(dim=1)
    mean = total / count
    var = (squares / count - mean * mean).clamp_min(0.0)
    return mean.view(n, 1, 1, 1), var.view(n, 1, 1, 1)


# float32 values converted at a time by _half_row_sums: 1 MB, small enough to stay in cache.
_CHUNK_VALUES = 1 << 18


def _half_row_sums(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample sum and sum of squares of (N, R, L) bfloat16/float16 rows, in float32, on the CPU.

    A CPU reduction with ``dtype=torch.float32`` over a half-precision tensor first
    copies the whole tensor to float32 (measured on 2 cores: 15 ms for one 512×128×128
    bfloat16 map, 20× the reduction itself), which made bfloat16 inference barely
    faster than float32. Converting a few rows at a time keeps each copy in cache;
    the per-row partial sums, and so the accuracy, are the same.
    """
    n, r, length = rows.shape
    step = max(1, _CHUNK_VALUES // max(1, length))
    total = torch.zeros(n, dtype=torch.float32, device=rows.device)
    squares = torch.zeros(n, dtype=torch.float32, device=rows.device)
    for start in range(0, r, step):
        f = rows[:, start : start + step].float()
        total += f.sum(dim=2).sum(dim=1)
        squares += torch.linalg.vector_norm(f, dim=2).square().sum(dim=1)
    return total, squares


def pooled_stats(x: torch.Tensor, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One mean and variance over all of a batch of crops, leaving out their borders.

    The crops are samples of one large image: their pooled statistics estimate
    the whole image's. Near a crop's edge the zero padding of the convolutions
    stands in for the missing neighbours, so ``margin`` (a fraction of the
    side, on every side) is left out.

    Args:
        x: (N, C, H, W) activations of N equal crops, any float dtype.
        margin: fraction of H and of W to leave out on each side, in [0, 0.5).

    Returns:
        (mean, var), each (1, 1, 1, 1) float32.
    """
    h, w = x.shape[-2:]
    mh, mw = round(margin * h), round(margin * w)
    if h - 2 * mh > 0 and w - 2 * mw > 0:
        x = x[:, :, mh : h - mh, mw : w - mw]
    mean, var = whole_image_stats(x)
    # Equal-sized crops: the pooled mean is the mean of means, and E[x²] pools the same way.
    pooled_mean = mean.mean()
    pooled_var = ((var + mean * mean).mean() - pooled_mean * pooled_mean).clamp_min(0.0)
    return pooled_mean.view(1, 1, 1, 1), pooled_var.view(1, 1, 1, 1)


def mix_moments(
    prev_mean: torch.Tensor, prev_var: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
    weight: float | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, var) of the mixture ``weight``·previous + (1 − ``weight``)·current of two distributions.

    Video carries norm statistics across frames with this (an exponential moving average of the
    first two moments, :mod:`animecli.inference.temporal`); the eager layers and the exported
    carry graph (:mod:`animecli.inference.backends.onnx_export`) both call it, so they agree.

    Args:
        prev_mean, prev_var: the statistics used for the previous frame, any shape.
        mean, var: this frame's own, same shape (float32).
        weight: of the previous frame, in [0, 1] (a float or a 0-d/1-element tensor).

    Returns:
        (mean, var), the input's shape; var clamped at 0.
    """
    mixed = weight * prev_mean + (1.0 - weight) * mean
    second = weight * (prev_var + prev_mean * prev_mean) + (1.0 - weight) * (var + mean * mean)
    return mixed, (second - mixed * mixed).clamp_min(0.0)


def make_norm(num_channels: int, fast: bool, inplace: bool = False) -> nn.Module:
    """Build the normalisation layer: :class:`FastGroupNorm` or the stock ``nn.GroupNorm(1, C)``.

    Both hold the same ``weight`` and ``bias`` parameters.

    Args:
        num_channels: C.
        fast: use :class:`FastGroupNorm`.
        inplace: the caller guarantees the input is not used elsewhere, so the
            fast norm may overwrite it in inference.
    """
    if fast:
        norm = FastGroupNorm(num_channels)
        norm.inplace = inplace
        return norm
    return nn.GroupNorm(1, num_channels, affine=True)
