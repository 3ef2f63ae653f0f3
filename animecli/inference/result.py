"""What every engine returns for a batch, and host-memory hygiene between batches (no torch)."""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from dataclasses import dataclass

from animecli.io.transforms import UInt8Array


@dataclass
class BatchResult:
    """Outputs of one batch.

    Attributes:
        images: per input, an (H, W, 3) uint8 array, or ``None`` if it failed.
        errors: per input, the failure reason or ``None``.
        infer_ms: wall time of the batch's inference, shared by its images.
        gpu_peak_mb: peak CUDA memory during the batch (0 on CPU).
        note: a remark for the report about how the batch ran ("" if none), e.g. a
            tiled image run in eager PyTorch because the backend cannot freeze statistics.
    """

    images: list[UInt8Array | None]
    errors: list[str | None]
    infer_ms: float
    gpu_peak_mb: float
    note: str = ""


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
        return trim
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows)
        return None


_MALLOC_TRIM = _load_malloc_trim() if sys.platform.startswith("linux") else None


def release_host_memory() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``).

    Decoded images of changing sizes, allocated in the loader thread and freed
    in the main thread, leave glibc's arenas fragmented: without this, RSS
    climbed by ~700 MB over a 2,000-image soak before levelling off.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def failure_reason(exc: BaseException) -> str:
    """The report line for a batch whose inference raised something other than out-of-memory."""
    reason = str(exc).splitlines()[0][:200] if str(exc) else ""
    return (f"inference failed ({type(exc).__name__}: {reason}); "
            "try --backend eager or --device cpu, and report it if it persists")
