"""Seamless tiled inference in bounded memory.

The generator's normalisation layers use statistics of the *whole* image, so
running tiles independently would give each tile its own colours and leave
seams. Instead:

1. **Statistics pass** — the image, scaled down to a size that fits the
   budget (or at full size when it fits), runs through the model once while
   every :class:`~animecli.models.norm.FastGroupNorm` records its mean and
   variance.
2. **Tile pass** — the full-resolution image runs tile by tile with those
   statistics frozen, so every tile is normalised exactly like the whole
   image. Each tile carries a margin of context (``overlap``) on every side
   that is cropped away: within the margin, zero-padding at the tile edge
   differs from the real neighbours; beyond it the output is the same as the
   untiled one.

Tile origins and sizes are multiples of the model's size multiple, so the
stride-2 layers sample the same grid as on the whole image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from animecli.models.norm import FastGroupNorm
from animecli.transforms import from_model_range, to_model_range

Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TilePlan:
    """How one image is tiled.

    Attributes:
        tile: side of a tile's kept interior, in pixels.
        overlap: context margin on each side, cropped away after inference.
        stats_side: long side of the statistics pass.
    """

    tile: int
    overlap: int
    stats_side: int


def _round_down(v: int, multiple: int) -> int:
    return max(multiple, v // multiple * multiple)


def bytes_per_pixel(arch: str, dtype: torch.dtype) -> int:
    """Rough peak activation memory per input pixel for one image (measured, rounded up).

    v2 keeps up to three 128-channel maps at full resolution alive; ``lite`` at most 64 channels.
    """
    per_elem = 2 if dtype in (torch.float16, torch.bfloat16) else 4
    channels = 512 if arch == "v2" else 256
    return channels * per_elem


def plan_tiles(height: int, width: int, budget_bytes: int, bpp: int, multiple: int, overlap: int = 48) -> TilePlan:
    """Largest tile (interior + 2·overlap) whose activations fit ``budget_bytes``.

    Args:
        height, width: image size.
        budget_bytes: memory allowed for the model's activations.
        bpp: bytes of activation memory per pixel (:func:`bytes_per_pixel`).
        multiple: the model's size multiple.
        overlap: context margin; rounded up to the multiple.
    """
    overlap = -(-overlap // multiple) * multiple
    side = int(math.sqrt(max(budget_bytes, 1) / bpp))
    tile = _round_down(side - 2 * overlap, multiple)
    tile = max(tile, 4 * multiple)
    stats_side = _round_down(min(max(height, width), side), multiple)
    return TilePlan(tile=tile, overlap=overlap, stats_side=stats_side)


def _norms(model: nn.Module) -> list[FastGroupNorm]:
    return [m for m in model.modules() if isinstance(m, FastGroupNorm)]


def supports_tiling(model: nn.Module) -> bool:
    """True if the model's normalisations can be frozen (built with the fast norm)."""
    return bool(_norms(model))


def record_stats(model: nn.Module, forward: Forward, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Run ``x`` once and return every norm layer's (mean, var), in module order."""
    norms = _norms(model)
    for n in norms:
        n.record_stats = True
    try:
        forward(x)
        stats = []
        for n in norms:
            assert n.recorded is not None, "a norm layer was not reached by the statistics pass"
            stats.append(n.recorded)
    finally:
        for n in norms:
            n.record_stats = False
            n.recorded = None
    return stats


def tiled_forward(
    model: nn.Module,
    forward: Forward,
    image: torch.Tensor,
    plan: TilePlan,
    multiple: int,
    dtype: torch.dtype,
    device: torch.device,
    memory_format: torch.memory_format = torch.channels_last,
) -> torch.Tensor:
    """Stylise one large image tile by tile.

    Args:
        model: the generator (its FastGroupNorm layers are used for statistics).
        forward: how to call it (the engine's backend); must run ``model``'s modules.
        image: (3, H, W) uint8 on the CPU, H and W multiples of ``multiple``.
        plan: tile size, overlap and statistics size.
        multiple: the model's size multiple.
        dtype, device, memory_format: how tiles are run.

    Returns:
        (3, H, W) uint8 on the CPU.
    """
    _, h, w = image.shape
    # 1. statistics of the whole image, from a pass at (at most) stats_side.
    scale = min(1.0, plan.stats_side / max(h, w))
    sh, sw = _round_down(round(h * scale), multiple), _round_down(round(w * scale), multiple)
    if (sh, sw) != (h, w):
        # Downscale the uint8 image itself: a float copy of a 48-megapixel photo would
        # be 576 MB, more than everything else the tiled run holds.
        small8 = F.interpolate(image.unsqueeze(0), size=(sh, sw), mode="bilinear", antialias=True,
                               align_corners=False)
    else:
        small8 = image.unsqueeze(0)
    small = to_model_range(small8.to(device), dtype).contiguous(memory_format=memory_format)
    del small8
    with torch.inference_mode():
        stats = record_stats(model, forward, small)
    del small
    norms = _norms(model)
    out = torch.empty((3, h, w), dtype=torch.uint8)
    try:
        for n, s in zip(norms, stats, strict=True):
            n.set_fixed_stats(s)
        ov = plan.overlap
        for y0 in range(0, h, plan.tile):
            for x0 in range(0, w, plan.tile):
                y1, x1 = min(y0 + plan.tile, h), min(x0 + plan.tile, w)
                ty0, tx0 = max(0, y0 - ov), max(0, x0 - ov)
                ty1, tx1 = min(h, y1 + ov), min(w, x1 + ov)
                crop = image[:, ty0:ty1, tx0:tx1].unsqueeze(0)
                x = to_model_range(crop.to(device), dtype).contiguous(memory_format=memory_format)
                with torch.inference_mode():
                    y = forward(x)
                    piece = from_model_range(y[0, :, y0 - ty0 : y1 - ty0, x0 - tx0 : x1 - tx0]).cpu()
                out[:, y0:y1, x0:x1] = piece
                del x, y, piece
    finally:
        for n in norms:
            n.set_fixed_stats(None)
    return out
