"""Seamless tiled inference in bounded memory.

The generator's normalisation layers use statistics of the *whole* image, so
running tiles independently would give each tile its own colours and leave
seams. Instead:

1. **Statistics pass** — every :class:`~animecli.models.norm.FastGroupNorm`
   records the mean and variance it would see on the whole image. By default
   they are *sampled*: a grid of small full-resolution crops spread over the
   image runs through the model as one batch whose norm layers pool their
   statistics over all crops (borders left out). The layers normalise one
   scalar mean and variance per image, which a few percent of the pixels, at
   the right scale, estimate well; a pass over the image scaled down instead
   shifts them (features of a smaller image are not those of the large one)
   and costs more. The old whole-image pass (at full size, or scaled down)
   remains for comparison: it is exact at full size but costs an untiled run.
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

from animecli.inference.tensors import from_model_range, to_model_range
from animecli.models.animeganv3 import LADE, ExternalAttention
from animecli.models.norm import FastGroupNorm
from animecli.models.spec import activation_bytes_per_pixel

Forward = Callable[[torch.Tensor], torch.Tensor]
# (tile, stats) → output, for graphs that take the frozen statistics as an input:
# stats is (S,) float32, every whole-image layer's statistics flattened in module order.
FixedForward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TilePlan:
    """How one image is tiled.

    Attributes:
        tile: side of a tile's kept interior, in pixels.
        overlap: context margin on each side, cropped away after inference.
        stats_side: long side of a whole-image statistics pass (used when
            ``samples`` is 0).
        samples: crops per side of the sampled statistics pass (``samples²``
            crops); 0 = a whole-image pass at ``stats_side``.
        sample_side: side of each sampled crop's counted interior.
        sample_margin: context each sampled crop carries on every side, left out
            of the statistics.
    """

    tile: int
    overlap: int
    stats_side: int
    samples: int = 0
    sample_side: int = 0
    sample_margin: int = 16


def _round_down(v: int, multiple: int) -> int:
    return max(multiple, v // multiple * multiple)


def bytes_per_pixel(arch: str, dtype: torch.dtype, graph: str = "eager") -> int:
    """:func:`animecli.models.spec.activation_bytes_per_pixel` for a compute dtype."""
    return activation_bytes_per_pixel(arch, dtype in (torch.float16, torch.bfloat16), graph)


# Sampled statistics: SAMPLE_GRID² crops whose interiors together cover about
# SAMPLE_FRACTION of the image (MIN_SAMPLE_SIDE to MAX_SAMPLE_SIDE px each), each
# with SAMPLE_MARGIN px of context. Chosen at 1536² on val photos with the hayao
# student (docs/models.md): many small crops spread evenly beat fewer large ones
# (the error is sampling error: which parts of the photo are seen), and 8×8 crops
# of 64 px kept the mean difference to an untiled run under 1/255 for ~17 % of an
# untiled run's pixels. Above ~3 megapixels the crops stop growing: what matters is
# how many there are and how evenly they cover the photo, not what share they are.
SAMPLE_GRID = 8
SAMPLE_FRACTION = 1 / 9
MIN_SAMPLE_SIDE = 48
MAX_SAMPLE_SIDE = 192
SAMPLE_MARGIN = 8
# AnimeGANv3 (LADE: a mean and variance per channel, of two tensors, and the attention's per-unit
# normaliser) needs larger crops: on a 1536×1024 val photo with the Hayao file, tiles vs whole were
# 38.2 dB with 48-px crops, 49.2 dB with 128-px crops (32-px margin), 53.7 dB with 192-px ones
# (16-px margin), 82.7 dB with exact whole-image statistics (bench/onnx_convert.py, docs/models.md).
LADE_MIN_SAMPLE_SIDE = 128


def plan_tiles(
    height: int, width: int, budget_bytes: int, bpp: int, multiple: int, overlap: int = 32,
    tile: int | None = None, stats_bpp: int | None = None, min_sample: int = MIN_SAMPLE_SIDE,
) -> TilePlan:
    """Largest tile (interior + 2·overlap) whose activations fit ``budget_bytes``, and the statistics sample.

    Args:
        height, width: image size.
        budget_bytes: memory allowed for the model's activations.
        bpp: bytes of activation memory per pixel (:func:`bytes_per_pixel`).
        multiple: the model's size multiple.
        overlap: context margin; rounded up to the multiple.
        tile: use this tile side (rounded down to the multiple) instead of the largest that fits.
        stats_bpp: bytes per pixel of the statistics pass, if it runs differently from the
            tiles (it runs in eager PyTorch); default ``bpp``.
        min_sample: smallest side of a sampled crop (:data:`LADE_MIN_SAMPLE_SIDE` for models with
            per-channel statistics, see :func:`min_sample_side`).
    """
    stats_bpp = stats_bpp or bpp
    overlap = -(-overlap // multiple) * multiple
    side = int(math.sqrt(max(budget_bytes, 1) / bpp))
    if tile is None:
        tile = _round_down(side - 2 * overlap, multiple)
        tile = max(tile, 4 * multiple)
    else:
        tile = _round_down(tile, multiple)
    stats_side = _round_down(min(max(height, width), side), multiple)
    grid, margin = SAMPLE_GRID, -(-SAMPLE_MARGIN // multiple) * multiple
    sample = _round_down(int(math.sqrt(SAMPLE_FRACTION * height * width) / grid), multiple)
    sample = min(max(sample, min_sample), max(MAX_SAMPLE_SIDE, min_sample))

    def batch_bytes() -> int:
        return grid * grid * (sample + 2 * margin) ** 2 * stats_bpp

    # The crops run as one batch: keep it inside the budget (fewer, then smaller crops).
    while grid > 2 and batch_bytes() > budget_bytes:
        grid -= 1
    while sample > min_sample and batch_bytes() > budget_bytes:
        sample = max(min_sample, _round_down(sample * 3 // 4, multiple))
    whole_bytes = height * width * stats_bpp
    if 2 * batch_bytes() >= whole_bytes and whole_bytes <= budget_bytes:
        # A small image: the crops would cost about as much as the exact whole-image pass.
        return TilePlan(tile=tile, overlap=overlap, stats_side=stats_side)
    return TilePlan(tile=tile, overlap=overlap, stats_side=stats_side, samples=grid, sample_side=sample,
                    sample_margin=margin)


# A layer's recorded whole-image statistics: (mean, var) of a FastGroupNorm, each (N or 1, 1, 1, 1);
# (μx, σx², μt, σt²) of a LADE, each (N or 1, C, 1, 1); (log-mean-exp,) of an external attention.
Stats = tuple[torch.Tensor, ...]
Frozen = FastGroupNorm | LADE | ExternalAttention


def whole_image_layers(model: nn.Module) -> list[Frozen]:
    """Every layer whose result depends on the whole image, in module order (the layers whose
    statistics tiling freezes and video carries: :mod:`animecli.inference.temporal`)."""
    return [m for m in model.modules() if isinstance(m, (FastGroupNorm, LADE, ExternalAttention))]


def _freeze(layer: Frozen, stats: Stats | None) -> None:
    if isinstance(layer, FastGroupNorm):
        layer.set_fixed_stats(None if stats is None else (stats[0], stats[1]))
    else:
        layer.set_fixed_stats(stats)


def supports_tiling(model: nn.Module) -> bool:
    """True if the model's whole-image statistics can be frozen (built with the fast norm;
    AnimeGANv3's LADE norms and attention softmax)."""
    return bool(whole_image_layers(model))


def flat_stats(stats: list[Stats]) -> torch.Tensor:
    """Recorded statistics of one image as a statistics graph's ``stats`` input, (S,) float32."""
    return torch.cat([t.detach().float().reshape(-1).cpu() for layer in stats for t in layer])


def scalar_stats_only(model: nn.Module) -> bool:
    """Whether every frozen layer is a one-group norm (one mean and variance per image; LADE's
    are per channel, and the attention's normaliser per unit: they need larger sampled crops)."""
    return all(isinstance(m, FastGroupNorm) for m in whole_image_layers(model))


def min_sample_side(model: nn.Module) -> int:
    """The smallest sampled-statistics crop for ``model``: larger where the statistics are per channel."""
    return MIN_SAMPLE_SIDE if scalar_stats_only(model) else LADE_MIN_SAMPLE_SIDE


def record_stats(
    model: nn.Module, forward: Forward, x: torch.Tensor, pooled_margin: float | None = None
) -> list[Stats]:
    """Run ``x`` once and return every norm layer's (mean, var), in module order.

    Args:
        model: the generator.
        forward: how to call it.
        x: (N, 3, H, W) model input.
        pooled_margin: ``None`` = per-image statistics; else ``x`` holds crops of one image and
            each layer pools one mean and variance over them, leaving out this fraction of each
            side (see :func:`~animecli.models.norm.pooled_stats`).
    """
    norms = whole_image_layers(model)
    for n in norms:
        n.record_stats = True
        n.pooled_margin = pooled_margin
    try:
        forward(x)
        stats: list[Stats] = []
        for n in norms:
            assert n.recorded is not None, "a norm layer was not reached by the statistics pass"
            stats.append(n.recorded)
    finally:
        for n in norms:
            n.record_stats = False
            n.recorded = None
            n.pooled_margin = None
    return stats


def sample_origins(height: int, width: int, grid: int, side: int, multiple: int) -> list[tuple[int, int]]:
    """Top-left corners of ``grid``² crops of ``side`` px, one centred in each cell of a grid over the image.

    Corners are multiples of ``multiple`` so crops sample the stride-2 grid of the
    whole image; crops stay inside the image.
    """
    def starts(length: int) -> list[int]:
        out = []
        for i in range(grid):
            centre = (2 * i + 1) * length // (2 * grid)
            start = min(max(0, centre - side // 2), length - side)
            out.append(start // multiple * multiple)
        return out

    return [(y, x) for y in starts(height) for x in starts(width)]


def sampled_stats(
    model: nn.Module, forward: Forward, image: torch.Tensor, plan: TilePlan, multiple: int,
    dtype: torch.dtype, device: torch.device, memory_format: torch.memory_format,
) -> list[Stats]:
    """Whole-image norm statistics estimated from a grid of full-resolution crops (see the module doc).

    Args:
        image: (3, H, W) uint8, H and W multiples of the model's size multiple.
        plan: ``samples`` and ``sample_side`` give the grid; ``overlap`` the context margin.
    """
    _, h, w = image.shape
    side = min(plan.sample_side + 2 * plan.sample_margin, h, w) // multiple * multiple
    origins = sample_origins(h, w, plan.samples, side, multiple)
    crops = torch.stack([image[:, y : y + side, x : x + side] for y, x in origins])
    x = to_model_range(crops.to(device), dtype).contiguous(memory_format=memory_format)
    del crops
    margin = min(plan.sample_margin / side, 0.45)
    with torch.inference_mode():
        return record_stats(model, forward, x, pooled_margin=margin)


def tiled_forward(
    model: nn.Module,
    forward: Forward,
    image: torch.Tensor,
    plan: TilePlan,
    multiple: int,
    dtype: torch.dtype,
    device: torch.device,
    memory_format: torch.memory_format = torch.channels_last,
    fixed_forward: FixedForward | None = None,
) -> torch.Tensor:
    """Stylise one large image tile by tile.

    Args:
        model: the generator (its FastGroupNorm layers are used for statistics).
        forward: how to call it (the engine's backend); must run ``model``'s modules.
        image: (3, H, W) uint8 on the CPU, H and W multiples of ``multiple``.
        plan: tile size, overlap and statistics size.
        multiple: the model's size multiple.
        dtype, device, memory_format: how tiles are run.
        fixed_forward: run the tiles through this instead (e.g. an onnxruntime graph that
            takes the statistics as an input; it gets contiguous float32 tiles); the
            statistics pass still runs ``forward``.

    Returns:
        (3, H, W) uint8 on the CPU.
    """
    _, h, w = image.shape
    if plan.samples > 0:
        stats = sampled_stats(model, forward, image, plan, multiple, dtype, device, memory_format)
    else:
        stats = _whole_image_stats(model, forward, image, plan, multiple, dtype, device, memory_format)
    norms = whole_image_layers(model)
    out = torch.empty((3, h, w), dtype=torch.uint8)
    run_tile: Forward = forward
    if fixed_forward is not None:
        # The graph's flat (S,) input: every layer's statistics in module order (stats_size).
        table = flat_stats(stats)
        memory_format = torch.contiguous_format
        fixed = fixed_forward
        run_tile = lambda x: fixed(x.float(), table)  # noqa: E731
    try:
        if fixed_forward is None:
            for n, st in zip(norms, stats, strict=True):
                _freeze(n, st)
        ov = plan.overlap
        # Every tile window has the same size (edge windows slide inwards, so their kept part
        # has more context, never less): one shape lets the allocator reuse the same blocks
        # for every tile; tiles of changing shapes made onnxruntime's arena grow by ~30 %.
        sh, sw = min(plan.tile + 2 * ov, h), min(plan.tile + 2 * ov, w)
        for y0 in range(0, h, plan.tile):
            for x0 in range(0, w, plan.tile):
                y1, x1 = min(y0 + plan.tile, h), min(x0 + plan.tile, w)
                ty0, tx0 = max(0, min(y0 - ov, h - sh)), max(0, min(x0 - ov, w - sw))
                ty1, tx1 = ty0 + sh, tx0 + sw
                crop = image[:, ty0:ty1, tx0:tx1].unsqueeze(0)
                x = to_model_range(crop.to(device), dtype).contiguous(memory_format=memory_format)
                with torch.inference_mode():
                    y = run_tile(x)
                    piece = from_model_range(y[0, :, y0 - ty0 : y1 - ty0, x0 - tx0 : x1 - tx0]).cpu()
                out[:, y0:y1, x0:x1] = piece
                del x, y, piece
    finally:
        for n in norms:
            _freeze(n, None)
    return out


def _whole_image_stats(
    model: nn.Module, forward: Forward, image: torch.Tensor, plan: TilePlan, multiple: int,
    dtype: torch.dtype, device: torch.device, memory_format: torch.memory_format,
) -> list[Stats]:
    """Statistics from one pass over the whole image at (at most) ``plan.stats_side``."""
    _, h, w = image.shape
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
        return record_stats(model, forward, small)
