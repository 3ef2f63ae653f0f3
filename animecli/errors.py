"""One exception hierarchy; every message says what went wrong *and* how to fix it.

Each class carries the process exit code that :mod:`animecli.cli` turns it
into, so scripts can tell a usage/setup problem (2) from a failed file (1).
"""

from __future__ import annotations

from pathlib import Path


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (its type name when empty), cut to ``limit``:
    what a one-line error can quote of a library's multi-line message."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]


class AnimecliError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with when this escapes."""

    exit_code: int = 1


class UsageError(AnimecliError):
    """A bad option or argument (exit 2)."""

    exit_code = 2


class SetupError(AnimecliError):
    """The environment is not ready: no CUDA, missing optional dependency, etc. (exit 2)."""

    exit_code = 2


class WeightsError(SetupError):
    """Weights missing, unreadable, corrupt, of the wrong architecture or checksum (exit 2)."""


class DownloadError(SetupError):
    """A model download failed (exit 2)."""


class GraphError(SetupError):
    """onnxruntime could not load a compiled graph (a damaged cache file, say) (exit 2)."""


class LockedError(AnimecliError):
    """Another animecli run holds the output folder's lock (exit 3)."""

    exit_code = 3


class FileError(AnimecliError):
    """One input file could not be converted; the batch carries on.

    Attributes:
        path: the file concerned.
    """

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.reason = message


class OutputError(AnimecliError):
    """The output cannot be written at all (read-only or full disk): the run stops (exit 1).

    Attributes:
        denied_folder: set when permissions refused one folder (which may be a sub-folder
            of OUTPUT only: then only the files that go there fail).
    """

    exit_code = 1

    def __init__(self, message: str, denied_folder: Path | None = None) -> None:
        super().__init__(message)
        self.denied_folder = denied_folder
