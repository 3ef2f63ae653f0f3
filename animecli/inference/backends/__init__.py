"""Backends: which one a run uses (:func:`resolve_backend`) and the runner that executes it (:func:`make_runner`).

How the generator's forward pass is executed:

* ``eager``  — plain PyTorch, channels-last, :class:`~animecli.models.norm.FastGroupNorm`.
* ``traced`` — the same, TorchScript-traced and frozen, one graph per input shape.
* ``onnx``   — the generator exported once to ONNX (opset 17, dynamic N/H/W) and run by
  onnxruntime's CPU execution provider. Float32; matches eager to ~1e-5.
* ``int8``   — the ONNX graph with every convolution statically quantised (QDQ format:
  int8 per-channel weights, uint8 activations), calibrated once on real photos. It changes
  the output slightly (see ``docs/speed.md``), so it is never chosen automatically.
* ``auto``   — CUDA: eager. CPU, float32: ``onnx`` when onnxruntime is installed, else
  ``eager``. CPU, bfloat16: eager.

Exported and quantised graphs are cached in ``<cache dir>/compiled/`` (``$ANIMECLI_HOME``
or the platform cache folder), keyed by the SHA-256 of the weights, the architecture
and an export version, so export and calibration run once per model.

onnxruntime is an optional dependency (``pip install 'animecli[onnx]'``): without it,
asking for ``onnx`` or ``int8`` raises :class:`~animecli.errors.SetupError`.

Beside the choice and ``OrtRunner`` here: :mod:`.torch_runner` (eager, traced, compiled PyTorch),
:mod:`.onnx_export` (the graphs onnxruntime runs) and :mod:`.int8` (calibration, quantisation).

This package never prints and never exits.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from animecli.errors import GraphError, UsageError
from animecli.inference.backends.int8 import CALIBRATION_SIZE, calibration_images, calibration_key, quantize_int8
from animecli.inference.backends.onnx_export import (
    can_split,
    export_onnx,
    export_onnx_carry,
    export_onnx_split,
    export_onnx_staged,
    has_stats_graphs,
    stage_plan,
)
from animecli.inference.backends.torch_runner import TorchRunner
from animecli.inference.graph_cache import cached, discard
from animecli.inference.ort_session import (
    ONNX_HINT,
    GraphSource,
    OrtSession,
    SplitGraph,
    cache_key,
    compiled_paths,
    onnxruntime_available,
    require_onnxruntime,
)
from animecli.inference.staged import StagedGraph
from animecli.options import Backend

__all__ = [
    "BackendChoice",
    "OrtRunner",
    "Runner",
    "make_runner",
    "model_digest",
    "resolve_backend",
]


class Runner(Protocol):
    """A callable forward pass.

    Attributes:
        backend: the backend it implements.
        memory_format: the layout its input should have (channels-last for PyTorch,
            contiguous NCHW for onnxruntime).
    """

    backend: Backend
    memory_format: torch.memory_format

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float in [-1, 1] → (N, 3, H, W) float in [-1, 1]."""
        ...


@dataclass(frozen=True)
class BackendChoice:
    """The backend a run uses, and why.

    Attributes:
        backend: the resolved backend (never ``auto``).
        reason: one line explaining an automatic choice ("" when asked for explicitly).
    """

    backend: Backend
    reason: str = ""


def resolve_backend(requested: Backend, device: torch.device, dtype: torch.dtype) -> BackendChoice:
    """Turn ``--backend`` into a concrete backend for this device and precision.

    Raises:
        UsageError: ``onnx``/``int8`` asked for on CUDA or in half precision.
        SetupError: ``onnx``/``int8`` asked for without onnxruntime installed.
    """
    if requested is Backend.AUTO:
        if device.type != "cpu":
            return BackendChoice(Backend.EAGER, "CUDA: eager PyTorch (channels-last, fast norm)")
        if dtype != torch.float32:
            return BackendChoice(Backend.EAGER, f"{str(dtype)[6:]} on CPU: eager PyTorch")
        # Measured side by side on a 2-core CPU (docs/speed.md, 512 px, end to end): onnxruntime
        # ran the default lite model 1.5x faster than eager PyTorch (the exported norm is one
        # BatchNormalization pass) and v2 at par; traced was no faster than eager (0.98x lite,
        # 0.87x v2) and pays a trace per new input size, so eager is the fallback.
        if onnxruntime_available():
            return BackendChoice(Backend.ONNX, "CPU float32: onnxruntime (fastest measured on CPU)")
        return BackendChoice(Backend.EAGER, f"CPU float32 without onnxruntime: eager PyTorch ({ONNX_HINT})")
    if requested in (Backend.ONNX, Backend.INT8):
        if device.type != "cpu":
            raise UsageError(
                f"--backend {requested.value} runs on the CPU (onnxruntime's CPU provider); "
                "use --device cpu, or --backend eager/traced on CUDA"
            )
        if dtype != torch.float32:
            raise UsageError(
                f"--backend {requested.value} computes in float32 (int8: quantised float32); "
                "drop --precision or use --precision fp32"
            )
        require_onnxruntime(requested)
    return BackendChoice(requested)



def model_digest(model: nn.Module) -> str:
    """SHA-256 of the model's state dict (names, shapes, float32 values): a cache key for weights
    that did not come from a file."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()



class OrtRunner(OrtSession):
    """:class:`~animecli.inference.ort_session.OrtSession` (same arguments) for tensors, for the PyTorch engine."""

    memory_format = torch.contiguous_format

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float32 in [-1, 1] (any device/layout) → same, float32, on the CPU."""
        return torch.from_numpy(self.run_array(x.detach().to("cpu", torch.float32).contiguous().numpy()))

    def run_carry(self, x: torch.Tensor, stats: torch.Tensor, blend: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame with carried statistics (:meth:`~animecli.inference.ort_session.OrtSession.run_carry_array`)."""
        y, used = self.run_carry_array(x.detach().to("cpu", torch.float32).contiguous().numpy(),
                                       stats.detach().to("cpu", torch.float32).contiguous().numpy(), blend)
        return torch.from_numpy(y), torch.from_numpy(used)

    def run_fixed(self, x: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        """One tile with frozen statistics (see :meth:`~animecli.inference.ort_session.OrtSession.run_fixed_array`)."""
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.run_fixed_array(arr, stats.detach().to("cpu", torch.float32).contiguous().numpy()))


def make_runner(
    model: nn.Module,
    backend: Backend,
    *,
    threads: int = 0,
    digest: str | None = None,
    arch_key: str = "",
    calibration: Path | None = None,
    multiple: int = 4,
    memory_format: torch.memory_format = torch.channels_last,
    compile: bool = False,
) -> Runner:
    """Build the runner for a resolved backend.

    Args:
        model: the generator, ready for PyTorch (device, dtype, memory format, eval).
        backend: a resolved backend (see :func:`resolve_backend`).
        threads: onnxruntime intra-op threads (0 = its default).
        digest: SHA-256 of the weights file (``None`` = hash the state dict).
        arch_key: architecture and options, part of the cache key (e.g. ``lite/1.0/noalign``).
        calibration: int8 calibration photos (``None`` = the bundled examples).
        multiple: the model's size multiple (calibration images are padded to it).
        memory_format: input layout for the PyTorch runners.
        compile: ``torch.compile`` the eager model (see :class:`~animecli.inference.backends.torch_runner.TorchRunner`).

    Raises:
        SetupError: onnxruntime missing, or no calibration photos for int8.
        UsageError: ``compile`` with a backend other than eager.
    """
    if compile and backend is not Backend.EAGER:
        raise UsageError(f"--compile compiles the eager PyTorch model; drop --backend {backend.value} or --compile")
    if backend in (Backend.EAGER, Backend.TRACED):
        return TorchRunner(model, backend, memory_format, compile=compile)
    if backend not in (Backend.ONNX, Backend.INT8):
        raise ValueError(f"resolve the backend first (got {backend.value})")
    require_onnxruntime(backend)
    key = cache_key(arch_key or type(model).__name__)
    digest = digest or model_digest(model)
    paths = compiled_paths(digest, key)
    if backend is Backend.ONNX:
        fixed_paths = paths
        tiles: GraphSource | None = None
        video: GraphSource | None = None
        if has_stats_graphs(model):
            tiles = GraphSource(lambda: cached(fixed_paths.fixed, lambda: export_onnx(model, fixed_stats=True)),
                                lambda: discard([fixed_paths.fixed]))
            video = GraphSource(lambda: cached(fixed_paths.carry, lambda: export_onnx_carry(model)),
                                lambda: discard([fixed_paths.carry]))
        plan = stage_plan(model)
        if plan is not None:
            # AnimeGANv3 in stages (issue 23: a third of the whole graph's memory); exported once
            # for all stages, each cached in its own file (the torch-free engine reads them).
            staged: list[StagedGraph] = []

            def stage_bytes(name: str) -> bytes:
                if not staged:
                    staged.append(export_onnx_staged(model))
                return staged[0].graphs[name]

            def stage_cached(name: str) -> bytes:
                return cached(paths.stage_file(name), lambda: stage_bytes(name))

            def stages() -> StagedGraph:
                return StagedGraph({st.name: stage_cached(st.name) for st in plan}, None, plan)

            files = [paths.stage_file(st.name) for st in plan]
            return _open_runner(stages, files, backend, threads, tiles, video)
        if not can_split(model):
            return _open_runner(lambda: cached(paths.fp32, lambda: export_onnx(model)), [paths.fp32],
                                backend, threads, tiles, video)
        # The whole graph is not needed (int8 exports it when asked for). Exported once for
        # both parts (the first run caches them; the torch-free engine needs both).
        parts: list[bytes] = []

        def part(i: int) -> bytes:
            if not parts:
                parts.extend(export_onnx_split(model))
            return parts[i]

        def split() -> SplitGraph:
            return SplitGraph(cached(paths.encoder, lambda: part(0)), cached(paths.decoder, lambda: part(1)))

        return _open_runner(split, [paths.encoder, paths.decoder], backend, threads, tiles, video)
    fp32_path = paths.fp32
    images = calibration_images(calibration, CALIBRATION_SIZE, multiple)
    paths = compiled_paths(digest, key, calibration_key(images))

    def build() -> bytes:
        with tempfile.TemporaryDirectory(prefix="animecli-int8-") as tmp:
            return quantize_int8(cached(fp32_path, lambda: export_onnx(model)), images, Path(tmp))

    return _open_runner(lambda: cached(paths.int8, build), [paths.int8, fp32_path], backend, threads)


def _open_runner(
    graph: Callable[[], bytes | SplitGraph | StagedGraph], files: list[Path], backend: Backend, threads: int,
    tiles: GraphSource | None = None, video: GraphSource | None = None,
) -> OrtRunner:
    """The session over ``graph()``; if onnxruntime refuses the cached ``files`` (damaged on
    disk), they are deleted and made again, once (the tiling and video graphs likewise, when
    first used)."""
    try:
        return OrtRunner(graph(), backend, threads, tiles, video)
    except GraphError:
        discard(files)
        return OrtRunner(graph(), backend, threads, tiles, video)
