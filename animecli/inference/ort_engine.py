"""The torch-free CPU engine: a cached ONNX graph run by onnxruntime on numpy arrays.

Importing torch costs 220–280 MB of resident memory before a single image is
read (docs/speed.md), more than the default model's activations at 1024 px. On a
CPU, once the model's float32 graph has been exported (the first run does it, with
torch), every later run of the default ``onnx`` backend needs only onnxruntime,
numpy and Pillow: :func:`plan_lean` says whether this run can go that way, and
:class:`OrtEngine` runs it with the same padding, model range and rounding as the
PyTorch engine's ``onnx`` backend (tests compare the outputs pixel for pixel).

What it cannot do, it hands to the PyTorch engine, built on first need: an image
large enough to be tiled (tiling freezes norm statistics from an eager pass).
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from animecli.inference import graph_cache
from animecli.inference.device import read_device
from animecli.inference.memory import memory_budget, needs_tiling
from animecli.inference.ort_session import OrtSession, SplitGraph, cache_key, compiled_paths, nonempty_file
from animecli.inference.result import BatchResult, failure_reason, release_host_memory
from animecli.inference.staged import StagedGraph, plan_for
from animecli.io.transforms import UInt8Array, pad_array
from animecli.models.spec import ArchSpec, activation_bytes_per_pixel, has_local_decoder
from animecli.options import Backend, EngineOptions, ModelChoice, Precision
from animecli.weights.manifest import Manifest
from animecli.weights.resolve import WeightsFile, resolve_file

# Set to 0 to always use the PyTorch engine (for side-by-side measurements and as an escape hatch).
LEAN_ENV = "ANIMECLI_LEAN"


class BatchRunner(Protocol):
    """What the pipeline needs of an engine."""

    def run_batch(self, batch: Sequence[UInt8Array]) -> BatchResult:
        """Stylise (H, W, 3) uint8 images of one size; see :meth:`animecli.inference.torch_engine.Engine.run_batch`."""
        ...


@dataclass(frozen=True)
class LeanPlan:
    """A run that can go without torch.

    Attributes:
        weights: the model's file, found and checksummed.
        spec: its architecture.
        graph: the cached float32 ONNX graph of exactly these weights (with ``split``: not
            used, and not necessarily cached).
        split: for an architecture with a norm-free decoder, its cached encoder and
            decoder graphs (what runs instead of ``graph``); else ``None``.
        staged: for AnimeGANv3, its cached stage graphs in plan order (what runs instead of
            ``graph``); else ``None``.
    """

    weights: WeightsFile
    spec: ArchSpec
    graph: Path
    split: tuple[Path, Path] | None = None
    staged: tuple[Path, ...] | None = None


def discard(plan: LeanPlan) -> None:
    """Forget and delete the plan's cached graphs (onnxruntime refused them): the PyTorch engine
    makes them again, not from this process's copy in memory."""
    graph_cache.discard((plan.graph, *(plan.split or ()), *(plan.staged or ())))


def plan_lean(model: ModelChoice, opts: EngineOptions, manifest: Manifest | None = None) -> LeanPlan | None:
    """The torch-free plan for this run, or ``None`` when it needs the PyTorch engine.

    It applies to a named model (the manifest knows its architecture) on the CPU
    (``--device cpu``, or ``auto`` with a CPU-only torch), in float32, with the
    ``onnx`` backend (``auto`` picks it on CPU when onnxruntime is installed),
    without ``--compile``, once the graph for these weights is in the cache.

    Raises:
        WeightsError: the named model's file is missing or corrupt (the same error
            the PyTorch path would raise).
    """
    if os.environ.get(LEAN_ENV, "1") == "0" or model.weights is not None or opts.compile:
        return None
    if opts.precision not in (Precision.AUTO, Precision.FP32) or opts.backend not in (Backend.AUTO, Backend.ONNX):
        return None
    if not read_device(opts.device).surely_cpu():
        return None
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    found = resolve_file(model, manifest)
    if found.spec is None:
        return None
    paths = compiled_paths(found.sha256, cache_key(found.spec.key))
    stage_plan = plan_for(found.spec)
    if stage_plan is not None:
        files = tuple(paths.stage_file(stage.name) for stage in stage_plan)
        if not all(nonempty_file(f) for f in files):
            return None
        return LeanPlan(found, found.spec, paths.fp32, staged=files)
    if has_local_decoder(found.spec.arch):
        # An empty file (a disk that filled, say) is not a graph: the PyTorch path exports it again.
        if not (nonempty_file(paths.encoder) and nonempty_file(paths.decoder)):
            return None
        return LeanPlan(found, found.spec, paths.fp32, (paths.encoder, paths.decoder))
    return LeanPlan(found, found.spec, paths.fp32) if nonempty_file(paths.fp32) else None


class OrtEngine:
    """Runs a generator's cached ONNX graph on numpy arrays; the torch-free twin of the
    PyTorch engine's ``onnx`` backend.

    Args:
        plan: what :func:`plan_lean` found.
        opts: threads, tiling and memory budget (device, precision and backend are
            already settled: CPU, float32, onnx).
        fallback: builds the PyTorch engine, for images that must be tiled.
    """

    device = "cpu"
    backend = Backend.ONNX
    precision_name = "float32"

    def __init__(self, plan: LeanPlan, opts: EngineOptions, fallback: Callable[[], BatchRunner]) -> None:
        self.plan = plan
        self.opts = opts
        self.multiple = plan.weights.input_multiple
        graph: bytes | SplitGraph | StagedGraph
        stage_plan = plan_for(plan.spec)
        if plan.staged is not None and stage_plan is not None:
            files = zip(stage_plan, plan.staged, strict=True)
            graph = StagedGraph({stage.name: f.read_bytes() for stage, f in files}, None, stage_plan)
        elif plan.split is not None:
            graph = SplitGraph(plan.split[0].read_bytes(), plan.split[1].read_bytes())
        else:
            graph = plan.graph.read_bytes()
        self.session = OrtSession(graph, Backend.ONNX, opts.threads)
        self._fallback_factory = fallback
        self._fallback: BatchRunner | None = None
        self.budget = memory_budget(opts.max_memory_mb)  # on the CPU

    def needs_tiling(self, height: int, width: int) -> bool:
        """Whether the PyTorch engine would tile an image of this size (the same rule)."""
        graph = "onnx-split" if self.session.split else "onnx-staged" if self.session.staged else "onnx"
        bpp = activation_bytes_per_pixel(self.plan.spec.arch.value, graph=graph)
        return needs_tiling(height, width, self.opts.tile, self.budget, bpp)

    def _torch_engine(self) -> BatchRunner:
        if self._fallback is None:
            self._fallback = self._fallback_factory()
        return self._fallback

    def _run(self, batch: Sequence[UInt8Array]) -> list[UInt8Array]:
        h, w = int(batch[0].shape[0]), int(batch[0].shape[1])
        # Padded in uint8 (reflection copies values, so this equals padding the float input),
        # then NHWC → NCHW float32 in [-1, 1]: the same operations, in the same order and
        # precision, as the PyTorch engine's to_model_range.
        x = np.stack([pad_array(a, self.multiple) for a in batch]).transpose(0, 3, 1, 2).astype(np.float32, order="C")
        x /= 127.5
        x -= 1.0
        y = self.session.run_array(x)
        del x
        out = y[:, :, :h, :w]
        out += 1.0
        out *= 127.5
        np.rint(out, out=out)  # round half to even, as torch.round
        np.clip(out, 0.0, 255.0, out=out)
        hwc = out.transpose(0, 2, 3, 1).astype(np.uint8, order="C")
        del y, out
        return list(hwc)

    def run_batch(self, batch: Sequence[UInt8Array]) -> BatchResult:
        """Stylise (H, W, 3) uint8 images of one size (see :meth:`animecli.inference.torch_engine.Engine.run_batch`)."""
        h, w = int(batch[0].shape[0]), int(batch[0].shape[1])
        if self.needs_tiling(h, w):
            return self._torch_engine().run_batch(batch)
        t0 = time.perf_counter()
        images: list[UInt8Array | None]
        errors: list[str | None]
        try:
            images, errors = list(self._run(batch)), [None] * len(batch)
        except Exception as exc:  # onnxruntime raises its own types; one batch's failure is reported, not fatal
            if len(batch) == 1:
                oom = isinstance(exc, MemoryError) or "allocat" in str(exc).lower()
                images, errors = [None], [
                    f"out of memory at {w}×{h}; lower --max-size or --max-memory (tiles), or free memory"
                    if oom else failure_reason(exc)]
            else:  # out of memory, say: each image alone may still fit, and only those that fail fail
                images, errors = [], []
                for one in batch:
                    result = self.run_batch([one])
                    images += result.images
                    errors += result.errors
        infer_ms = (time.perf_counter() - t0) * 1000.0
        release_host_memory()
        return BatchResult(images, errors, infer_ms, 0.0)
