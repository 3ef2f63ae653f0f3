"""The activations' memory budget and the rule that decides whether an image is tiled
(no torch: the torch-free engine applies the same rule)."""

from __future__ import annotations

from collections.abc import Callable

# The activations' budget on a CPU without --max-memory. Activations only: the interpreter
# with torch and onnxruntime (~300 MB) and a large photo's uint8 buffers (input and output,
# 144 MB each at 48 MP) come on top. 768 MB keeps an 8000×6000 photo under 1.5 GB in all
# (docs/models.md).
CPU_BUDGET_MB = 768
# On a GPU without --max-memory: this share of the memory free when the engine starts (the rest
# is left for the CUDA allocator's fragmentation and other processes).
CUDA_FREE_SHARE = 0.8


def memory_budget(max_memory_mb: int, cuda_free_bytes: Callable[[], int] | None = None) -> int:
    """Bytes the model's activations may use: the budget of both engines.

    Args:
        max_memory_mb: ``--max-memory`` (0 or less: automatic).
        cuda_free_bytes: on a CUDA device, reads the device's free memory; ``None`` on the CPU.
    """
    if max_memory_mb > 0:
        return max_memory_mb * 2**20
    if cuda_free_bytes is not None:
        return int(cuda_free_bytes() * CUDA_FREE_SHARE)
    return CPU_BUDGET_MB * 2**20


def needs_tiling(height: int, width: int, tile: int, budget_bytes: int, bytes_per_pixel: int) -> bool:
    """Whether an image is run in tiles: the rule of both engines.

    Args:
        height, width: the image's processed size.
        tile: ``--tile``: 0 = never, > 0 = tile any image with a longer side, < 0 = automatic.
        budget_bytes: the activations' memory budget.
        bytes_per_pixel: the untiled graph's activation memory per pixel.
    """
    if tile == 0:
        return False
    if tile > 0:
        return max(height, width) > tile
    return height * width * bytes_per_pixel > budget_bytes
