"""``animecli watch IN OUT``: convert what is there, then every new or changed file once it is complete.

A file is *ready* when its size and modification time have not changed for
``settle`` seconds (a file being copied in, however slowly, keeps changing; one
that already sat there that long when first seen is ready at once). Each round
converts the ready files with :func:`~animecli.run.convert.run_convert`, so they get
exactly what ``convert`` gives: the output folder's lock (taken per round; a round
that finds it held waits for the next), its resume state (a changed file is
converted again, an unchanged one never twice) and its records. The report, if
asked for, covers the whole watch and is rewritten after every round.

Noticing changes: with the ``watch`` extra, `watchdog
<https://github.com/gorakhargosh/watchdog>`_ wakes the loop as soon as the
operating system reports a change (inotify, FSEvents, ReadDirectoryChangesW);
it is long-maintained, has wheels everywhere, and calls back into a plain thread,
so waiting stays one ``Event.wait`` that a signal can cut short (no asyncio).
Without it, or where it cannot start (no inotify watches left, a network share that
sends no events), the folders are polled every ``interval`` seconds. Either way the
readiness test is the same stat comparison: events only make it come sooner.

A stop (SIGINT/SIGTERM) ends the round after the current file (a video being
converted is abandoned, and its temporary file removed), then the loop.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from animecli.errors import LockedError
from animecli.io.discovery import SUPPORTED
from animecli.options import ConvertOptions
from animecli.run.convert import run_convert
from animecli.run.report import FileRecord, ReportWriter, Summary, check_report_path, peak_rss_mb
from animecli.run.session import RunInfo

_Stamp = tuple[int, int]  # (size, mtime_ns)


@dataclass(frozen=True)
class WatchOptions:
    """How the inputs are watched.

    Attributes:
        settle: seconds a file's size and mtime must stay unchanged before it is converted.
        interval: seconds between polls (also with events: a safety net for missed ones).
        events: use watchdog's change notifications when it is installed.
    """

    settle: float = 2.0
    interval: float = 1.0
    events: bool = True


class Readiness:
    """Which input files are complete and not yet handled in their current state.

    Args:
        inputs: the watched files and folders.
        recursive: look into sub-folders.
        hidden: also take hidden files.
        settle: see :class:`WatchOptions`.
        output: the output folder (never watched, when inside an input).
        clock, wall: monotonic and wall clocks (tests pass their own).
    """

    def __init__(
        self, inputs: tuple[str, ...], recursive: bool, hidden: bool, settle: float, output: Path,
        clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
    ) -> None:
        self.inputs, self.recursive, self.hidden, self.settle = inputs, recursive, hidden, settle
        self.output = os.path.realpath(output)
        self.clock, self.wall = clock, wall
        self._seen: dict[str, tuple[_Stamp, float]] = {}  # path → (stamp, when it last changed)
        self._handled: dict[str, _Stamp] = {}  # path → stamp it had when converted (or tried)

    def _files(self) -> Iterator[str]:
        for item in self.inputs:
            if os.path.isfile(item):
                yield os.path.realpath(item)
                continue
            for root, dirs, files in os.walk(item):
                if os.path.realpath(root) == self.output:
                    dirs[:] = []
                    continue
                dirs[:] = sorted(d for d in dirs if self.recursive and (self.hidden or not d.startswith(".")))
                for name in files:
                    if name.startswith(".animecli") or (name.startswith(".") and not self.hidden):
                        continue
                    if os.path.splitext(name)[1].lower() in SUPPORTED:
                        yield os.path.realpath(os.path.join(root, name))

    def poll(self) -> tuple[set[str], int]:
        """Stat every input file once.

        Returns:
            (files ready to convert, files seen that are still changing).
        """
        now, wall = self.clock(), self.wall()
        ready: set[str] = set()
        waiting = 0
        present: dict[str, tuple[_Stamp, float]] = {}
        for path in self._files():
            try:
                st = os.stat(path)
            except OSError:
                continue  # gone between the listing and the stat
            stamp = (st.st_size, st.st_mtime_ns)
            old = self._seen.get(path)
            if old is not None and old[0] == stamp:
                since = old[1]
            elif old is None and wall - st.st_mtime_ns / 1e9 >= self.settle:
                since = now - self.settle  # untouched for long enough before we looked
            else:
                since = now
            present[path] = (stamp, since)
            if self._handled.get(path) == stamp:
                continue
            if now - since >= self.settle and st.st_size > 0:
                ready.add(path)
            else:
                waiting += 1
        self._seen = present
        return ready, waiting

    def handled(self, paths: set[str]) -> None:
        """These files were converted (or tried) in their current state."""
        for p in paths:
            seen = self._seen.get(p)
            if seen is not None:
                self._handled[p] = seen[0]


def _observer(inputs: tuple[str, ...], recursive: bool, wake: threading.Event) -> Any:
    """A started watchdog observer that sets ``wake`` on any change, or ``None`` (not installed,
    or it could not start): then the loop polls."""
    try:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer
    except ImportError:
        return None

    class _Wake(FileSystemEventHandler):
        def on_any_event(self, event: Any) -> None:
            wake.set()

    observer = Observer()
    handler = _Wake()
    try:
        for item in inputs:
            folder = item if os.path.isdir(item) else os.path.dirname(os.path.abspath(item))
            observer.schedule(handler, folder, recursive=recursive)
        observer.start()
    except Exception:  # inotify limits, an unsupported file system: polling still works
        with contextlib.suppress(Exception):
            observer.stop()
        return None
    return observer


def run_watch(
    opts: ConvertOptions,
    wopts: WatchOptions,
    stop: threading.Event,
    on_record: Callable[[FileRecord], None] | None = None,
    on_start: Callable[[RunInfo], None] | None = None,
    on_round: Callable[[int, Summary], None] | None = None,
    on_frames: Callable[[str, int, int], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> Summary:
    """Watch ``opts.inputs`` and convert into ``opts.output`` until ``stop`` is set.

    Args:
        opts: the convert options (``report``: one report for the whole watch).
        wopts: how to watch.
        stop: set by SIGINT/SIGTERM; the loop ends after the current file.
        on_record, on_start, on_frames: as for :func:`~animecli.run.convert.run_convert`.
        on_round: called after each round with the number of ready files and its summary.
        on_note: remarks (how changes are noticed, a lock held by another run).

    Returns:
        The totals over all rounds (``interrupted`` once stopped).

    Raises:
        UsageError, AnimecliError: as ``convert`` before its first file (bad inputs, no model).
    """
    report = None
    if opts.report:
        check_report_path(opts.report)
        report = ReportWriter(opts.report)
    totals = Summary()
    t0 = time.perf_counter()

    def record(rec: FileRecord) -> None:
        if report is not None:
            report.add(rec)
        if on_record is not None:
            on_record(rec)

    started = [False]

    def start(info: RunInfo) -> None:
        if not started[0] and on_start is not None:
            on_start(info)
        started[0] = True

    ready_files = Readiness(opts.inputs, opts.recursive, opts.hidden, wopts.settle, opts.output)
    wake = threading.Event()
    observer = _observer(opts.inputs, opts.recursive, wake) if wopts.events else None
    if on_note is not None:
        on_note("watching with file-system events (watchdog)" if observer is not None else
                f"watching by polling every {wopts.interval:g} s")
    once = replace(opts, report=None)
    from animecli.inference.select import EngineCache

    engines = EngineCache()  # the model is loaded once, not every round
    try:
        while not stop.is_set():
            ready, waiting = ready_files.poll()
            if ready:
                def only(path: Path, ready: set[str] = ready) -> bool:
                    return os.path.realpath(path) in ready

                try:
                    s = run_convert(once, record, start, stop, on_frames, only=only, engines=engines)
                except LockedError as exc:
                    if on_note is not None:
                        on_note(f"{exc}; trying again in {wopts.interval:g} s")
                    s = None
                if s is not None:
                    ready_files.handled(ready)
                    _add(totals, s)
                    if report is not None:
                        _finish_report(report, totals, t0)
                    if on_round is not None:
                        on_round(len(ready), s)
                    if s.fatal or s.interrupted:
                        totals.fatal = totals.fatal or s.fatal
                        break
            # Wait for an event, the next poll, or a stop; a file still settling is looked at again soon.
            timeout = min(wopts.interval, wopts.settle / 2) if waiting else wopts.interval
            deadline = time.monotonic() + timeout
            while not stop.is_set() and not wake.is_set() and time.monotonic() < deadline:
                stop.wait(min(0.1, timeout))
            wake.clear()
    finally:
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)
        totals.interrupted = stop.is_set()
        totals.elapsed_s = time.perf_counter() - t0
        totals.peak_rss_mb = peak_rss_mb()
        if report is not None:
            _finish_report(report, totals, t0)
            report.close()
    return totals


def _add(totals: Summary, s: Summary) -> None:
    totals.converted += s.converted
    totals.skipped += s.skipped
    totals.failed += s.failed
    totals.ignored += s.ignored
    totals.model, totals.device = s.model or totals.model, s.device or totals.device
    totals.precision, totals.backend = s.precision or totals.precision, s.backend or totals.backend


def _finish_report(report: ReportWriter, totals: Summary, t0: float) -> None:
    totals.elapsed_s = time.perf_counter() - t0
    with contextlib.suppress(OSError):  # a full disk: the next round tries again
        report.finish(totals)
