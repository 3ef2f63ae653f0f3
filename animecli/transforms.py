"""Pure image transforms between Pillow images and model tensors.

Nothing here does I/O; the loader and writer call these.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class Prepared:
    """An image ready for the model.

    Attributes:
        rgb: (3, H, W) uint8 tensor, H and W the processed size.
        alpha: the alpha channel (mode ``L``) at the processed size, or ``None``.
        original_size: (width, height) after EXIF rotation, before resizing.
        notes: remarks for the report (e.g. "EXIF rotated", "16-bit scaled to 8-bit").
    """

    rgb: torch.Tensor
    alpha: Image.Image | None
    original_size: tuple[int, int]
    notes: tuple[str, ...]


def orient(img: Image.Image) -> tuple[Image.Image, bool]:
    """Apply the EXIF orientation so that the pixels are upright; return (image, rotated?)."""
    orientation = img.getexif().get(ORIENTATION_TAG, 1)
    if orientation in (None, 1):
        return img, False
    out = ImageOps.exif_transpose(img)
    return (out if out is not None else img), True


def _extrema(img: Image.Image) -> tuple[float, float]:
    """(min, max) of a single-band image."""
    ext = img.getextrema()
    assert not isinstance(ext[0], tuple)  # single band
    return float(ext[0]), float(ext[1])


def _sixteen_to_eight(img: Image.Image) -> Image.Image:
    """Scale a 16/32-bit integer or float grey image to 8-bit ``L`` (plain convert would clip at 255)."""
    if img.mode == "F":
        lo, hi = _extrema(img)
        span = hi - lo or 1.0
        return img.point(lambda v: (v - lo) * (255.0 / span)).convert("L")
    wide = img.convert("I")
    lo, hi = _extrema(wide)
    # 16-bit data (I;16) spans 0..65535; anything else is stretched to its own range.
    top = 65535.0 if int(hi) > 255 or img.mode.startswith("I;16") else 255.0
    return wide.point(lambda v: v * (255.0 / top)).convert("L")


def split_alpha(img: Image.Image) -> tuple[Image.Image, Image.Image | None, tuple[str, ...]]:
    """Convert any Pillow mode to RGB for the model, keeping alpha aside.

    Handles 1, L, LA, P (with or without transparency), PA, RGB, RGBA, RGBa,
    CMYK, YCbCr, LAB, HSV, I, I;16*, and F.

    Returns:
        (rgb image, alpha as ``L`` or ``None``, notes).
    """
    notes: list[str] = []
    mode = img.mode
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    elif mode == "P":
        return img.convert("RGB"), None, ()
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        alpha = rgba.getchannel("A")
        # A fully opaque alpha carries no information; dropping it keeps JPEG-able output.
        if alpha.getextrema() == (255, 255):
            return rgba.convert("RGB"), None, ()
        return rgba.convert("RGB"), alpha, ("alpha kept",)
    if mode.startswith("I") or mode == "F":
        notes.append(f"{mode} scaled to 8-bit")
        return _sixteen_to_eight(img).convert("RGB"), None, tuple(notes)
    if mode == "CMYK":
        notes.append("CMYK converted to RGB")
    if mode != "RGB":
        return img.convert("RGB"), None, tuple(notes)
    return img, None, ()


def fit_size(width: int, height: int, max_size: int) -> tuple[int, int]:
    """The (width, height) with the long side at most ``max_size`` (0 = unlimited), aspect kept."""
    long_side = max(width, height)
    if max_size <= 0 or long_side <= max_size:
        return width, height
    scale = max_size / long_side
    return max(1, round(width * scale)), max(1, round(height * scale))


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB Pillow image → (3, H, W) uint8 tensor (a copy; the image may be closed afterwards)."""
    data = bytearray(img.tobytes())
    return torch.frombuffer(data, dtype=torch.uint8).view(img.height, img.width, 3).permute(2, 0, 1)


def tensor_to_image(t: torch.Tensor) -> Image.Image:
    """(3, H, W) uint8 tensor → RGB Pillow image."""
    hwc = t.detach().to("cpu", torch.uint8).permute(1, 2, 0).contiguous()
    # One memcpy of exactly these pixels (HWC order); iterating the storage in Python would
    # take seconds per megapixel, and numpy is not a dependency.
    data = ctypes.string_at(hwc.data_ptr(), hwc.numel())
    return Image.frombytes("RGB", (int(hwc.shape[1]), int(hwc.shape[0])), data)


def prepare(img: Image.Image, max_size: int) -> Prepared:
    """Orient, convert to RGB (alpha aside) and down-scale one decoded image.

    Args:
        img: a decoded Pillow image in any mode.
        max_size: long-side limit (0 = none).
    """
    img, rotated = orient(img)
    rgb, alpha, notes = split_alpha(img)
    original = rgb.size
    size = fit_size(rgb.width, rgb.height, max_size)
    if size != rgb.size:
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
        if alpha is not None:
            alpha = alpha.resize(size, Image.Resampling.LANCZOS)
    all_notes = (("EXIF rotated",) if rotated else ()) + notes
    return Prepared(image_to_tensor(rgb), alpha, original, all_notes)


def padded_size(height: int, width: int, multiple: int, min_size: int) -> tuple[int, int]:
    """Smallest (H, W) ≥ the input, ≥ ``min_size`` and divisible by ``multiple``."""

    def up(v: int) -> int:
        v = max(v, min_size)
        return -(-v // multiple) * multiple

    return up(height), up(width)


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
