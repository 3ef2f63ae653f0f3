"""AnimeGANv3 in stages: the upper levels run in bands of rows, with exact whole-image norms.

Every conv of AnimeGANv3 is followed by :class:`~animecli.models.animeganv3.LADE`, whose
statistics are taken over the whole image, so no layer can finish before the whole map under
it exists; run as one graph, onnxruntime keeps ~860 B per input pixel of full-resolution maps
alive (docs/speed.md, issue 23). Here the generator is cut at its norms into stages
(:data:`V3_PLAN`): each stage takes the *pre-norm* output of earlier convs, applies their norm
as a per-channel scale and shift (from the whole image's moments, gathered band by band) and
LeakyReLU, adds skips, upsamples where the network does, and runs one conv, on bands of rows
with the context its kernel needs (reflected at the image's edges, as the network's own pads).
It returns the conv's pre-norm output band and that band's moments (of the output and of the
norm's projection), which combine exactly into the whole image's
(:func:`combine_moments`). Only the stored maps between stages (float16: 2 bytes per channel)
and one band's work are alive; the 1/8 level (the attention) runs whole. The tiny generator
(:data:`TINY_PLAN`) has one LADE only; its levels of 1/4 and below run whole.

This module is torch-free (numpy and onnxruntime sessions); the stage graphs are exported
by :func:`animecli.inference.backends.onnx_export.export_onnx_staged`. It never prints and
never exits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import numpy.typing as npt

from animecli.models.spec import Arch, ArchSpec, has_staged_graphs

__all__ = [
    "EPS_KEY",
    "STORE_DTYPE",
    "TINY_PLAN",
    "V3_PLAN",
    "MapPool",
    "Stage",
    "StageKind",
    "StagedGraph",
    "band_rows_for",
    "column_pad",
    "combine_moments",
    "gather_band",
    "map_slots",
    "plan_for",
    "run_staged",
    "source_rows",
]

Float32Array = npt.NDArray[np.float32]

# What the stored maps between stages are kept in. float16 halves the memory of float32; against
# the whole graph it measured 89.6 dB on a 1024×688 photo (largest difference 1e-3 in [-1, 1]).
STORE_DTYPE = np.float16
# Each banded stage runs on bands whose float32 work (the inputs, normalised, summed, padded;
# the conv output, its projection and their deviations) is about this many bytes. By bytes
# rather than pixels, the stages with little work per pixel (the 7×7 convs at either end) get
# larger bands. Smaller bands hold less in onnxruntime's arena but make more runs, each with a
# fixed cost per op (model-only, bands of a fixed 16 K pixels cost 15 % against 64 K); on the
# mixed folder (docs/speed.md) 24 MiB measured 0.96× the whole graph's images/s at a 414 MiB
# peak, 40 MiB 0.97× (1.02 and 0.92 in two rounds) at 415–430 MiB.
BAND_BYTES = 40 * 2**20
MIN_BAND_ROWS = 8
# The metadata entry of every stage graph that holds the model's LADE eps (read back by the
# torch-free engine, which has the cached graphs but not the model).
EPS_KEY = "animecli.lade_eps"


class StageKind(str, Enum):
    """How a stage's output rows map onto its input rows."""

    SAME = "same"  # stride-1 conv at the input's resolution; ``halo`` rows of context each side
    DOWN = "down"  # 3×3 stride-2 conv padded on top only: output row j reads rows 2j-1 … 2j+1
    UP = "up"  # ×2 asymmetric bilinear upsampling, then a 3×3 conv (run as 4 phase convs on the source)
    WHOLE = "whole"  # runs on the whole map (V3: the 1/8 level, whose attention's softmax is global)


@dataclass(frozen=True)
class Stage:
    """One graph of a staged generator.

    Attributes:
        name: the graph's name (a cache file's suffix).
        inputs: (map, raw) pairs, summed: a raw map is used as it is (the network input, a
            whole stage's output); any other is a stored conv output before its norm and
            activation, normalised with its whole-image moments (if its stage is ``normed``)
            and passed through LeakyReLU first.
        kind: how output rows depend on input rows.
        output: the name of the map it produces.
        halo: rows of context above and below (``SAME``: the kernel's half-size).
        final: the last stage: outputs the image (tanh), no moments.
        recompute: inputs this stage computes again from the network input instead of reading
            them stored (their own stage's conv, which must read ``x``): the graph is fed the
            rows of ``x`` they need and the order of their rows (edges reflected).
        normed: its conv is followed by a LADE: the graph also returns the band's moments and
            readers normalise the map; ``False`` (the tiny generator's norm-free convs): no
            moments, readers apply LeakyReLU only.
    """

    name: str
    inputs: tuple[tuple[str, bool], ...]
    kind: StageKind
    output: str
    halo: int = 0
    final: bool = False
    recompute: tuple[str, ...] = ()
    normed: bool = True

    def reads(self) -> tuple[str, ...]:
        """The stored maps this stage reads (a recomputed input reads ``x``)."""
        return tuple("x" if name in self.recompute else name for name, _ in self.inputs)


_SAME, _DOWN, _UP, _WHOLE = StageKind.SAME, StageKind.DOWN, StageKind.UP, StageKind.WHOLE

# :class:`~animecli.models.animeganv3.AnimeGANv3Generator` (any widths): ``eN``/``dN`` are the
# outputs of the encoder's/decoder's N-th conv before its LADE; ``x`` the input; ``a8`` the
# attention's output (1/8). The skips (s1 = e0, s2 = e2, s4 = e4) are added in front of the
# decoder convs that follow them, as in the network. The full-resolution skip e0 is computed
# again from x for d5 rather than stored from the first stage to the last: its 7×7 conv from 3
# channels costs ~7 % of the model's time, its map 64 MiB per megapixel (float16) that would be
# alive beside d4 and d5 (issue 23: the mixed folder's peak, 476 → 4xx MiB).
V3_PLAN: tuple[Stage, ...] = (
    Stage("e0", (("x", True),), _SAME, "e0", 3),
    Stage("e1", (("e0", False),), _DOWN, "e1"),
    Stage("e2", (("e1", False),), _SAME, "e2", 1),
    Stage("e3", (("e2", False),), _DOWN, "e3"),
    Stage("e4", (("e3", False),), _SAME, "e4", 1),
    Stage("e5", (("e4", False),), _DOWN, "e5"),
    Stage("attention", (("e5", False),), _WHOLE, "a8"),
    Stage("d0", (("a8", True),), _UP, "d0"),
    Stage("d1", (("d0", False), ("e4", False)), _SAME, "d1", 1),
    Stage("d2", (("d1", False),), _UP, "d2"),
    Stage("d3", (("d2", False), ("e2", False)), _SAME, "d3", 1),
    Stage("d4", (("d3", False),), _UP, "d4"),
    Stage("d5", (("d4", False), ("e0", False)), _SAME, "d5", 1, recompute=("e0",)),
    Stage("out", (("d5", False),), _SAME, "y", 3, final=True),
)

# :class:`~animecli.models.animeganv3.AnimeGANv3TinyGenerator` (tiny_Cute and its pruned
# students): no norms but the LADE on the last decoder conv, so every other stage stores its
# conv's output before the LeakyReLU and returns no moments. The levels of 1/4 and below run
# as one whole graph ("low": e4 … e8, the residual blocks, d0 … d5 with their skips, ending in
# d5's activation): their maps are 1/16 of the pixels or fewer, and the LADE is not among them.
# e0 is stored (not recomputed as in V3_PLAN): its 7×7 conv from 3 channels is ~36 % of the
# release's work (2.4 of 6.5 kMAC per pixel), its float16 map 32 B per pixel.
TINY_PLAN: tuple[Stage, ...] = (
    Stage("e0", (("x", True),), _SAME, "e0", 3, normed=False),
    Stage("e1", (("e0", False),), _DOWN, "e1", normed=False),
    Stage("e2", (("e1", False),), _SAME, "e2", 1, normed=False),
    Stage("e3", (("e2", False),), _DOWN, "e3", normed=False),
    Stage("low", (("e3", False),), _WHOLE, "a4"),
    Stage("d6", (("a4", True),), _UP, "d6", normed=False),
    Stage("d7", (("d6", False), ("e2", False)), _SAME, "d7", 1, normed=False),
    Stage("d8", (("d7", False),), _SAME, "d8", 1, normed=False),
    Stage("d9", (("d8", False),), _UP, "d9", normed=False),
    Stage("d10", (("d9", False), ("e0", False)), _SAME, "d10", 1),
    Stage("out", (("d10", False),), _SAME, "y", 3, final=True),
)


def plan_for(spec: ArchSpec) -> tuple[Stage, ...] | None:
    """The stage plan of an architecture whose ONNX export comes in stages, else ``None``
    (:func:`animecli.models.spec.has_staged_graphs` says which)."""
    if not has_staged_graphs(spec):
        return None
    return TINY_PLAN if spec.arch is Arch.V3_TINY else V3_PLAN


@dataclass(frozen=True)
class StagedGraph:
    """The stage graphs of one generator (:func:`~animecli.inference.backends.onnx_export.export_onnx_staged`).

    Attributes:
        graphs: stage name → ONNX bytes, one per stage of ``plan``.
        eps: the model's LADE eps (0 or less: a flat channel gets scale 0, as in the model);
            ``None``: read from the graphs' metadata (:data:`EPS_KEY`), which the export writes.
        plan: the stages, in order.
    """

    graphs: Mapping[str, bytes]
    eps: float | None
    plan: tuple[Stage, ...] = V3_PLAN


def source_rows(kind: StageKind, top: int, bottom: int, height: int, halo: int = 0) -> npt.NDArray[np.intp]:
    """The input rows a band of output rows ``[top, bottom)`` reads, edges handled as the network's pads.

    Args:
        kind: the stage's kind (not ``WHOLE``).
        top, bottom: the band's output rows (``UP``: both even).
        height: the input map's height.
        halo: ``SAME``'s rows of context.

    Returns:
        Row indices into the input map, in order: reflected at both edges (``SAME``, ``DOWN``'s
        top row); for ``UP``, one input row above and below the band's, the one above the top
        reflected and the one below the bottom repeated — what the upsampling of that slice,
        less its first and last rows, needs to give the upsampled map's reflect-padded rows
        ``top - 1 … bottom`` (the graph folds the upsampling into its conv instead:
        ``onnx_export._phase_conv``; same rows).
    """
    if kind is StageKind.SAME:
        rows = np.arange(top - halo, bottom + halo)
    elif kind is StageKind.DOWN:
        rows = np.arange(2 * top - 1, 2 * bottom)
    elif kind is StageKind.UP:
        rows = np.arange(top // 2 - 1, bottom // 2 + 1)
        rows = np.where(rows < 0, 1, np.minimum(rows, height - 1))
        return rows.astype(np.intp)
    else:
        raise ValueError("a whole stage has no bands")
    rows = np.abs(rows)
    return np.where(rows >= height, 2 * (height - 1) - rows, rows).astype(np.intp)


def column_pad(stage: Stage) -> tuple[int, int]:
    """The reflected columns (left, right) that the caller adds to a band's stored and raw inputs.

    A stride-1 conv needs its kernel's half-size each side, the stride-2 one of ``DOWN`` one
    column on the left (as the network pads); ``UP`` one source column each side, the right
    one repeated rather than reflected (:func:`gather_band`'s ``repeat_right``; see
    :func:`source_rows` for its rows). A recomputed input comes with its own stage's padding
    (:func:`column_pad` of that stage).
    """
    if stage.kind is StageKind.SAME:
        return stage.halo, stage.halo
    return {StageKind.DOWN: (1, 0), StageKind.UP: (1, 1)}.get(stage.kind, (0, 0))


def gather_band(m: npt.NDArray[Any], rows: npt.NDArray[np.intp], left: int, right: int,
                repeat_right: bool = False) -> npt.NDArray[Any]:
    """Rows ``rows`` of the (1, C, H, W) map ``m``, reflect-padded by ``left``/``right`` columns
    (``repeat_right``: the right ones repeat the last column): one copy.

    Returns:
        (1, C, len(rows), W + left + right), ``m``'s dtype, C-contiguous.
    """
    if not left and not right:
        # np.take: a contiguous copy of the rows, ~6× faster than fancy indexing
        return np.take(m, rows, axis=2)
    width = int(m.shape[3])
    out = np.empty((*m.shape[:2], len(rows), width + left + right), m.dtype)
    inner = out[:, :, :, left : left + width]
    first, count = int(rows[0]), len(rows)
    if int(rows[-1]) - first == count - 1 and bool(np.all(np.diff(rows) == 1)):
        inner[...] = m[:, :, first : first + count]  # an inner band: a plain strided copy, fastest
    else:
        np.take(m, rows, axis=2, out=inner, mode="clip")  # "clip": no buffering (rows are in range)
    for k in range(1, left + 1):
        out[:, :, :, left - k] = out[:, :, :, left + k]
    for k in range(1, right + 1):
        out[:, :, :, left + width - 1 + k] = out[:, :, :, left + width - 1 - (0 if repeat_right else k)]
    return out


def band_rows_for(kind: StageKind, in_channels: int, out_channels: int, out_width: int, band_bytes: int = 0) -> int:
    """Output rows per band: float32 work of about ``band_bytes`` (default :data:`BAND_BYTES`),
    even (``UP`` needs even band edges), at least :data:`MIN_BAND_ROWS`.

    Args:
        kind: the stage's kind.
        in_channels: the channels of its inputs, summed over inputs.
        out_channels: its conv's output channels.
        out_width: the output's width.
        band_bytes: the work per band.
    """
    # Per output pixel: three copies of the input (cast, normalised, padded; ×4 pixels for a
    # stride-2 conv) and four of the output (conv, projection, their deviations), float32.
    per_pixel = 4 * (3 * in_channels * (4 if kind is StageKind.DOWN else 1) + 4 * out_channels)
    rows = (band_bytes or BAND_BYTES) // max(1, per_pixel * out_width)
    return max(MIN_BAND_ROWS, rows // 2 * 2)


def combine_moments(parts: Sequence[tuple[npt.NDArray[Any], int]], eps: float) -> tuple[Float32Array, Float32Array]:
    """The whole image's LADE as a per-channel scale and shift, from its bands' moments.

    Args:
        parts: per band, its (4, C) moments — mean and sum of squared deviations (about that
            mean) of the conv output x, then of its projection t — and its pixel count.
        eps: the LADE eps (0 or less: a flat channel of x gets scale 0, as
            :func:`~animecli.models.animeganv3.lade_apply`).

    Returns:
        (scale, shift), each (1, C, 1, 1) float32: LADE(x) = x · scale + shift.
    """
    total = sum(n for _, n in parts)
    means: list[npt.NDArray[np.float64]] = []
    variances: list[npt.NDArray[np.float64]] = []
    for k in (0, 2):
        # Chan et al.'s pairwise combination, in float64: exact up to rounding, however many bands.
        mean = sum(np.asarray(m[k], np.float64) * n for m, n in parts) / total
        m2 = sum(np.asarray(m[k + 1], np.float64) + n * (np.asarray(m[k], np.float64) - mean) ** 2
                 for m, n in parts)
        means.append(np.asarray(mean))
        variances.append(np.asarray(m2) / total)
    (mean_x, mean_t), (var_x, var_t) = means, variances
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.sqrt(var_t + eps) / np.sqrt(var_x + eps)
    if eps <= 0:
        scale = np.where(var_x > 0, scale, 0.0)
    shift = mean_t - mean_x * scale
    return (scale.astype(np.float32).reshape(1, -1, 1, 1), shift.astype(np.float32).reshape(1, -1, 1, 1))


def map_slots(plan: Sequence[Stage]) -> dict[str, int]:
    """A memory slot for every map that stages store: maps whose lifetimes do not overlap share one.

    A map lives from the stage that writes it to the last stage that reads it (while a stage
    runs, its inputs and its output are alive together). Greedy, in plan order, each map takes
    the lowest slot free at its birth: for :data:`V3_PLAN`, 4 slots for 13 maps.
    """
    last_use = {name: i for i, stage in enumerate(plan) for name in stage.reads()}
    busy_until: list[int] = []  # per slot, the last stage its current map is read by
    slots: dict[str, int] = {}
    for i, stage in enumerate(plan):
        if stage.final:
            continue
        free = [k for k, until in enumerate(busy_until) if until < i]
        slot = free[0] if free else len(busy_until)
        if slot == len(busy_until):
            busy_until.append(0)
        busy_until[slot] = last_use.get(stage.output, i)
        slots[stage.output] = slot
    return slots


def _out_channels(session: Any) -> int:
    """The channels of a stage graph's first output (static in the export)."""
    dim = session.get_outputs()[0].shape[1]
    return dim if isinstance(dim, int) else 64


class MapPool:
    """Memory for the maps between stages, kept from one image to the next.

    A fresh array for each map cost a page fault per 4 KiB every image (large arrays are
    mmapped, and freed ones go back to the OS): ~0.7 s of a 2-s 1024×688 image on the 2-core VM
    of docs/speed.md. Each slot of :func:`map_slots` keeps one buffer, grown to the largest map
    it held, so the pool holds at most what the maps alive at once need, per slot at its largest.
    """

    def __init__(self) -> None:
        self._buffers: dict[int, npt.NDArray[np.uint8]] = {}

    def array(self, slot: int, shape: tuple[int, ...], dtype: Any) -> npt.NDArray[Any]:
        """An uninitialised C-contiguous array in ``slot`` (valid until the slot is asked for again)."""
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        buf = self._buffers.get(slot)
        if buf is None or buf.size < nbytes:
            self._buffers.pop(slot, None)  # freed before the larger one is made
            buf = self._buffers[slot] = np.empty(nbytes, np.uint8)
        view: npt.NDArray[Any] = buf[:nbytes].view(dtype).reshape(shape)
        return view

    def clear(self) -> None:
        """Drop every buffer (after an outlier image: its maps need not stay resident)."""
        self._buffers.clear()

    @property
    def resident_bytes(self) -> int:
        """Bytes held."""
        return sum(b.size for b in self._buffers.values())


def run_staged(sessions: Mapping[str, Any], graph: StagedGraph, x: Float32Array, band_bytes: int = 0,
               last_run_options: Any = None, pool: MapPool | None = None) -> Float32Array:
    """One image through the stage graphs.

    Args:
        sessions: stage name → onnxruntime session over that stage's graph.
        graph: the plan and eps.
        x: (1, 3, H, W) float32 C-contiguous in [-1, 1]; H, W multiples of 8.
        band_bytes: work per band (0: :data:`BAND_BYTES`; the tests force many bands).
        last_run_options: onnxruntime run options for the last run (the arena's shrink request).
        pool: where the maps between stages live (``None``: a new pool, freed on return).

    Returns:
        (1, 3, H, W) float32 in [-1, 1].
    """
    plan, eps = graph.plan, graph.eps
    if eps is None:
        raise ValueError("the staged graph's eps is not known (OrtSession reads it from the graphs)")
    last_use = {name: i for i, stage in enumerate(plan) for name in stage.reads()}
    producers = {stage.output: stage for stage in plan}
    pool = pool if pool is not None else MapPool()
    slots = map_slots(plan)
    maps: dict[str, npt.NDArray[Any]] = {"x": x}
    norms: dict[str, tuple[Float32Array, Float32Array]] = {}
    for i, stage in enumerate(plan):
        feeds: dict[str, npt.NDArray[Any]] = {}
        for j, (name, raw) in enumerate(stage.inputs):
            if not raw and producers[name].normed:
                feeds[f"scale{j}"], feeds[f"shift{j}"] = norms[name]
        session = sessions[stage.name]
        source = maps[stage.inputs[0][0]]
        height, width = int(source.shape[2]), int(source.shape[3])
        options = last_run_options if i == len(plan) - 1 else None
        if stage.kind is StageKind.WHOLE:
            feeds["map0"] = source
            (maps[stage.output],) = session.run(["output"], feeds)
        else:
            out_h, out_w = {StageKind.SAME: (height, width), StageKind.DOWN: (height // 2, width // 2),
                            StageKind.UP: (2 * height, 2 * width)}[stage.kind]
            in_channels = sum(_out_channels(sessions[producers[name].name]) if name in stage.recompute
                              else int(maps[name].shape[1]) for name, _ in stage.inputs)
            rows = band_rows_for(stage.kind, in_channels, _out_channels(session), out_w, band_bytes)
            moments = stage.normed and not stage.final
            names = ["output", "moments"] if moments else ["output"]
            result: npt.NDArray[Any] | None = None
            parts: list[tuple[npt.NDArray[Any], int]] = []
            for top in range(0, out_h, rows):
                bottom = min(out_h, top + rows)
                index = source_rows(stage.kind, top, bottom, height, stage.halo)
                for j, (name, _) in enumerate(stage.inputs):
                    if name in stage.recompute:
                        # The rows of x that its conv needs for the rows of it this band reads,
                        # and where each of those rows is in what the graph computes from them.
                        lo, hi = int(index.min()), int(index.max()) + 1
                        producer = producers[name]
                        x_rows = source_rows(producer.kind, lo, hi, height, producer.halo)
                        feeds[f"map{j}"] = gather_band(maps["x"], x_rows, *column_pad(producer))
                        feeds[f"index{j}"] = (index - lo).astype(np.int64)
                    else:
                        feeds[f"map{j}"] = gather_band(maps[name], index, *column_pad(stage),
                                                       repeat_right=stage.kind is StageKind.UP)
                outs = session.run(names, feeds, options if bottom >= out_h else None)
                if result is None:
                    shape = (1, int(outs[0].shape[1]), out_h, out_w)  # UP: (4, C, …), C as well
                    # The image is the caller's to keep; the maps live in the pool's slots.
                    dtype = outs[0].dtype
                    result = np.empty(shape, dtype) if stage.final else pool.array(slots[stage.output], shape, dtype)
                if stage.kind is StageKind.UP:
                    # the 4 phases (row parity, column parity) of the band, interleaved
                    for phase, part in enumerate(outs[0]):
                        result[0, :, top + phase // 2 : bottom : 2, phase % 2 :: 2] = part
                else:
                    result[:, :, top:bottom] = outs[0]
                if moments:
                    parts.append((outs[1], (bottom - top) * out_w))
                del outs
            assert result is not None
            maps[stage.output] = result
            if moments:
                norms[stage.output] = combine_moments(parts, eps)
        for name in stage.reads():
            if last_use[name] == i and name != "x" and name in maps:
                del maps[name]  # its slot is taken by a later map (map_slots)
    y: Float32Array = maps["y"]
    return y
