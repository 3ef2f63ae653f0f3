"""Atomic file writes: a temporary file in the destination folder, then ``os.replace``.

A reader (or a later run) sees either the old file or the complete new one,
never a truncated one, even if the process is killed mid-write. Also: which file
stands where a folder has to be (the writer, the report and the model cache name it).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

TEMP_PREFIX = ".animecli-"
TEMP_SUFFIX = ".part"


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; outputs should get the usual 0666 & ~umask like any new file.
_FILE_MODE = 0o666 & ~_read_umask()


def remove_stale_temps(folder: Path) -> int:
    """Delete temporary files left in ``folder`` by a run that was killed mid-write.

    Only safe while holding the output folder's lock (no other run is writing there).

    Returns:
        How many were removed.
    """
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for e in entries:
        if e.name.startswith(TEMP_PREFIX) and e.name.endswith(TEMP_SUFFIX):
            with contextlib.suppress(OSError):
                os.unlink(e.path)
                removed += 1
    return removed


@contextlib.contextmanager
def atomic_open(dest: Path) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``dest``; on success it replaces ``dest``.

    On any exception the temporary file is removed and ``dest`` is untouched.
    """
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fchmod(fh.fileno(), _FILE_MODE)
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(dest: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(fh)`` on a temporary file and move it onto ``dest`` when it returns."""
    with atomic_open(dest) as fh:
        write(fh)


def atomic_write_bytes(dest: Path, data: bytes) -> None:
    """Write ``data`` to ``dest`` atomically."""
    with atomic_open(dest) as fh:
        fh.write(data)


def file_in_the_way(folder: Path) -> Path | None:
    """What stops ``folder`` from being made: its nearest existing ancestor-or-self, if that
    is not a folder (a file, or a dangling symbolic link); ``None`` when it is one."""
    for candidate in (folder, *folder.parents):
        # lexists: a dangling symlink is in the way too, though exists() says it is absent.
        if os.path.lexists(candidate):
            return None if candidate.is_dir() else candidate
    return None


def unwritable_file(path: Path) -> str | None:
    """Why a file could not be written at ``path`` (``None``: it can), found before the work that
    would produce it: a folder there, a file in the way of its folder, or a folder that refuses
    writes. Creates the missing folders on the way (the write would).
    """
    if path.is_dir():
        return "is a folder; give a file name"
    blocker = file_in_the_way(path.parent)
    if blocker is not None:
        return f"{blocker} is a file, not a folder"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass  # a real write: permissions alone miss read-only mounts (and root ignores them)
    except OSError as exc:
        return f"cannot write in {path.parent} ({exc.strerror or exc})"
    return None
