"""``--engine local``: the non-dry run in this process: streaming loader → engine → writer pool,
records emitted in the order the files were found."""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from animecli.errors import FileError, OutputError
from animecli.io.discovery import Found, Job, is_video
from animecli.io.loader import Loaded, StreamingLoader
from animecli.run.report import FileRecord, Status, Summary, rss_mb

if TYPE_CHECKING:
    from animecli.inference.select import EngineCache
from animecli.run.session import RunInfo, Session, Skip, inference_record, load_failure_record


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


def _cache_warning() -> str:
    from animecli.inference.graph_cache import cache_warning

    return cache_warning()


def convert_local(
    run: Session,
    on_start: Callable[[RunInfo], None] | None,
    stop: threading.Event | None,
    t0: float,
    on_frames: Callable[[str, int, int], None] | None = None,
    engines: EngineCache | None = None,
) -> Summary:
    """The non-dry run in this process, with the output folder locked.

    ``engines`` keeps the engine between runs (``animecli watch``); without it the model is
    loaded for this run.

    Images stream through the loader and the writer pool; videos are set aside as discovery finds
    them and converted after the images (:mod:`animecli.run.video`), reporting progress in frames
    through ``on_frames`` (source, frames done, frames expected or 0).
    """
    opts = run.opts
    # Imported here so that `animecli --help` and --dry-run never pay for onnxruntime or numpy;
    # torch is imported only if the run needs it (see animecli.inference.select).
    from animecli.inference.batching import SizeBatcher
    from animecli.inference.select import select_engine, temporal_engine
    from animecli.io.writer import Saved, WriterPool, size_problem

    chosen = engines.get(opts.model, opts.engine) if engines is not None else select_engine(opts.model, opts.engine)
    engine = chosen.engine
    s = run.summary
    s.model, s.device, s.backend = chosen.name, chosen.device, chosen.backend.value
    s.precision, s.licence = chosen.precision, chosen.licence
    if on_start:
        on_start(RunInfo(s.model, s.device, s.precision, s.backend, "" if chosen.lean else _cache_warning(),
                         licence=s.licence))
    w = opts.write
    run.use_settings(chosen.sha256, chosen.spec.key, s.precision, chosen.backend)

    batch_size = max(1, opts.engine.batch_size)
    batcher: SizeBatcher[tuple[int, Loaded]] = SizeBatcher(batch_size)
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

    def flush(items: list[tuple[int, Loaded]]) -> None:
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

    # Issue 25: videos are set aside as discovery finds them and converted after the images,
    # one at a time (each streams its own frames through the engine).
    videos: list[Job] = []

    def images_only(items: Iterator[Found | Skip]) -> Iterator[Found | Skip]:
        for item in items:
            if isinstance(item, Job) and is_video(item.src):
                videos.append(item)
            else:
                yield item

    try:
        try:
            with StreamingLoader(images_only(run.plan(keep_stamps=True)), opts.load) as loader:
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
                    seq = next(arrived)
                    for due in batcher.add(got.processed_size, (seq, got), seq):
                        flush(due)
                    if stop is not None and stop.is_set():
                        s.interrupted = True
                        break
                if not s.interrupted and not s.fatal:
                    for due in batcher.drain():
                        flush(due)
        except OutputError as exc:
            s.fatal = s.fatal or str(exc)
        finally:
            report_saved(wait=True)  # outputs already computed are written, even when interrupted
            writer.close()
            emit_in_order(everything=True)  # after a stop, images that were never run leave gaps
        if videos:
            from animecli.run.video import run_videos  # PyAV only when there are videos

            run_videos(videos, engine, temporal_engine(opts.model, opts.engine), opts, s, stop, on_frames,
                       run.emit, run.saved, lambda job: run.stamps.pop(job.dst, None))
    except KeyboardInterrupt:
        # A second Ctrl-C/SIGTERM aborts at once: the report still tells what was done (a
        # previous run's report must not stand in for this one).
        s.interrupted = True
        run.finish(t0)
        raise
    return run.finish(t0)
