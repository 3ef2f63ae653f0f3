"""Multi-frame files whose first page/frame is intact and whose tail is damaged (issue 27).

Shared by tests/test_damaged_frames.py and the fuzz corpus (tests/test_fuzz.py).
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image

SIZE = (80, 80)


def _photo(seed: int, step: int = 48) -> Image.Image:
    """An 80×80 RGB gradient in coarse steps with a little noise: a GIF of it is a few KB."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE[1], 0:SIZE[0]]
    a = np.stack([x * 3, y * 3, (x + y) * 1.5], -1)
    a = (a // step) * step + rng.integers(0, 2, (SIZE[1], SIZE[0], 1)) * 16
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def first_page(seed: int = 0) -> Image.Image:
    """The picture the damaged GIFs below hold as their first frame."""
    return _photo(seed)


def noise(seed: int = 0) -> Image.Image:
    """80×80 RGB noise: the damaged TIFFs' first page. Whatever lies at offset 256 (where the broken
    pointer sends Pillow) then reads as a garbage directory, as in the issue."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8), "RGB")


def tiff_with_bad_next_page(compression: str | None = None, seed: int = 0) -> bytes:
    """An 80×80 RGB TIFF whose one page decodes, with its next-page pointer overwritten by 256.

    As in the issue: the first IFD's offset is at bytes 4–8; the 4-byte next-IFD offset follows
    its entries, at ``ifd + 2 + 12 * n_entries``. ``compression``: None (raw), ``tiff_lzw`` or ``jpeg``.
    """
    buf = io.BytesIO()
    noise(seed).save(buf, format="TIFF", **({"compression": compression} if compression else {}))
    data = bytearray(buf.getvalue())
    order = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack(order + "I", data[4:8])[0]
    n_entries = struct.unpack(order + "H", data[ifd:ifd + 2])[0]
    at = ifd + 2 + 12 * n_entries
    data[at:at + 4] = struct.pack(order + "I", 256)
    return bytes(data)


def two_frame_gif(seed: int = 0) -> bytes:
    """An intact 2-frame 80×80 GIF (about 6.6 KB; the second frame starts near 3.3 KB)."""
    second = _photo(seed + 1).transpose(Image.Transpose.ROTATE_90)
    buf = io.BytesIO()
    first_page(seed).save(buf, format="GIF", save_all=True, append_images=[second])
    return buf.getvalue()


def gif_frames(data: bytes) -> list[tuple[int, int, int]]:
    """(descriptor offset, local colour table bytes, end of the image data) of each frame."""
    i = 13
    if data[10] & 0x80:
        i += 3 * (2 << (data[10] & 7))
    frames = []
    while i < len(data):
        if data[i] == 0x21:  # an extension: label, then sub-blocks
            i += 2
            while data[i]:
                i += data[i] + 1
            i += 1
        elif data[i] == 0x2C:  # an image: descriptor, local colour table, LZW size, sub-blocks
            start, flags = i, data[i + 9]
            table = 3 * (2 << (flags & 7)) if flags & 0x80 else 0
            i += 10 + table + 1
            while data[i]:
                i += data[i] + 1
            i += 1
            frames.append((start, table, i))
        else:
            break
    return frames


def gif_cut_in_second_frame(seed: int = 0, in_data: bool = False) -> bytes:
    """:func:`two_frame_gif` truncated inside its second frame (about 3.4 KB).

    ``in_data=False``: cut inside the second frame's local colour table (Pillow's frame count
    raises IndexError); ``True``: cut half-way through its pixel data.
    """
    data = two_frame_gif(seed)
    frames = gif_frames(data)
    assert len(frames) == 2 and frames[1][1] > 0, "the second frame should carry its own colour table"
    start, table, end = frames[1]
    cut = (start + 10 + table + end) // 2 if in_data else start + 10 + table // 4
    return data[:cut]


# The damaged files by name, with their extension (the fuzz corpus draws from these).
KINDS = {"tiff-raw": ".tif", "tiff-lzw": ".tif", "tiff-jpeg": ".tif", "gif-cut-in-table": ".gif",
         "gif-cut-in-data": ".gif"}


def make(kind: str, seed: int = 0) -> bytes:
    """The damaged file ``kind`` (a key of :data:`KINDS`)."""
    if kind.startswith("tiff-"):
        compression = {"raw": None, "lzw": "tiff_lzw", "jpeg": "jpeg"}[kind.removeprefix("tiff-")]
        return tiff_with_bad_next_page(compression, seed)
    return gif_cut_in_second_frame(seed, in_data=kind == "gif-cut-in-data")
