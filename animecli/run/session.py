"""One conversion run's state, shared by the local and the Ray engines: counts, report, resume
state and callbacks (:class:`Session`), and the report rows both engines build alike."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from animecli.atomic import remove_stale_temps
from animecli.io.discovery import Discovery, Found, Ignored, Job, Problem
from animecli.io.loader import Loaded
from animecli.options import Backend, ConvertOptions, Existing
from animecli.run.report import FileRecord, ReportWriter, Status, Summary, peak_rss_mb
from animecli.run.resume import RunState, Settings, Stamp, Verdict, stamp_of

RecordFn = Callable[[FileRecord], None]


@dataclass(frozen=True)
class RunInfo:
    """What the run uses, announced before the first file."""

    model: str
    device: str
    precision: str
    backend: str
    warning: str = ""  # e.g. the compiled model could not be cached
    licence: str = ""  # the weights' licence, said with the model (AnimeGAN weights: non-commercial)


@dataclass(frozen=True)
class Skip:
    """An up-to-date (or unrecorded) output: the job is reported, never decoded."""

    job: Job
    reason: str


def _size(wh: tuple[int, int]) -> str:
    return f"{wh[0]}×{wh[1]}" if wh[0] else ""


def load_failure_record(got: Loaded) -> FileRecord:
    """The record of an image that could not be decoded (``got.error`` is set)."""
    return FileRecord(str(got.job.src), str(got.job.dst), Status.FAILED, got.error or "unreadable",
                      load_ms=got.load_ms, notes="; ".join(got.notes))


def inference_record(it: Loaded, infer_ms: float, gpu_peak_mb: float, batch_note: str) -> FileRecord:
    """The record of an image the engine has run, before its output is written.

    Its status is FAILED until the writer reports the output saved.

    Args:
        it: the loaded image.
        infer_ms: its share of the batch's inference time.
        gpu_peak_mb: the batch's GPU memory peak (0 on the CPU).
        batch_note: how the batch ran (tiled, retried alone …), or "".
    """
    return FileRecord(
        str(it.job.src), str(it.job.dst), Status.FAILED,
        input_size=_size(it.original_size), processed_size=_size(it.processed_size),
        load_ms=it.load_ms, infer_ms=infer_ms, gpu_peak_mb=gpu_peak_mb,
        notes="; ".join(([it.job.note] if it.job.note else []) + it.notes + ([batch_note] if batch_note else [])),
    )


_SKIP_REASON = {
    Verdict.UP_TO_DATE: "up to date: made from this input with these settings (use --overwrite to redo)",
    Verdict.UNRECORDED: ("output exists, with no record of animecli making it (not in the resume state): "
                         "left alone; --overwrite replaces it"),
}
# --dry-run knows no settings yet (it loads no model): the input is compared, the settings are not.
_DRY_UP_TO_DATE = "output exists, made from this input (a real run also compares the settings)"
_REDO_NOTE = {
    Verdict.INPUT_CHANGED: "input changed since its output was made: converted again",
    Verdict.SETTINGS_CHANGED: "settings changed since its output was made: converted again",
    Verdict.NOT_VERIFIED: "no content digest recorded for --verify: converted again",
}


class Session:
    """State of one conversion run (counts, report, callbacks, resume state); both engines drive one."""

    def __init__(self, opts: ConvertOptions, on_record: RecordFn | None,
                 only: Callable[[Path], bool] | None = None) -> None:
        self.opts = opts
        self.only = only  # animecli watch: the files ready to convert
        self.on_record = on_record
        self.summary = Summary()
        self.report = ReportWriter(opts.report) if opts.report else None
        self.state = RunState(opts.output, opts.write.verify)
        self.settings: Settings | None = None  # known once the model and engine are ready
        self.stamps: dict[Path, Stamp] = {}  # inputs' stamps, from planning until their output is saved

    def emit(self, rec: FileRecord) -> None:
        self.summary.add(rec)
        if self.report:
            self.report.add(rec)
        if self.on_record:
            self.on_record(rec)

    def plan(self, keep_stamps: bool) -> Iterator[Found | Skip]:
        """Discovery, with up-to-date outputs turned into skips (they are never decoded).

        Args:
            keep_stamps: remember each input's stamp for :meth:`saved` (real runs; not --dry-run).
        """
        w = self.opts.write
        cleaned: set[Path] = set()
        for item in Discovery(self.opts.inputs, self.opts.output, self.opts.recursive, w.format, w.suffix,
                              self.opts.hidden):
            if not isinstance(item, Job):
                yield item
                continue
            if self.only is not None and not self.only(item.src):
                continue  # animecli watch: not ready yet (still growing), or already handled
            if keep_stamps and item.dst.parent not in cleaned:
                # A run killed mid-write (SIGKILL, power cut) leaves its temp file behind; we hold
                # the lock, so any temp file in a folder we write to is stale.
                cleaned.add(item.dst.parent)
                remove_stale_temps(item.dst.parent)
            stamp = stamp_of(item.src, w.verify)
            verdict = Verdict.CONVERT
            if w.existing is Existing.SKIP:
                fp = self.settings.fingerprint(item.dst) if self.settings else None
                verdict = self.state.verdict(item.dst, stamp, fp)
            if verdict in _SKIP_REASON:
                dry = verdict is Verdict.UP_TO_DATE and self.settings is None  # no fingerprint compared
                yield Skip(item, _DRY_UP_TO_DATE if dry else _SKIP_REASON[verdict])
                continue
            if verdict in _REDO_NOTE:
                item = replace(item, note="; ".join(filter(None, [item.note, _REDO_NOTE[verdict]])))
            if keep_stamps and stamp is not None:
                self.stamps[item.dst] = stamp
            yield item

    def use_settings(self, model_sha256: str, arch_key: str, precision: str, backend: Backend) -> None:
        """Fix what every output's resume fingerprint holds, once the model and engine are known.

        Both engines key their outputs alike, so that either skips what the other made.
        """
        w = self.opts.write
        self.settings = Settings(
            model_sha256, arch_key, self.opts.load.max_size, w.format.value, w.quality, w.suffix, precision,
            # Float backends agree to ~1e-5 (the same 8-bit output); int8 changes the pixels.
            backend="int8" if backend is Backend.INT8 else "",
            video=self.opts.video.fingerprint(),  # issue 25: counts for video outputs only
        )
        self.state.compact()

    def saved(self, job: Job) -> None:
        """Record a freshly saved output in the resume state."""
        stamp = self.stamps.pop(job.dst, None)
        if stamp is not None and self.settings is not None:
            self.state.record(job.dst, stamp, self.settings.fingerprint(job.dst))

    def passthrough_record(self, item: object) -> FileRecord | None:
        """The record of a skip or an unreadable path (``None`` for a non-image, which is only counted)."""
        if isinstance(item, Ignored):
            self.summary.ignored += 1
        elif isinstance(item, Skip):
            return FileRecord(str(item.job.src), str(item.job.dst), Status.SKIPPED, item.reason)
        elif isinstance(item, Problem):
            return FileRecord(str(item.src), "", Status.FAILED, item.reason)
        return None

    def passthrough(self, item: object) -> None:
        """Record a non-image, a skip or an unreadable path."""
        rec = self.passthrough_record(item)
        if rec is not None:
            self.emit(rec)

    def finish(self, t0: float) -> Summary:
        self.state.close()
        self.summary.elapsed_s = time.perf_counter() - t0
        self.summary.peak_rss_mb = peak_rss_mb()
        if self.report:
            try:
                self.report.finish(self.summary)
            except OSError as exc:  # checked writable at the start; a disk can still fill up
                self.summary.fatal = self.summary.fatal or (
                    f"could not write the report {self.report.path} ({exc.strerror or exc}); the outputs are written")
            finally:
                self.report.close()
        return self.summary
