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

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from animecli.inference.result import BatchResult
from animecli.io.transforms import UInt8Array
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
    """The moving average of every norm layer's statistics, as a :attr:`FastGroupNorm.stats_hook`.

    Args:
        momentum: weight of the carried statistics, in [0, 1) (0 = every frame its own).
    """

    def __init__(self, momentum: float) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), not {momentum}")
        self.momentum = momentum
        self._state: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
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
        """Carry one layer's statistics through the batch.

        Args:
            norm: the layer (its identity keys the state).
            mean, var: (N, 1, 1, 1) float32 statistics just computed, one per frame.

        Returns:
            (mean, var) to normalise with, same shapes.
        """
        key = id(norm)
        first = self._seen.get(key, 0)
        n = int(mean.shape[0])
        # A tiled frame reaches each layer once per frame (batch of 1): count frames per layer.
        self._seen[key] = first + n
        prev = self._state.get(key)
        a = self.momentum
        means, variances = [], []
        for i in range(n):
            m, v = mean[i : i + 1], var[i : i + 1]
            cut = self._cuts[first + i] if first + i < len(self._cuts) else False
            if prev is not None and not cut and a > 0.0:
                pm, pv = prev
                # The mixture of the two distributions: average means and second moments.
                mixed = a * pm + (1.0 - a) * m
                second = a * (pv + pm * pm) + (1.0 - a) * (v + m * m)
                m, v = mixed, (second - mixed * mixed).clamp_min(0.0)
            prev = (m, v)
            means.append(m)
            variances.append(v)
        assert prev is not None  # n ≥ 1
        self._state[key] = prev
        if n == 1:
            return means[0], variances[0]
        return torch.cat(means), torch.cat(variances)


def fast_norms(model: nn.Module) -> list[FastGroupNorm]:
    """The model's :class:`FastGroupNorm` layers, in module order."""
    return [m for m in model.modules() if isinstance(m, FastGroupNorm)]


class TemporalRunner:
    """Runs frames through an eager PyTorch engine with norm statistics carried across frames.

    Args:
        engine: a PyTorch engine whose backend is ``eager`` (a traced or onnxruntime graph
            computes its statistics inside and cannot carry them).
        momentum: see :class:`StatsCarry`.

    Raises:
        ValueError: the engine is not eager, or its model has no fast norms to carry.
    """

    def __init__(self, engine: Engine, momentum: float) -> None:
        if engine.backend.value != "eager":
            raise ValueError(f"--temporal needs the eager backend, not {engine.backend.value}")
        self.engine = engine
        self.carry = StatsCarry(momentum)
        self.norms = fast_norms(engine.model)
        if not self.norms:
            raise ValueError("the model has no whole-image norms to carry")
        self.cuts = CutDetector()

    def __enter__(self) -> TemporalRunner:
        for n in self.norms:
            n.stats_hook = self.carry
        return self

    def __exit__(self, *exc: object) -> None:
        for n in self.norms:
            n.stats_hook = None
        self.carry.reset()

    def run_batch(self, batch: Sequence[UInt8Array]) -> BatchResult:
        """Stylise consecutive frames of one size (see :meth:`animecli.inference.torch_engine.Engine.run_batch`)."""
        self.carry.begin([self.cuts.is_cut(f) for f in batch])
        return self.engine.run_batch(batch)

    def new_video(self) -> None:
        """Start afresh: nothing is carried into the next video."""
        self.carry.reset()
        self.cuts = CutDetector()
