"""``animecli convert`` as a function: check the inputs, take the output folder's lock, and hand
the run to the local engine (:mod:`animecli.run.local`) or to Ray (:mod:`animecli.run.ray`).

``run_convert`` is what ``animecli convert`` calls. It never prints and
never exits: it reports through callbacks and returns a :class:`Summary`,
from which the CLI derives the exit code.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from animecli.errors import AnimecliError
from animecli.io.discovery import Job, check_inputs
from animecli.io.loader import EMPTY_FILE
from animecli.options import ConvertOptions, EngineKind
from animecli.run.local import convert_local
from animecli.run.lock import OutputLock
from animecli.run.report import FileRecord, ReportWriter, Status, Summary, check_report_path
from animecli.run.session import RecordFn, RunInfo, Session

if TYPE_CHECKING:
    from animecli.inference.select import EngineCache


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:  # gone or unreadable: the real run says which
        return False


def run_convert(
    opts: ConvertOptions,
    on_record: RecordFn | None = None,
    on_start: Callable[[RunInfo], None] | None = None,
    stop: threading.Event | None = None,
    on_frames: Callable[[str, int, int], None] | None = None,
    only: Callable[[Path], bool] | None = None,
    engines: EngineCache | None = None,
) -> Summary:
    """Convert everything ``opts`` names.

    Args:
        opts: the run's options.
        on_record: called with each file's record as soon as it is final.
        on_start: called once the model is loaded, before the first file.
        stop: when set (e.g. by SIGINT), the run finishes the batch in hand,
            writes the report and returns with ``summary.interrupted``.
        on_frames: a video's progress: (source, frames done, frames expected or 0).
        only: take only the inputs for which this is true (``animecli watch``: files that
            stopped growing); the others are passed over silently.
        engines: keeps the local engine between calls (``animecli watch``).

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
            run = Session(opts, on_record, only)
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
            run = Session(opts, on_record, only)
            locked = True
            try:
                if opts.engine_kind is EngineKind.RAY:
                    from animecli.run.ray import convert_on_ray  # Ray only when asked for (an optional extra)

                    return convert_on_ray(run, on_start, stop, t0)
                return convert_local(run, on_start, stop, t0, on_frames, engines)
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
