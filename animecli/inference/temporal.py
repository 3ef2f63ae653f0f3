"""Temporal stability for video: norm statistics carried across frames.

Every whole-image norm of the generators normalises a frame with that frame's own
mean and variance. In a video those move with the content from one frame to the
next (a bright object entering, a pan), so the colours and line density of every
frame shift a little and the output pulses. Here each norm layer's statistics are
an exponential moving average over the frames of one shot: the statistics the
layer computes for frame *t* are mixed with those it used for frame *t − 1*
(as a mixture of the two distributions: means and second moments are averaged),
and a scene cut starts the average again, so a new shot gets its own look at once.

The tiling machinery (:mod:`animecli.inference.tiling`) freezes norm statistics the same
way; the carried statistics go through :attr:`FastGroupNorm.stats_hook`, which is
applied before a tiled image's statistics pass records them, so a tiled frame is
carried too. Frames of one batch are carried in order (a scan over the batch),
so ``--batch-size`` does not change the result.

Torch is needed (the statistics live in the eager modules); the scene-cut
detector is numpy only.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from animecli.inference.result import BatchResult, failure_reason, release_host_memory
from animecli.inference.tiling import whole_image_layers
from animecli.io.transforms import UInt8Array
from animecli.models.animeganv3 import mix_stats
from animecli.models.norm import FastGroupNorm

if TYPE_CHECKING:
    from animecli.inference.torch_engine import Engine

# Histogram distance (half the L1 distance of per-channel 16-bin histograms, in [0, 1]) above
# which two consecutive frames are a cut. Pans and zooms of one photo measured 0.01–0.12 on the
# val photos (bench/flicker.py); cuts between two of them 0.2–0.9.
CUT_THRESHOLD = 0.2
_BINS = 16



def frame_histogram(rgb: UInt8Array) -> np.ndarray:
    """Per-channel 16-bin histograms of a frame (sampled on a ~64-row grid), each summing to 1.

    Args:
        rgb: (H, W, 3) uint8 frame.

    Returns:
        (3, 16) float64.
    """
    step = max(1, min(int(rgb.shape[0]), int(rgb.shape[1])) // 64)
    small = rgb[::step, ::step].reshape(-1, 3)
    hist = np.stack([np.bincount(small[:, c] // (256 // _BINS), minlength=_BINS) for c in range(3)])
    return hist / max(1, small.shape[0])


class CutDetector:
    """Tells scene cuts from motion by how much the colour histogram jumps between frames."""

    def __init__(self, threshold: float = CUT_THRESHOLD) -> None:
        self.threshold = threshold
        self._last: np.ndarray | None = None

    def distance(self, rgb: UInt8Array) -> float:
        """Histogram distance in [0, 1] to the previous frame given (1.0 for the first)."""
        hist = frame_histogram(rgb)
        last, self._last = self._last, hist
        if last is None:
            return 1.0
        return float(np.abs(hist - last).sum(axis=1).mean() / 2)

    def is_cut(self, rgb: UInt8Array) -> bool:
        """Whether this frame starts a new shot (the first frame always does)."""
        return self.distance(rgb) > self.threshold


class StatsCarry:
    """The moving average of every whole-image layer's statistics, across the frames of a shot.

    One object serves both kinds of layer: called as a :attr:`FastGroupNorm.stats_hook`
    (``(norm, mean, var)``), and through :meth:`frozen` as the ``stats_hook`` of AnimeGANv3's
    :class:`~animecli.models.animeganv3.LADE` and attention (a tuple of statistics, mixed by
    :func:`~animecli.models.animeganv3.mix_stats`).

    Args:
        momentum: weight of the carried statistics, in [0, 1) (0 = every frame its own).
    """

    def __init__(self, momentum: float) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), not {momentum}")
        self.momentum = momentum
        self._state: dict[int, tuple[torch.Tensor, ...]] = {}
        self._cuts: list[bool] = []
        self._seen: dict[int, int] = {}

    def begin(self, cuts: Sequence[bool]) -> None:
        """Announce the next batch: per frame, whether it starts a new shot."""
        self._cuts = list(cuts)
        self._seen = {}

    def reset(self) -> None:
        """Forget all carried statistics (a new video)."""
        self._state.clear()

    def __call__(self, norm: FastGroupNorm, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Carry one :class:`FastGroupNorm`'s statistics through the batch.

        Args:
            norm: the layer (its identity keys the state).
            mean, var: (N, 1, 1, 1) float32 statistics just computed, one per frame.

        Returns:
            (mean, var) to normalise with, same shapes.
        """
        mean, var = self.frozen(norm, (mean, var))
        return mean, var

    def frozen(self, layer: nn.Module, stats: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Carry any whole-image layer's statistics through the batch, mixed by
        :func:`~animecli.models.animeganv3.mix_stats`: a LADE's (μx, σx², μt, σt²) or an
        attention's (log-mean-exp,), each (N, ·, 1[, 1]); a group norm's (mean, var)."""
        key = id(layer)
        first = self._seen.get(key, 0)
        n = int(stats[0].shape[0])
        # A tiled frame reaches each layer once per frame (batch of 1): count frames per layer.
        self._seen[key] = first + n
        prev = self._state.get(key)
        a = self.momentum
        frames: list[tuple[torch.Tensor, ...]] = []
        for i in range(n):
            cur = tuple(t[i : i + 1] for t in stats)
            cut = self._cuts[first + i] if first + i < len(self._cuts) else False
            if prev is not None and not cut and a > 0.0:
                cur = mix_stats(layer, prev, cur, a)
            prev = cur
            frames.append(cur)
        assert prev is not None  # n ≥ 1
        self._state[key] = prev
        if n == 1:
            return frames[0]
        return tuple(torch.cat([f[k] for f in frames]) for k in range(len(stats)))


class TemporalRunner:
    """Runs frames through a PyTorch engine with whole-image statistics carried across frames.

    Two ways, with the same arithmetic (:func:`~animecli.models.norm.mix_moments` and
    :func:`~animecli.models.animeganv3.mix_log_mean_exp`): onnxruntime's video graph (the
    engine's :meth:`~animecli.inference.torch_engine.Engine.run_carried`, a frame at a time,
    the statistics passed from one call to the next), or hooks on the eager modules.

    Args:
        engine: a PyTorch engine with a video graph (``onnx`` backend) or the ``eager``
            backend (a traced or int8 graph computes its statistics inside and cannot carry them).
        momentum: see :class:`StatsCarry`.

    Raises:
        ValueError: neither, or the model has no whole-image layers to carry.
    """

    def __init__(self, engine: Engine, momentum: float) -> None:
        self.graph = engine.can_carry
        if not self.graph and engine.backend.value != "eager":
            raise ValueError(f"--temporal needs the onnx or eager backend, not {engine.backend.value}")
        self.engine = engine
        self.carry = StatsCarry(momentum)
        self.layers = whole_image_layers(engine.model)
        if not self.layers:
            raise ValueError("the model has no whole-image norms to carry")
        self.cuts = CutDetector()
        self._stats: torch.Tensor | None = None  # the video graph's: what the last frame used

    def __enter__(self) -> TemporalRunner:
        if not self.graph:
            for layer in self.layers:
                if isinstance(layer, FastGroupNorm):
                    layer.stats_hook = self.carry
                else:
                    layer.stats_hook = self.carry.frozen
        return self

    def __exit__(self, *exc: object) -> None:
        for layer in self.layers:
            layer.stats_hook = None
        self.new_video()

    def run_batch(self, batch: Sequence[UInt8Array]) -> BatchResult:
        """Stylise consecutive frames of one size (see :meth:`animecli.inference.torch_engine.Engine.run_batch`)."""
        cuts = [self.cuts.is_cut(f) for f in batch]
        if not self.graph:
            self.carry.begin(cuts)
            return self.engine.run_batch(batch)
        h, w = int(batch[0].shape[0]), int(batch[0].shape[1])
        if self.engine.tile_plan_for(h, w) is not None:
            # Frames too large to run whole run tiled, each with its own statistics.
            self._stats = None
            result = self.engine.run_batch(batch)
            return BatchResult(result.images, result.errors, result.infer_ms, result.gpu_peak_mb,
                               "tiled: statistics not carried")
        t0 = time.perf_counter()
        images: list[UInt8Array | None] = []
        errors: list[str | None] = []
        for frame, cut in zip(batch, cuts, strict=True):
            try:
                out, self._stats = self.engine.run_carried(frame, None if cut else self._stats, self.carry.momentum)
            except Exception as exc:  # one frame's failure is reported like run_batch's
                self._stats = None
                images.append(None)
                errors.append(failure_reason(exc))
                continue
            images.append(out)
            errors.append(None)
        release_host_memory()
        return BatchResult(images, errors, (time.perf_counter() - t0) * 1000.0, 0.0, "")

    def new_video(self) -> None:
        """Start afresh: nothing is carried into the next video."""
        self.carry.reset()
        self.cuts = CutDetector()
        self._stats = None
