"""The writer: saves results atomically, in the chosen format, with ICC profile and alpha.

:class:`WriterPool` encodes on background threads (Pillow releases the GIL
while it encodes), so the model is not idle while a JPEG is being written;
outcomes come back in submission order.
"""

from __future__ import annotations

import errno
import io
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Generic, TypeVar

from PIL import Image

from animecli.atomic import atomic_write, file_in_the_way
from animecli.errors import FileError, OutputError
from animecli.io.transforms import UInt8Array, array_to_image
from animecli.options import WriteOptions

_PIL_FORMATS = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP",
    ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
}
_ALPHA_OK = {"PNG", "WEBP", "TIFF"}
_MAX_SIDE = {"WEBP": 16383, "JPEG": 65500}  # the formats' own limits (libwebp; libjpeg)
_JPEG_EXIF_MAX = 65533  # one APP1 segment, less its "Exif\0\0" header
# Errors that will hit every later file too: stop the run rather than fail each file.
_FATAL_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT}


@dataclass(frozen=True)
class Saved:
    """What the writer did: bytes written, time taken, remarks."""

    size: int
    save_ms: float
    notes: tuple[str, ...]


def save_image(
    rgb: UInt8Array,
    dest: Path,
    opts: WriteOptions,
    alpha: Image.Image | None = None,
    icc: bytes | None = None,
    exif: bytes | None = None,
) -> Saved:
    """Encode and write one result atomically.

    Args:
        rgb: (H, W, 3) uint8 result.
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
    img = array_to_image(rgb)
    notes: list[str] = []
    if alpha is not None:
        if fmt in _ALPHA_OK:
            img.putalpha(alpha)
            notes.append("alpha kept")
        else:
            notes.append(f"alpha dropped ({fmt} has no transparency; use --format png to keep it)")
    params: dict[str, Any] = {}
    if icc:
        params["icc_profile"] = icc
    if exif and fmt == "JPEG" and len(exif) > _JPEG_EXIF_MAX:
        notes.append(f"EXIF not kept ({len(exif):,} bytes; a JPEG holds {_JPEG_EXIF_MAX:,})")
    elif exif and fmt in ("JPEG", "WEBP", "PNG", "TIFF"):
        params["exif"] = exif
    if fmt in ("JPEG", "WEBP"):
        params["quality"] = opts.quality
    if fmt == "JPEG":
        params["subsampling"] = 0 if opts.quality >= 90 else 2

    def write(fh: BinaryIO) -> None:
        # Encoded in memory, then written by Python: Pillow's JPEG encoder writes to the file
        # descriptor itself and ignores a short write(), so a disk that filled during the last
        # block left a cut JPEG that was renamed into place and reported as converted.
        buf = io.BytesIO()
        img.save(buf, format=fmt, **params)
        fh.write(buf.getbuffer())

    problem = size_problem(dest, img.width, img.height)
    if problem:
        raise FileError(str(dest), problem)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(dest, write)
    except ValueError as exc:  # Pillow's encoders refuse some images this way (the temp file is removed)
        raise FileError(str(dest), f"could not be encoded as {fmt} ({exc}); try another --format") from None
    except OSError as exc:
        if exc.errno in _FATAL_ERRNOS or (exc.errno in (errno.EACCES, errno.EPERM) and not _writable(dest.parent)):
            denied = exc.errno in (errno.EACCES, errno.EPERM)
            fix = "check the folder's permissions" if denied else "free some space"
            fix += " or choose a writable OUTPUT"
            raise OutputError(f"cannot write to {dest.parent} ({exc.strerror}); {fix}",
                              _denied_folder(dest.parent) if denied else None) from None
        raise FileError(str(dest), _write_problem(dest, exc)) from None
    return Saved(dest.stat().st_size, (time.perf_counter() - t0) * 1000.0, tuple(notes))


def size_problem(dest: Path, width: int, height: int) -> str | None:
    """Why an image of this size cannot be written in ``dest``'s format (None if it can)."""
    fmt = _PIL_FORMATS.get(dest.suffix.lower(), "PNG")
    limit = _MAX_SIDE.get(fmt)
    if limit and max(width, height) > limit:
        return f"{width}×{height} is over {fmt}'s limit of {limit} pixels a side; use --format png, or --max-size"
    return None


def _denied_folder(folder: Path) -> Path:
    """The folder that refused: ``folder``, or its first missing ancestor's existing parent."""
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return folder


def _write_problem(dest: Path, exc: OSError) -> str:
    """Why one output could not be written, with the fix."""
    if exc.errno == errno.ENAMETOOLONG:
        return (f"the output's name is too long for the file system ({len(os.fsencode(dest.name))} bytes); "
                "shorten the input's name or the --suffix")
    if exc.errno in (errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
        # mkdir over a file, or a folder where the output file goes.
        blocker = dest if dest.is_dir() else file_in_the_way(dest.parent)
        if blocker is not None:
            kind = "a folder" if blocker.is_dir() else "a file"
            return f"{blocker} is {kind} in the way of this output; rename or move it"
    return f"could not be written ({exc.strerror or exc}); check the output folder"


def _writable(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK)


T = TypeVar("T")
Outcome = Saved | FileError | OutputError


def _save(
    rgb: UInt8Array, dest: Path, opts: WriteOptions, alpha: Image.Image | None, icc: bytes | None,
    exif: bytes | None,
) -> Outcome:
    try:
        return save_image(rgb, dest, opts, alpha, icc, exif)
    except (FileError, OutputError) as exc:
        return exc


class WriterPool(Generic[T]):
    """Saves results on ``workers`` threads (0 = at once, on the caller's thread).

    Each result is submitted with a tag (what the caller needs to report it);
    :meth:`finished` hands back ``(tag, outcome)`` pairs in submission order,
    where the outcome is :class:`Saved`, or the :class:`FileError` /
    :class:`OutputError` that :func:`save_image` raised, or ``None`` for a
    tag queued with :meth:`passthrough`. At most ``depth``
    results wait to be written (their pixels are held until then), so memory
    stays bounded; :meth:`submit` blocks on the oldest when it is reached.

    Args:
        workers: encode/write threads; 0 = synchronous.
        depth: results allowed in flight (default: twice ``workers``).
    """

    def __init__(self, workers: int, depth: int = 0) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="animecli-save") if workers > 0 else None
        self._depth = max(1, depth or 2 * workers)
        self._pending: deque[tuple[T, Future[Outcome] | None]] = deque()
        self._done: list[tuple[T, Outcome | None]] = []

    def submit(
        self, tag: T, rgb: UInt8Array, dest: Path, opts: WriteOptions,
        alpha: Image.Image | None = None, icc: bytes | None = None, exif: bytes | None = None,
    ) -> None:
        """Queue one result (see :func:`save_image` for the arguments)."""
        if self._pool is None:
            self._done.append((tag, _save(rgb, dest, opts, alpha, icc, exif)))
            return
        while sum(1 for _, f in self._pending if f is not None) >= self._depth:
            self._pop()
        self._pending.append((tag, self._pool.submit(_save, rgb, dest, opts, alpha, icc, exif)))

    def passthrough(self, tag: T) -> None:
        """Queue a tag with nothing to write (outcome ``None``), to keep it in order with the rest."""
        if self._pending:
            self._pending.append((tag, None))
        else:
            self._done.append((tag, None))

    def _pop(self) -> None:
        tag, fut = self._pending.popleft()
        self._done.append((tag, None if fut is None else fut.result()))

    def finished(self, wait: bool = False) -> list[tuple[T, Outcome | None]]:
        """Outcomes ready so far, oldest first; with ``wait``, all of them."""
        while self._pending and (wait or self._pending[0][1] is None or self._pending[0][1].done()):
            self._pop()
        out, self._done = self._done, []
        return out

    def close(self) -> None:
        """Wait for the writes in flight (a write is never abandoned half-way) and stop the threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
