"""The pipeline: discovery → streaming loader → engine → writer, with a report of every file.

``run_convert`` is what ``animecli convert`` calls. It never prints and
never exits: it reports through callbacks and returns a :class:`Summary`,
from which the CLI derives the exit code.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from animecli.atomic import remove_stale_temps
from animecli.errors import AnimecliError, FileError, GraphError, OutputError
from animecli.io.discovery import Discovery, Found, Ignored, Job, Problem, check_inputs
from animecli.io.loader import EMPTY_FILE, Loaded, StreamingLoader
from animecli.lock import OutputLock
from animecli.options import Backend, ConvertOptions, EngineKind, Existing
from animecli.report import FileRecord, ReportWriter, Status, Summary, check_report_path, peak_rss_mb, rss_mb
from animecli.state import RunState, Settings, Stamp, Verdict, stamp_of

if TYPE_CHECKING:
    from animecli.inference.torch_engine import Engine
    from animecli.weights.resolve import LoadedModel

RecordFn = Callable[[FileRecord], None]


@dataclass(frozen=True)
class RunInfo:
    """What the run uses, announced before the first file."""

    model: str
    device: str
    precision: str
    backend: str
    warning: str = ""  # e.g. the compiled model could not be cached


@dataclass(frozen=True)
class _Skip:
    job: Job
    reason: str


def _size(wh: tuple[int, int]) -> str:
    return f"{wh[0]}×{wh[1]}" if wh[0] else ""


def _only_a_subfolder(exc: OutputError, output: Path) -> bool:
    """Permissions refused a sub-folder of OUTPUT, not OUTPUT itself: the files that go there
    fail and the rest of the run carries on (OUTPUT itself was checked when it was locked)."""
    folder = exc.denied_folder
    if folder is None:
        return False
    try:
        folder, root = folder.resolve(), output.resolve()
    except OSError:
        return False
    return folder != root and folder.is_relative_to(root)


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:  # gone or unreadable: the real run says which
        return False


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


class _Run:
    """State of one conversion run (counts, report, callbacks, resume state)."""

    def __init__(self, opts: ConvertOptions, on_record: RecordFn | None) -> None:
        self.opts = opts
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

    def plan(self, keep_stamps: bool) -> Iterator[Found | _Skip]:
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
                yield _Skip(item, _DRY_UP_TO_DATE if dry else _SKIP_REASON[verdict])
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
        elif isinstance(item, _Skip):
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


def run_convert(
    opts: ConvertOptions,
    on_record: RecordFn | None = None,
    on_start: Callable[[RunInfo], None] | None = None,
    stop: threading.Event | None = None,
) -> Summary:
    """Convert everything ``opts`` names.

    Args:
        opts: the run's options.
        on_record: called with each file's record as soon as it is final.
        on_start: called once the model is loaded, before the first file.
        stop: when set (e.g. by SIGINT), the run finishes the batch in hand,
            writes the report and returns with ``summary.interrupted``.

    Returns:
        The summary; ``summary.fatal`` is set if the output became unwritable.

    Raises:
        UsageError: an input folder is the output folder, no input exists, or
            the report cannot be written.
        LockedError: another run is writing to the same output folder.
        AnimecliError: setup problems (weights, device, options) before any file is touched.
    """
    t0 = time.perf_counter()
    if opts.report:
        check_report_path(opts.report)
    locked = False  # once the run exists (under the lock) it writes its own report, with its records
    try:
        check_inputs(opts.inputs, opts.output)
        if opts.dry_run:
            run = _Run(opts, on_record)
            for item in run.plan(keep_stamps=False):
                if isinstance(item, Job) and _is_empty(item.src):
                    # A stat, not a decode: --dry-run opens no image, but a zero-byte file cannot convert.
                    run.emit(FileRecord(str(item.src), str(item.dst), Status.FAILED, EMPTY_FILE))
                elif isinstance(item, Job):
                    run.emit(FileRecord(str(item.src), str(item.dst), Status.PLANNED, notes=item.note))
                else:
                    run.passthrough(item)
            return run.finish(t0)

        with OutputLock(opts.output):  # before anything reads the resume state or writes an output
            run = _Run(opts, on_record)
            locked = True
            try:
                if opts.engine_kind is EngineKind.RAY:
                    from animecli.ray_engine import convert_on_ray  # Ray only when asked for (an optional extra)

                    return convert_on_ray(run, on_start, stop, t0)
                return _convert(run, opts, on_start, stop, t0)
            except AnimecliError as exc:
                run.summary.fatal = run.summary.fatal or str(exc)
                run.finish(t0)  # under the lock: it also closes the resume state
                raise
    except AnimecliError as exc:
        # A run that fails before it starts (no model, a lock held, an unwritable OUTPUT) writes its
        # report too: a previous run's, left at the same path, would tell a monitor all went well.
        if opts.report and not locked:
            failed = Summary(fatal=str(exc), elapsed_s=time.perf_counter() - t0)
            with contextlib.suppress(OSError):  # the error being raised matters more than its report
                report = ReportWriter(opts.report)
                try:
                    report.finish(failed)
                finally:
                    report.close()
        raise


def _cache_warning() -> str:
    from animecli.backends import cache_warning  # imported with the PyTorch engine only

    return cache_warning()


def _torch_engine(opts: ConvertOptions) -> tuple[LoadedModel, Engine]:
    """The model loaded in PyTorch and its engine (imports torch)."""
    from animecli.inference.torch_engine import Engine
    from animecli.weights.resolve import load_generator

    loaded = load_generator(opts.model)
    engine = Engine(loaded.model, loaded.input_multiple, opts.engine, loaded.spec.arch.value,
                    weights_sha256=loaded.sha256, arch_key=loaded.spec.key)
    return loaded, engine


def _convert(
    run: _Run,
    opts: ConvertOptions,
    on_start: Callable[[RunInfo], None] | None,
    stop: threading.Event | None,
    t0: float,
) -> Summary:
    """The non-dry run, with the output folder locked."""
    # Imported here so that `animecli --help` and --dry-run never pay for onnxruntime or numpy;
    # torch is imported only if the run needs it (see animecli.inference.ort_engine).
    from animecli.inference.ort_engine import BatchRunner, OrtEngine, discard, plan_lean
    from animecli.io.writer import Saved, WriterPool, size_problem

    plan = plan_lean(opts.model, opts.engine)
    engine: BatchRunner
    lean: OrtEngine | None = None
    if plan is not None:
        try:
            lean = OrtEngine(plan, opts.engine, lambda: _torch_engine(opts)[1])
        except GraphError:  # a damaged cache file: the PyTorch engine compiles the model again
            discard(plan)
    if plan is not None and lean is not None:
        engine = lean
        name, digest, spec = plan.weights.name, plan.weights.sha256, plan.spec
        device, precision, backend = lean.device, lean.precision_name, lean.backend
    else:
        loaded_model, torch_engine = _torch_engine(opts)
        engine = torch_engine
        name, digest, spec = loaded_model.name, loaded_model.sha256, loaded_model.spec
        device, precision, backend = str(torch_engine.device), torch_engine.precision_name, torch_engine.backend
    s = run.summary
    s.model, s.device, s.backend, s.precision = name, device, backend.value, precision
    if on_start:
        on_start(RunInfo(s.model, s.device, s.precision, s.backend, "" if lean is not None else _cache_warning()))
    w = opts.write
    run.use_settings(digest, spec.key, s.precision, backend)

    batch_size = max(1, opts.engine.batch_size)
    pending: dict[tuple[int, int], list[tuple[int, Loaded]]] = {}
    # Every record goes through the writer's queue, so the report lists files in the order they
    # were found even though outputs are written in the background.
    writer: WriterPool[tuple[int, Loaded | None, FileRecord]] = WriterPool(
        w.workers, depth=max(2 * w.workers, batch_size))
    # Records are numbered as files arrive and emitted in that order: with --batch-size N, images
    # of one size run together, so results can finish out of order (at most the batch-mates wait).
    arrived = itertools.count()
    finished: list[tuple[int, FileRecord]] = []  # a heap of final records not yet emitted
    next_seq = [0]

    def emit_in_order(everything: bool = False) -> None:
        while finished and (everything or finished[0][0] == next_seq[0]):
            seq, rec = heapq.heappop(finished)
            next_seq[0] = seq + 1
            run.emit(rec)

    def report_saved(wait: bool = False) -> None:
        """Emit the records of results the writer has finished with (in the order the files arrived)."""
        for (seq, it, rec), outcome in writer.finished(wait):
            if outcome is None or it is None:
                pass  # nothing was written for it: the record is final as it is
            elif isinstance(outcome, Saved):
                rec.status, rec.save_ms = Status.CONVERTED, outcome.save_ms
                try:
                    run.saved(it.job)
                except OutputError as exc:  # the output is written; the resume state could not be
                    s.fatal = s.fatal or str(exc)
                if outcome.notes:
                    rec.notes = "; ".join(filter(None, [rec.notes, *outcome.notes]))
            else:
                rec.reason = outcome.reason if isinstance(outcome, FileError) else str(outcome)
                if isinstance(outcome, OutputError) and not _only_a_subfolder(outcome, opts.output):
                    s.fatal = s.fatal or str(outcome)
            if it is not None:
                rec.rss_mb = rss_mb()  # after the write: what converting this file left resident
            heapq.heappush(finished, (seq, rec))
        emit_in_order()

    def flush(key: tuple[int, int]) -> None:
        items = pending.pop(key)
        result = engine.run_batch([it.rgb for _, it in items if it.rgb is not None])
        share = result.infer_ms / len(items)
        for (seq, it), out, err in zip(items, result.images, result.errors, strict=False):
            rec = inference_record(it, share, result.gpu_peak_mb, result.note)
            if out is None:
                rec.reason = err or "inference failed"
                rec.rss_mb = rss_mb()
                writer.passthrough((seq, None, rec))
            else:
                writer.submit((seq, it, rec), out, it.job.dst, opts.write, it.alpha, it.icc, it.exif)
                it.rgb = None  # the input's pixels are no longer needed while the output waits
        del items, result  # drop the batch's tensors before the next one is formed
        report_saved()

    try:
        try:
            with StreamingLoader(run.plan(keep_stamps=True), opts.load) as loader:
                for got in loader:
                    if s.fatal:
                        break  # the output became unwritable: every later file would fail the same way
                    if not isinstance(got, Loaded):
                        rec = run.passthrough_record(got)
                        if rec is not None:
                            writer.passthrough((next(arrived), None, rec))
                            report_saved()
                        continue
                    if got.error is None:
                        # Known before the model runs: an output too large for its format.
                        got.error = size_problem(got.job.dst, *got.processed_size)
                    if got.error is not None:
                        run.stamps.pop(got.job.dst, None)
                        writer.passthrough((next(arrived), None, load_failure_record(got)))
                        report_saved()
                        continue
                    key = got.processed_size
                    seq = next(arrived)
                    pending.setdefault(key, []).append((seq, got))
                    if len(pending[key]) >= batch_size:
                        flush(key)
                    elif sum(len(v) for v in pending.values()) >= 2 * batch_size:
                        flush(max(pending, key=lambda k: len(pending[k])))  # bound what waits for a partner
                    if pending:
                        # An image of a size no other shares would wait for a partner to the end of the
                        # run, holding back every later record (emitted in arrival order): after 2×N
                        # arrivals it runs in a smaller batch.
                        oldest = min(pending, key=lambda k: pending[k][0][0])
                        if seq - pending[oldest][0][0] >= 2 * batch_size:
                            flush(oldest)
                    if stop is not None and stop.is_set():
                        s.interrupted = True
                        break
                if not s.interrupted and not s.fatal:
                    for key in list(pending):
                        flush(key)
        except OutputError as exc:
            s.fatal = s.fatal or str(exc)
        finally:
            report_saved(wait=True)  # outputs already computed are written, even when interrupted
            writer.close()
            emit_in_order(everything=True)  # after a stop, images that were never run leave gaps
    except KeyboardInterrupt:
        # A second Ctrl-C/SIGTERM aborts at once: the report still tells what was done (a
        # previous run's report must not stand in for this one).
        s.interrupted = True
        run.finish(t0)
        raise
    return run.finish(t0)
