"""Per-file records, the run summary, and the machine-readable report (JSON, CSV or JSON Lines).

Nothing here prints: the CLI renders records as they arrive.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import resource
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from enum import Enum
from pathlib import Path
from typing import BinaryIO

import psutil

from animecli.atomic import atomic_write, unwritable_file
from animecli.errors import UsageError


class Status(str, Enum):
    """Outcome of one file."""

    CONVERTED = "converted"
    SKIPPED = "skipped"
    FAILED = "failed"
    PLANNED = "planned"  # --dry-run


@dataclass
class FileRecord:
    """One row of the report.

    Attributes:
        src, dst: input and output paths.
        status: converted / skipped / failed / planned.
        reason: why it failed or was skipped.
        input_size: "W×H" after EXIF rotation.
        processed_size: "W×H" fed to the model.
        load_ms, infer_ms, save_ms: stage times (infer is the batch's time divided among its images).
        rss_mb: process resident memory after this file.
        gpu_peak_mb: peak CUDA memory of its batch.
        notes: remarks (resized, rotated, alpha kept, collisions …).
        frames, fps, ms_per_frame, peak_rss_mb: videos only (issue 25): frames written, the
            source frame rate, wall time per frame, and the highest resident memory seen while
            converting it (0 for images).
    """

    src: str
    dst: str
    status: Status
    reason: str = ""
    input_size: str = ""
    processed_size: str = ""
    load_ms: float = 0.0
    infer_ms: float = 0.0
    save_ms: float = 0.0
    rss_mb: float = 0.0
    gpu_peak_mb: float = 0.0
    notes: str = ""
    # Videos only (animecli.run.video); 0 for images.
    frames: int = 0
    fps: float = 0.0
    ms_per_frame: float = 0.0
    peak_rss_mb: float = 0.0

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (status as its string, times rounded to 0.1 ms)."""
        d = asdict(self)
        d["status"] = self.status.value
        for k in ("load_ms", "infer_ms", "save_ms", "rss_mb", "gpu_peak_mb", "ms_per_frame", "peak_rss_mb"):
            d[k] = round(float(d[k]), 1)
        return d


FIELDS = [f.name for f in fields(FileRecord)]


@dataclass
class Summary:
    """Totals for a run."""

    converted: int = 0
    skipped: int = 0
    failed: int = 0
    planned: int = 0  # --dry-run; not part of the report's summary block
    ignored: int = 0
    elapsed_s: float = 0.0
    peak_rss_mb: float = 0.0
    model: str = ""
    device: str = ""
    precision: str = ""
    backend: str = ""
    licence: str = ""  # the weights' licence (the manifest entry's; non-commercial for AnimeGAN weights)
    interrupted: bool = False
    fatal: str = ""

    @property
    def images_per_s(self) -> float:
        """Converted images per second of wall time."""
        return self.converted / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def add(self, rec: FileRecord) -> None:
        """Count a record."""
        if rec.status is Status.CONVERTED:
            self.converted += 1
        elif rec.status is Status.SKIPPED:
            self.skipped += 1
        elif rec.status is Status.FAILED:
            self.failed += 1
        elif rec.status is Status.PLANNED:
            self.planned += 1

    def to_json(self) -> dict[str, object]:
        """The summary block of the JSON report."""
        return {
            "converted": self.converted,
            "skipped": self.skipped,
            "failed": self.failed,
            "ignored_non_images": self.ignored,
            "elapsed_s": round(self.elapsed_s, 3),
            "images_per_s": round(self.images_per_s, 3),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "model": self.model,
            "device": self.device,
            "precision": self.precision,
            "backend": self.backend,
            "licence": self.licence,
            "interrupted": self.interrupted,
            "fatal": self.fatal,
        }


def rss_mb() -> float:
    """Current resident set size of this process, MiB."""
    return float(psutil.Process().memory_info().rss) / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (kernel's high-water mark)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return float(peak) / (2**20 if sys.platform == "darwin" else 2**10)


_REPORT_FORMATS = {".json": "json", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def report_format(path: Path) -> str:
    """``json``, ``csv`` or ``jsonl`` from the file extension (default json)."""
    return _REPORT_FORMATS.get(path.suffix.lower(), "json")


def check_report_path(path: Path) -> None:
    """Refuse a ``--report`` path that could not be written, before the run converts anything.

    Raises:
        UsageError: a folder, an extension that names no report format, or a folder that
            cannot be created or written to.
    """
    if path.is_dir():
        raise UsageError(f"--report {path} is a folder; give a file name ending in .json, .csv or .jsonl")
    if path.name.startswith(".animecli"):
        raise UsageError(f"--report {path}: names starting with .animecli are animecli's own files "
                         "(resume state, lock); choose another name")
    if path.suffix.lower() not in _REPORT_FORMATS:
        raise UsageError(f"--report {path}: the extension picks the format; end the name in .json, .csv or .jsonl")
    problem = unwritable_file(path)  # a file in the way of its folder, or a folder that refuses writes
    if problem:
        raise UsageError(f"--report {path}: {problem}; choose a writable place for the report")


class ReportWriter:
    """Collects records for ``--report PATH`` without holding them in memory.

    Rows are spooled to a temporary JSON Lines file as they arrive (memory
    stays flat over 100,000 files); :meth:`finish` streams them into the final
    report, written atomically in the format the extension asks for.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.format = report_format(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # File names that are not valid UTF-8 reach us as lone surrogates (PEP 383); they are written as
        # JSON escapes (\udcXX), which json.loads and os.fsencode turn back into the original bytes.
        self._spool = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="backslashreplace")
        self._spool_error: OSError | None = None

    def add(self, rec: FileRecord) -> None:
        """Append one row. A spool that cannot be written (a full TMPDIR, a file size limit) does
        not stop the run: :meth:`finish` raises the error, after the outputs are written."""
        if self._spool_error is not None:
            return
        try:
            self._spool.write(json.dumps(rec.to_json(), ensure_ascii=False) + "\n")
        except OSError as exc:
            self._spool_error = exc

    def _rows(self) -> Iterator[dict[str, object]]:
        if self._spool_error is not None:
            raise self._spool_error
        self._spool.flush()
        self._spool.seek(0)
        for line in self._spool:
            yield json.loads(line)
        self._spool.seek(0, io.SEEK_END)

    def finish(self, summary: Summary) -> None:
        """Write the report file (may be called again later; the last call wins).

        Raises:
            OSError: the report or its spool could not be written.
        """

        def write(fh: BinaryIO) -> None:
            text = io.TextIOWrapper(fh, encoding="utf-8", errors="backslashreplace", newline="")
            if self.format == "csv":
                w = csv.DictWriter(text, fieldnames=FIELDS)
                w.writeheader()
                for row in self._rows():
                    w.writerow(row)
            elif self.format == "jsonl":
                for row in self._rows():
                    text.write(json.dumps(row, ensure_ascii=False) + "\n")
                text.write(json.dumps({"summary": summary.to_json()}) + "\n")
            else:
                text.write('{\n  "schema": 1,\n  "summary": ')
                text.write(json.dumps(summary.to_json(), indent=2).replace("\n", "\n  "))
                text.write(',\n  "files": [')
                for i, row in enumerate(self._rows()):
                    text.write(("," if i else "") + "\n    " + json.dumps(row, ensure_ascii=False))
                text.write("\n  ]\n}\n")
            text.flush()
            text.detach()

        atomic_write(self.path, write)

    def close(self) -> None:
        """Drop the spool."""
        with contextlib.suppress(OSError):  # its buffer may not flush (the error finish reported)
            self._spool.close()
