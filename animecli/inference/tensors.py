"""The PyTorch side of the image transforms: uint8 arrays and tensors, model range, padding.

:mod:`animecli.io.transforms` turns Pillow images into (H, W, 3) uint8 arrays
without torch; this module turns those into model inputs and model outputs
back into arrays, for the PyTorch engine, the tiler, the benchmark and training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from animecli.io.transforms import UInt8Array, array_to_image, image_to_array, padded_size


def arrays_to_batch(images: Sequence[UInt8Array]) -> torch.Tensor:
    """(H, W, 3) uint8 arrays of one size → an (N, 3, H, W) uint8 tensor, channels-last in memory.

    One copy (the stack); the permute is a view, so the batch is already in the
    layout the convolutions prefer.
    """
    return torch.from_numpy(np.stack(list(images))).permute(0, 3, 1, 2)


def array_to_tensor(rgb: UInt8Array) -> torch.Tensor:
    """(H, W, 3) uint8 array → (3, H, W) uint8 tensor (a view of the same memory)."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)


def tensor_to_array(t: torch.Tensor) -> UInt8Array:
    """(3, H, W) uint8 tensor (any device) → (H, W, 3) uint8 array (a copy in that order)."""
    out: UInt8Array = t.detach().to("cpu", torch.uint8).permute(1, 2, 0).contiguous().numpy()
    return out


def batch_to_arrays(batch: torch.Tensor) -> list[UInt8Array]:
    """(N, 3, H, W) uint8 tensor → N (H, W, 3) uint8 arrays (one copy into HWC order, then views)."""
    hwc: UInt8Array = batch.detach().to("cpu", torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    return list(hwc)


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB Pillow image → (3, H, W) uint8 tensor (a copy; the image may be closed afterwards)."""
    return array_to_tensor(image_to_array(img))


def tensor_to_image(t: torch.Tensor) -> Image.Image:
    """(3, H, W) uint8 tensor → RGB Pillow image."""
    return array_to_image(tensor_to_array(t))


def pad_batch(x: torch.Tensor, multiple: int, min_size: int = 16) -> torch.Tensor:
    """Pad (N, C, H, W) on the bottom/right to the model's size multiple.

    Reflection keeps the image statistics (and so the whole-image
    normalisation) close to the unpadded image's; where the image is too small
    to reflect (pad ≥ side) replication is used instead. The caller crops
    the result back to (H, W), so nothing is ever stretched.
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])
    ph, pw = padded_size(h, w, multiple, min_size)
    if (ph, pw) == (h, w):
        return x
    mode = "reflect" if ph - h < h and pw - w < w else "replicate"
    return F.pad(x, (0, pw - w, 0, ph - h), mode=mode)


def pad_uint8(img: torch.Tensor, multiple: int, min_size: int = 16) -> torch.Tensor:
    """Pad a (3, H, W) uint8 image on the bottom/right to the size multiple, by reflection.

    Same result as :func:`pad_batch` but without a float copy of the whole
    image, which matters for the tiled path (a 48-megapixel photo is 576 MB in float32).
    """
    _, h, w = img.shape
    ph, pw = padded_size(int(h), int(w), multiple, min_size)
    if (ph, pw) == (h, w):
        return img

    def index(n: int, size: int) -> torch.Tensor:
        i = torch.arange(size)
        period = 2 * (n - 1) if n > 1 else 1
        i = i % period
        return torch.where(i < n, i, period - i).clamp(0, n - 1)

    return img.index_select(1, index(int(h), ph)).index_select(2, index(int(w), pw))


def to_model_range(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 [0, 255] → ``dtype`` in [-1, 1]."""
    return x.to(dtype).div_(127.5).sub_(1.0)


def from_model_range(y: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float → uint8 [0, 255], rounded and clipped."""
    return y.float().add_(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
