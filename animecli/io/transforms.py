"""Pure image transforms between Pillow images and (H, W, 3) uint8 numpy arrays.

Nothing here does I/O or imports torch; the loader, the writer and the
torch-free onnxruntime engine call these (:mod:`animecli.inference.tensors` has the
PyTorch side: model range, batching, padding of tensors).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

UInt8Array = npt.NDArray[np.uint8]

ORIENTATION_TAG = 0x0112
ROTATED_NOTE = "EXIF rotated"


@dataclass(frozen=True)
class Prepared:
    """An image ready for the model.

    Attributes:
        rgb: (H, W, 3) uint8 array, H and W the processed size.
        alpha: the alpha channel (mode ``L``) at the processed size, or ``None``.
        original_size: (width, height) after EXIF rotation, before resizing.
        notes: remarks for the report (e.g. "EXIF rotated", "16-bit scaled to 8-bit").
    """

    rgb: UInt8Array
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
        return rgba.convert("RGB"), alpha, ()  # the writer notes whether the output format keeps it
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


def image_to_array(img: Image.Image) -> UInt8Array:
    """RGB Pillow image → (H, W, 3) uint8 array (a copy; the image may be closed afterwards)."""
    return np.array(img.convert("RGB") if img.mode != "RGB" else img, dtype=np.uint8)


def array_to_image(rgb: UInt8Array) -> Image.Image:
    """(H, W, 3) uint8 array → RGB Pillow image."""
    return Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")


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
    all_notes = ((ROTATED_NOTE,) if rotated else ()) + notes
    return Prepared(image_to_array(rgb), alpha, original, all_notes)


def padded_size(height: int, width: int, multiple: int, min_size: int) -> tuple[int, int]:
    """Smallest (H, W) ≥ the input, ≥ ``min_size`` and ≥ 2 × ``multiple``, divisible by ``multiple``.

    Two multiples at least: the deepest level (1/``multiple``) must have 2 px or more for its
    reflect pads; a tiny AnimeGANv3 (multiple 16) padded a 5×9 photo to 16×16 and failed on
    its 1×1 level.
    """

    def up(v: int) -> int:
        v = max(v, min_size, 2 * multiple)
        return -(-v // multiple) * multiple

    return up(height), up(width)


def pad_array(rgb: UInt8Array, multiple: int, min_size: int = 16) -> UInt8Array:
    """Pad an (H, W, 3) uint8 image on the bottom/right to the model's size multiple.

    Reflection keeps the image statistics (and so the whole-image normalisation)
    close to the unpadded image's; where the image is too small to reflect
    (pad ≥ side) the edge is repeated instead. The same rule and result as
    :func:`animecli.inference.tensors.pad_batch`; the caller crops the output back.
    """
    h, w = int(rgb.shape[0]), int(rgb.shape[1])
    ph, pw = padded_size(h, w, multiple, min_size)
    if (ph, pw) == (h, w):
        return rgb
    widths = ((0, ph - h), (0, pw - w), (0, 0))
    out: UInt8Array = (np.pad(rgb, widths, mode="reflect") if ph - h < h and pw - w < w
                       else np.pad(rgb, widths, mode="edge"))
    return out
