"""Resume state: which outputs were made from which input, with which settings.

``OUTPUT/.animecli.state.jsonl`` gets one JSON line per converted file,
appended as soon as the output is saved::

    {"dst": "sub/a.png", "size": 12345, "mtime_ns": 1700000000000000000, "fp": "…", "sha256": null}

``dst`` is relative to the output folder; ``size`` and ``mtime_ns`` describe
the input when it was read; ``fp`` is the settings fingerprint (model digest,
max size, output format, quality, suffix, precision, and the backend if it is int8); ``sha256`` is the
input's content digest, recorded with ``--verify``. Later lines win.

On a rerun with ``--skip-existing`` (the default), an existing output is
skipped only when its line matches the input and the settings; otherwise it
is converted again (and replaced atomically). Without a state file (never
written, or deleted) an existing non-empty output is skipped, as before: so
deleting the file is always safe. A line that cannot be parsed (a crash
mid-append) is ignored. The file is compacted when it holds many
superseded lines.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TextIO

from animecli.atomic import atomic_write_bytes
from animecli.errors import OutputError, UsageError

STATE_NAME = ".animecli.state.jsonl"
_LOSSY = {".jpg", ".jpeg", ".webp"}
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Settings:
    """What decides an output's pixels and encoding (besides the input).

    Attributes:
        model_sha256: digest of the weights file.
        arch: architecture and its options, e.g. ``v2/1.0/align``.
        max_size: ``--max-size``.
        format: ``--format`` (``same`` included: the output extension is also part of the key).
        quality: ``--quality`` (counts only for JPEG/WebP outputs).
        suffix: ``--suffix``.
        precision: compute precision actually used (``float32``, ``float16``…).
        backend: the backend when it changes the output (``int8``); "" for the float
            backends, whose outputs agree (so switching between them redoes nothing).
        video: the video options that decide a video output (``VideoOptions.fingerprint``);
            counted for ``.mp4`` outputs only (issue 25).
    """

    model_sha256: str
    arch: str
    max_size: int
    format: str
    quality: int
    suffix: str
    precision: str
    backend: str = ""
    video: str = ""

    def fingerprint(self, dst: Path) -> str:
        """The fingerprint for an output at ``dst`` (quality is ignored for lossless formats)."""
        lossy = dst.suffix.lower() in _LOSSY
        parts = [
            "v1", self.model_sha256, self.arch, str(self.max_size), self.format,
            str(self.quality) if lossy else "-", self.suffix, self.precision,
        ]
        if self.backend:  # appended only when set, so fingerprints recorded before it existed still match
            parts.append(self.backend)
        if self.video and dst.suffix.lower() == ".mp4":  # issue 25: a video output (images never are .mp4)
            parts.append(self.video)
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Stamp:
    """What the input looked like when it was read.

    Attributes:
        size: bytes.
        mtime_ns: modification time.
        sha256: content digest (``--verify`` only).
    """

    size: int
    mtime_ns: int
    sha256: str | None = None


def stamp_of(path: Path, verify: bool) -> Stamp | None:
    """The input's stamp, or ``None`` if it cannot be read (the loader reports that)."""
    try:
        st = path.stat()
        digest = None
        if verify:
            h = hashlib.sha256()
            with path.open("rb") as fh:
                while chunk := fh.read(_CHUNK):
                    h.update(chunk)
            digest = h.hexdigest()
    except OSError:
        return None
    return Stamp(st.st_size, st.st_mtime_ns, digest)


class Verdict(str, Enum):
    """What to do with one job whose output may exist."""

    CONVERT = "convert"  # no output yet
    UP_TO_DATE = "up-to-date"  # recorded with this input and these settings
    UNRECORDED = "unrecorded"  # output exists, no record of it: skip (as without state)
    INPUT_CHANGED = "input-changed"
    SETTINGS_CHANGED = "settings-changed"
    NOT_VERIFIED = "not-verified"  # --verify, but no content digest was recorded


@dataclass(frozen=True)
class _Entry:
    size: int
    mtime_ns: int
    fp: str
    sha256: str | None


def _key(rel: str) -> str:
    return sys.intern(rel)


class RunState:
    """The state file of one output folder, loaded into a dict keyed by relative output path.

    Use only while holding the output folder's lock.

    Args:
        output: the output folder.
        verify: compare content digests instead of size and modification time.
    """

    def __init__(self, output: Path, verify: bool = False) -> None:
        self.output = output
        self.path = output / STATE_NAME
        if self.path.is_symlink():
            # Appending through a link would write JSON lines into whatever file it points at.
            raise UsageError(f"{self.path} is a symbolic link; animecli keeps its resume state in that file: "
                             "remove the link and rerun")
        self.verify = verify
        self.existed = self.path.is_file()
        self._entries: dict[str, _Entry] = {}
        self._fps: dict[str, str] = {}  # interned fingerprints: most entries share a few
        self._lines = 0
        self._fh: TextIO | None = None
        # A crash mid-append leaves a last line without its newline: the next line must not be
        # glued onto it (the pair would parse as neither, and the new record would be lost).
        self._torn_end = False
        if self.existed:
            self._load()

    def _load(self) -> None:
        try:
            with self.path.open(encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    self._lines += 1
                    self._torn_end = not line.endswith("\n")
                    try:
                        d = json.loads(line)
                        self._entries[_key(str(d["dst"]))] = _Entry(
                            int(d["size"]), int(d["mtime_ns"]), self._fps.setdefault(d["fp"], str(d["fp"])),
                            str(d["sha256"]) if d.get("sha256") else None,
                        )
                    except (ValueError, KeyError, TypeError, OverflowError):  # OverflowError: int(1e400)
                        continue  # a torn last line after a crash, or garbage: ignore it
        except OSError:
            self.existed = False  # unreadable: behave as if it were missing
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def rel(self, dst: Path) -> str:
        """``dst`` relative to the output folder, with ``/`` separators."""
        try:
            return dst.relative_to(self.output).as_posix()
        except ValueError:
            return dst.as_posix()

    def verdict(self, dst: Path, stamp: Stamp | None, fingerprint: str | None) -> Verdict:
        """Whether the output at ``dst`` is up to date.

        Args:
            dst: the output file.
            stamp: the input's stamp now (``None``: could not stat it; the loader will report that).
            fingerprint: the settings' fingerprint for ``dst``; ``None`` = unknown (``--dry-run``),
                so only the input is compared.
        """
        try:
            st = dst.stat()
        except OSError:
            return Verdict.CONVERT
        if not stat.S_ISREG(st.st_mode) or st.st_size <= 0:
            return Verdict.CONVERT  # empty, or a folder in the way: not an output (the writer says why)
        entry = self._entries.get(self.rel(dst))
        if entry is None:
            return Verdict.UNRECORDED
        if stamp is None:
            return Verdict.INPUT_CHANGED
        if self.verify:
            if entry.sha256 is None:
                return Verdict.NOT_VERIFIED
            if entry.sha256 != stamp.sha256:
                return Verdict.INPUT_CHANGED
        elif (entry.size, entry.mtime_ns) != (stamp.size, stamp.mtime_ns):
            return Verdict.INPUT_CHANGED
        if fingerprint is not None and entry.fp != fingerprint:
            return Verdict.SETTINGS_CHANGED
        return Verdict.UP_TO_DATE

    def record(self, dst: Path, stamp: Stamp, fingerprint: str) -> None:
        """Append the line for a freshly saved output.

        Raises:
            OutputError: the state file cannot be written (the output folder became unwritable).
        """
        rel = self.rel(dst)
        line = json.dumps({
            "dst": rel, "size": stamp.size, "mtime_ns": stamp.mtime_ns, "fp": fingerprint, "sha256": stamp.sha256,
        })  # ASCII only (ensure_ascii), so even undecodable file names round-trip
        try:
            if self._fh is None:
                # O_NOFOLLOW: a link made after the check above is refused, not followed.
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                self._fh = os.fdopen(os.open(self.path, flags, 0o644), "a", encoding="ascii")
            if self._torn_end:
                self._fh.write("\n")
                self._torn_end = False
            self._fh.write(line + "\n")
            self._fh.flush()
        except OSError as exc:
            raise OutputError(
                f"cannot write the resume state {self.path} ({exc.strerror or exc}); "
                "free some space or make the output folder writable"
            ) from None
        self._entries[_key(rel)] = _Entry(stamp.size, stamp.mtime_ns, self._fps.setdefault(fingerprint, fingerprint),
                                          stamp.sha256)
        self._lines += 1

    def compact(self) -> None:
        """Rewrite the file without superseded lines, if they are most of it. Best effort."""
        if self._fh is not None or self._lines <= 2 * len(self._entries) + 1000:
            return
        lines = (
            json.dumps({"dst": k, "size": e.size, "mtime_ns": e.mtime_ns, "fp": e.fp, "sha256": e.sha256}) + "\n"
            for k, e in self._entries.items()
        )
        with contextlib.suppress(OSError):
            atomic_write_bytes(self.path, "".join(lines).encode("ascii"))
            self._lines = len(self._entries)

    def close(self) -> None:
        """Flush and close the file (to disk: ``fsync``)."""
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()
            self._fh = None
