"""The writer: saves results atomically, in the chosen format, with ICC profile and alpha."""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
from PIL import Image

from animecli.atomic import atomic_write
from animecli.config import WriteOptions
from animecli.errors import FileError, OutputError
from animecli.transforms import tensor_to_image

_PIL_FORMATS = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP",
    ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
}
_ALPHA_OK = {"PNG", "WEBP", "TIFF"}
# Errors that will hit every later file too: stop the run rather than fail each file.
_FATAL_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT}


@dataclass(frozen=True)
class Saved:
    """What the writer did: bytes written, time taken, remarks."""

    size: int
    save_ms: float
    notes: tuple[str, ...]


def save_image(
    rgb: torch.Tensor,
    dest: Path,
    opts: WriteOptions,
    alpha: Image.Image | None = None,
    icc: bytes | None = None,
    exif: bytes | None = None,
) -> Saved:
    """Encode and write one result atomically.

    Args:
        rgb: (3, H, W) uint8 result.
        dest: output path; its extension picks the format.
        opts: quality and the like.
        alpha: alpha channel (mode ``L``, same size) to re-attach where the format allows.
        icc: ICC profile to embed.
        exif: EXIF bytes to embed (orientation already normal).

    Raises:
        OutputError: the output folder is read-only or the disk is full (the run should stop).
        FileError: this one file could not be written.
    """
    t0 = time.perf_counter()
    fmt = _PIL_FORMATS.get(dest.suffix.lower(), "PNG")
    img = tensor_to_image(rgb)
    notes: list[str] = []
    if alpha is not None:
        if fmt in _ALPHA_OK:
            img.putalpha(alpha)
        else:
            notes.append(f"alpha dropped ({fmt} has no transparency; use --format png to keep it)")
    params: dict[str, Any] = {}
    if icc:
        params["icc_profile"] = icc
    if exif and fmt in ("JPEG", "WEBP", "PNG", "TIFF"):
        params["exif"] = exif
    if fmt in ("JPEG", "WEBP"):
        params["quality"] = opts.quality
    if fmt == "JPEG":
        params["subsampling"] = 0 if opts.quality >= 90 else 2

    def write(fh: BinaryIO) -> None:
        img.save(fh, format=fmt, **params)

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(dest, write)
    except OSError as exc:
        if exc.errno in _FATAL_ERRNOS or (exc.errno in (errno.EACCES, errno.EPERM) and not _writable(dest.parent)):
            raise OutputError(
                f"cannot write to {dest.parent} ({exc.strerror}); free some space or choose a writable OUTPUT"
            ) from None
        raise FileError(str(dest), f"could not be written ({exc.strerror or exc}); check the output folder") from None
    return Saved(dest.stat().st_size, (time.perf_counter() - t0) * 1000.0, tuple(notes))


def _writable(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK)
