"""The engine: runs a generator on CPU or GPU, one image or N at a time.

It owns device and precision choice, the backend (eager, traced, onnx, int8:
built by :mod:`animecli.inference.backends`), the padding to the model's size
multiple, and memory hygiene: tensors are
``del``-eted after each batch and the CUDA cache is emptied when asked; on
CUDA out-of-memory the batch is halved and retried.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn

from animecli.errors import SetupError, UsageError
from animecli.inference.backends import BackendChoice, OrtRunner, Runner, make_runner, resolve_backend
from animecli.inference.backends.onnx_export import stats_size
from animecli.inference.device import resolve_device
from animecli.inference.memory import memory_budget, needs_tiling
from animecli.inference.result import BatchResult, failure_reason, release_host_memory
from animecli.inference.tensors import (
    array_to_tensor,
    arrays_to_batch,
    batch_to_arrays,
    from_model_range,
    pad_batch,
    pad_uint8,
    tensor_to_array,
    to_model_range,
)
from animecli.inference.tiling import (
    FixedForward,
    bytes_per_pixel,
    min_sample_side,
    plan_tiles,
    supports_tiling,
    tiled_forward,
)
from animecli.io.transforms import UInt8Array
from animecli.options import Backend, ClearCache, EngineOptions, Precision

_DTYPES = {Precision.FP32: torch.float32, Precision.FP16: torch.float16, Precision.BF16: torch.bfloat16}


def resolve_precision(precision: Precision, device: torch.device) -> torch.dtype:
    """``auto`` = fp16 on CUDA, fp32 on CPU. fp16 on CPU is refused (no fast kernels there)."""
    if precision is Precision.AUTO:
        return torch.float16 if device.type == "cuda" else torch.float32
    if precision is Precision.FP16 and device.type == "cpu":
        raise UsageError("--precision fp16 needs a CUDA GPU; on CPU use fp32 (default) or bf16")
    return _DTYPES[precision]


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles, where oneDNN runs bfloat16 convolutions in hardware.

    Only there does ``--precision bf16`` pay on the CPU (docs/speed.md: 1.5x the default model,
    2.2x v2 on a 2-core Xeon with AMX); elsewhere bfloat16 is emulated and slower. The probe is
    torch's own (private, so guarded): False when it is missing or fails.
    """
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(probe()) if callable(probe) else False
    except Exception:  # a torch whose private probe changed shape: assume no AMX
        return False


def is_oom(exc: BaseException) -> bool:
    """True for CUDA (or CPU allocator) out-of-memory errors."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class Engine:
    """Runs one generator.

    Args:
        model: the generator, (N, 3, H, W) in [-1, 1] → same.
        input_multiple: H and W are padded to a multiple of this.
        opts: device, precision, backend, batch size, cache policy, tiling.
        arch: the architecture's name, for the memory estimate of tiling.
        weights_sha256: digest of the weights file, the cache key of exported
            ONNX/int8 graphs (``None``: the state dict is hashed).
        arch_key: architecture and options (e.g. ``lite/1.0/noalign``), also part of that key.

    Raises:
        UsageError, SetupError: unusable device, precision or backend.
    """

    def __init__(
        self,
        model: nn.Module,
        input_multiple: int,
        opts: EngineOptions,
        arch: str = "lite",
        *,
        weights_sha256: str | None = None,
        arch_key: str = "",
    ) -> None:
        if opts.threads > 0:
            torch.set_num_threads(opts.threads)
        self.device = resolve_device(opts.device)
        self.dtype = resolve_precision(opts.precision, self.device)
        self.opts = opts
        self.multiple = input_multiple
        # Channels-last is faster for these convolutions on both CPU (oneDNN) and GPU (tensor cores).
        self.memory_format = torch.channels_last
        self.model = model.to(self.device, self.dtype)
        self.model.to(memory_format=self.memory_format)  # type: ignore[call-overload]
        self.model.eval()
        requested = Backend.EAGER if opts.compile and opts.backend is Backend.AUTO else opts.backend
        self.choice: BackendChoice = resolve_backend(requested, self.device, self.dtype)
        self.backend = self.choice.backend
        self.arch = arch
        # Bytes the model's activations may use (--max-memory or an automatic share).
        self.budget = memory_budget(self.opts.max_memory_mb, self._cuda_free if self.device.type == "cuda" else None)
        self.runner: Runner = make_runner(
            self.model, self.backend, threads=opts.threads, digest=weights_sha256,
            arch_key=arch_key or arch, calibration=opts.calibration, multiple=input_multiple,
            memory_format=self.memory_format, compile=opts.compile,
        )
        self._last_shape: tuple[int, ...] | None = None

    @property
    def precision_name(self) -> str:
        """The compute dtype as the report names it (``float32``, ``float16``, ``bfloat16``)."""
        return str(self.dtype).removeprefix("torch.")

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.runner(x)

    def _cuda_free(self) -> int:
        free, _ = torch.cuda.mem_get_info(self.device)
        return int(free)

    def _bpp(self) -> tuple[int, int, int]:
        """Bytes per pixel of (a whole image, a tile, the statistics pass) with this runner."""
        whole = "eager"
        if isinstance(self.runner, OrtRunner):
            whole = "onnx-split" if self.runner.split else "onnx-staged" if self.runner.staged else "onnx"
        tile = "onnx-fixed" if self._fixed_forward() is not None else "eager"
        return (bytes_per_pixel(self.arch, self.dtype, whole), bytes_per_pixel(self.arch, self.dtype, tile),
                bytes_per_pixel(self.arch, self.dtype, "eager"))

    def tile_plan_for(self, height: int, width: int) -> tuple[int, int] | None:
        """(tile, overlap) if an image of this size should be tiled, else ``None``."""
        whole, tile_bpp, stats_bpp = self._bpp()
        if not supports_tiling(self.model) or not needs_tiling(height, width, self.opts.tile, self.budget, whole):
            return None
        plan = plan_tiles(height, width, self.budget, tile_bpp, self.multiple, stats_bpp=stats_bpp,
                          min_sample=min_sample_side(self.model))
        if self.opts.tile > 0:
            return self.opts.tile // self.multiple * self.multiple or self.multiple, plan.overlap
        return plan.tile, plan.overlap

    def _fixed_forward(self) -> FixedForward | None:
        """The runner's fixed-statistics forward for tiles, if it has one (onnxruntime float32)."""
        if isinstance(self.runner, OrtRunner) and self.runner.can_tile:
            return self.runner.run_fixed
        return None

    @property
    def can_carry(self) -> bool:
        """Whether :meth:`run_carried` works: onnxruntime's video graph (else video carries
        statistics through the eager modules' hooks, :mod:`animecli.inference.temporal`)."""
        return isinstance(self.runner, OrtRunner) and self.runner.can_carry

    def run_carried(self, rgb: UInt8Array, stats: torch.Tensor | None, blend: float) -> tuple[UInt8Array, torch.Tensor]:
        """One video frame through the video graph, its statistics mixed with the previous frame's.

        Args:
            rgb: (H, W, 3) uint8.
            stats: what the previous frame returned ((S,) float32); ``None`` = a new shot.
            blend: the previous statistics' weight, in [0, 1) (ignored for a new shot).

        Returns:
            The stylised (H, W, 3) uint8 frame and the statistics it used (the next frame's ``stats``).
        """
        assert isinstance(self.runner, OrtRunner), "check can_carry"
        h, w = int(rgb.shape[0]), int(rgb.shape[1])
        x = self._model_input([rgb])
        if stats is None:
            stats, blend = torch.zeros(stats_size(self.model)), 0.0
        y, used = self.runner.run_carry(x, stats, blend)
        out = from_model_range(y[:, :, :h, :w])
        del x, y
        return batch_to_arrays(out)[0], used

    def _run_tiled(self, rgb: UInt8Array, tile: int, overlap: int) -> UInt8Array:
        image = array_to_tensor(rgb)
        h, w = int(image.shape[1]), int(image.shape[2])
        padded = pad_uint8(image, self.multiple)
        _, tile_bpp, stats_bpp = self._bpp()
        plan = plan_tiles(int(padded.shape[1]), int(padded.shape[2]), self.budget, tile_bpp, self.multiple, overlap,
                          tile=tile, stats_bpp=stats_bpp, min_sample=min_sample_side(self.model))
        # The statistics pass runs the eager modules; the tiles run there too (frozen statistics
        # live in them; a traced graph would ignore them) or in onnxruntime's fixed-statistics graph.
        out = tiled_forward(self.model, self.model, padded, plan, self.multiple, self.dtype, self.device,
                            self.memory_format, fixed_forward=self._fixed_forward())
        if isinstance(self.runner, OrtRunner):
            self.runner.release_tile_memory()
        return tensor_to_array(out[:, :h, :w])

    def _model_input(self, batch: Sequence[UInt8Array]) -> torch.Tensor:
        """(H, W, 3) uint8 arrays of one size → the runner's (N, 3, H', W') input: on the device,
        in the compute dtype and [-1, 1], padded to the size multiple, in the runner's layout."""
        x = arrays_to_batch(batch)  # (N, 3, H, W) uint8, channels-last in memory
        if self.device.type == "cuda":
            # Page-locked memory: the copy to the GPU is one DMA that need not block this thread.
            x = x.pin_memory()
        x = x.to(self.device, non_blocking=True)
        x = to_model_range(x, self.dtype)
        return pad_batch(x, self.multiple).contiguous(memory_format=self.runner.memory_format)

    def _run(self, batch: Sequence[UInt8Array]) -> list[UInt8Array]:
        h, w = int(batch[0].shape[0]), int(batch[0].shape[1])
        x = self._model_input(batch)
        with torch.inference_mode():
            y = self._forward(x)
            out = from_model_range(y[:, :, :h, :w]).cpu()
        del x, y  # release device memory before the next batch, not when Python gets round to it
        return batch_to_arrays(out)

    def run_batch(self, batch: Sequence[UInt8Array]) -> BatchResult:
        """Stylise images of one processed size.

        Args:
            batch: (H, W, 3) uint8 arrays, all the same H and W.

        Returns:
            A :class:`BatchResult`; on CUDA out-of-memory the batch is split
            in halves and retried, and only an image that fails alone is
            reported as failed.
        """
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        images: list[UInt8Array | None] = []
        errors: list[str | None] = []
        h, w = int(batch[0].shape[0]), int(batch[0].shape[1])
        tiling = self.tile_plan_for(h, w)
        note = ""
        if tiling is None:
            self._run_split(list(batch), images, errors)
        else:
            if self.backend in (Backend.ONNX, Backend.INT8) and self._fixed_forward() is None:
                # Tiles need each norm layer's whole-image statistics frozen. The onnx backend
                # has a graph that takes them as an input; the int8 graph has none (it would need
                # its own calibration), so its tiled images run in eager PyTorch float32.
                note = f"tiled: run in eager PyTorch (the {self.backend.value} backend cannot tile)"
            for img in batch:
                self._run_tiled_with_backoff(img, *tiling, images, errors)
        if cuda:
            torch.cuda.synchronize(self.device)
        infer_ms = (time.perf_counter() - t0) * 1000.0
        peak = torch.cuda.max_memory_allocated(self.device) / 2**20 if cuda else 0.0
        self._after_batch(tuple(batch[0].shape))
        return BatchResult(images, errors, infer_ms, peak, note)

    def _run_split(
        self, batch: list[UInt8Array], images: list[UInt8Array | None], errors: list[str | None]
    ) -> None:
        try:
            outs = self._run(batch)
        except SetupError:
            raise  # the runner cannot work at all (e.g. --compile without a compiler): not one file's fault
        except Exception as exc:
            if not is_oom(exc):
                images.extend([None] * len(batch))
                errors.extend([failure_reason(exc)] * len(batch))
                return
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(batch) == 1:
                h, w = int(batch[0].shape[0]), int(batch[0].shape[1])
                images.append(None)
                errors.append(
                    f"out of memory at {w}×{h}; lower --max-size, use --batch-size 1, or --device cpu"
                )
                return
            half = len(batch) // 2
            self._run_split(batch[:half], images, errors)
            self._run_split(batch[half:], images, errors)
            return
        images.extend(outs)
        errors.extend([None] * len(outs))

    def _run_tiled_with_backoff(
        self, img: UInt8Array, tile: int, overlap: int,
        images: list[UInt8Array | None], errors: list[str | None],
    ) -> None:
        """Tiled inference; on out-of-memory, retry with half the tile side (down to 4× the overlap)."""
        while True:
            try:
                images.append(self._run_tiled(img, tile, overlap))
                errors.append(None)
                return
            except Exception as exc:
                if not is_oom(exc) or tile // 2 < 2 * overlap:
                    images.append(None)
                    reason = "out of memory even when tiled" if is_oom(exc) else f"{type(exc).__name__}: {exc}"
                    errors.append(f"{reason}; lower --max-memory or --tile, or use --device cpu")
                    return
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                tile = tile // 2 // self.multiple * self.multiple

    def _after_batch(self, shape: tuple[int, ...]) -> None:
        release_host_memory()
        if self.device.type != "cuda" or self.opts.clear_cache is ClearCache.NEVER:
            return
        # auto: cached blocks are reused by same-shape batches, so only a shape change frees them.
        if self.opts.clear_cache is ClearCache.ALWAYS or shape != self._last_shape:
            torch.cuda.empty_cache()
        self._last_shape = shape
