"""The compiled-graph cache: ONNX graphs on disk (under the cache folder) and the few made or
read in this process, and the one place that discards a damaged graph from both. No torch:
the torch-free engine discards through here too."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from pathlib import Path

from animecli.atomic import atomic_write_bytes
from animecli.inference.ort_session import nonempty_file

# Graphs made or read in this process, by file name (which carries the weights' digest): a
# second engine for the same model (tests, the bench, library users) skips the disk and export.
_MEMO: dict[str, bytes] = {}
_MEMO_SIZE = 4


_UNCACHED: list[str] = []  # cache folders that refused a compiled graph, in this process


def cache_warning() -> str:
    """A one-line warning if a compiled graph could not be cached ('' if all were): every later
    run then compiles the model again (seconds, and hundreds of MB, each time)."""
    if not _UNCACHED:
        return ""
    where = _UNCACHED[-1]
    _UNCACHED.clear()  # said once (per run)
    return (f"could not cache the compiled model in {where}; every run compiles it again: "
            "make that folder writable or set ANIMECLI_HOME to a writable folder")


def cached(path: Path, make: Callable[[], bytes]) -> bytes:
    """Read ``path``, or make the bytes and store them there (best effort: an unwritable
    cache only costs redoing the work next time).

    Bytes remembered from earlier in this process are written to ``path`` if it is missing
    (the cache folder may have changed, been cleaned, or hold an empty file): the torch-free
    engine of a later run finds its graph only on disk (animecli.inference.ort_engine).
    """
    data = _MEMO.get(path.name, b"")
    if not data:
        with contextlib.suppress(OSError):
            data = path.read_bytes()
    made = not data
    if made:
        data = make()
    if made or not nonempty_file(path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, data)
        except OSError as exc:
            _UNCACHED.append(f"{path.parent} ({exc.strerror or exc})")
    if len(_MEMO) >= _MEMO_SIZE and path.name not in _MEMO:
        _MEMO.pop(next(iter(_MEMO)))
    _MEMO[path.name] = data
    return data


def remembered(path: Path) -> bool:
    """Whether this process holds ``path``'s graph in memory."""
    return path.name in _MEMO


def forget_all() -> None:
    """Drop the in-memory graphs (what a new process starts with)."""
    _MEMO.clear()


def discard(files: Iterable[Path]) -> None:
    """Forget and delete cached graphs (onnxruntime refused them: damaged on disk)."""
    for path in files:
        _MEMO.pop(path.name, None)
        with contextlib.suppress(OSError):
            path.unlink()
