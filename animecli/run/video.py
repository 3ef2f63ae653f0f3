"""Converting one video: decode thread → engine (this thread) → encode thread, bounded queues.

Memory does not grow with the video's length: at most ``queue`` decoded frames wait
for the model and ``queue`` stylised frames for the encoder (each queue blocks its
producer), one batch is in the engine, and the audio packets waiting to be muxed
span only that latency. The MP4 is written to a temporary file in the output folder
(``.animecli-*.part``, which a later run under the lock deletes) and renamed onto
the output only when complete: a killed or interrupted run leaves no half video,
and a rerun converts it again from the start.

A video whose decoding stops early (a truncated or damaged file) is converted as far
as it decodes, and its record is FAILED with the reason, so the run exits 1.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from animecli.atomic import atomic_open
from animecli.errors import AnimecliError, FileError, OutputError, SetupError, first_line
from animecli.inference.result import BatchResult
from animecli.io.discovery import Job
from animecli.io.transforms import UInt8Array
from animecli.options import ConvertOptions, VideoOptions
from animecli.run.report import FileRecord, Status, Summary, rss_mb

FramesFn = Callable[[str, int, int], None]  # (source, frames done, frames expected or 0)
_END = object()


class Runner(Protocol):
    """What a video needs of an engine (:class:`~animecli.inference.ort_engine.BatchRunner` or a temporal runner)."""

    def run_batch(self, batch: Sequence[UInt8Array]) -> BatchResult:
        """Stylise (H, W, 3) uint8 frames of one size, in order."""
        ...


@dataclass
class VideoOutcome:
    """What became of one video.

    Attributes:
        record: its report row (frames, fps, ms/frame and peak RSS filled in).
        written: an output was written (complete, or as far as the input decoded):
            record it in the resume state.
    """

    record: FileRecord
    written: bool


def _put(q: queue.Queue[Any], item: object, abort: threading.Event) -> bool:
    """Put, waiting while the queue is full, unless the video is abandoned."""
    while not abort.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue[Any], abort: threading.Event) -> Any:
    """Get, waiting while the queue is empty; :data:`_END` once the video is abandoned."""
    while not abort.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue
    return _END


def convert_video(
    job: Job,
    runner: Runner,
    opts: VideoOptions,
    max_size: int,
    batch_size: int,
    stop: threading.Event | None = None,
    on_frames: FramesFn | None = None,
    note: str = "",
) -> VideoOutcome:
    """Convert ``job.src`` (a video) into ``job.dst`` (an H.264 MP4).

    Args:
        job: the input and output paths.
        runner: the engine (frames go through it in order).
        opts: encoder and queue options.
        max_size: long-side limit, as for images.
        batch_size: frames per forward pass.
        stop: when set, the video is abandoned (nothing written) and the record says so.
        on_frames: progress, called after every batch.
        note: how the frames are run (e.g. ``temporal``), for the report.

    Returns:
        The outcome; never raises for a bad input file.

    Raises:
        SetupError: PyAV is missing (every video would fail the same way).
        OutputError: the output folder cannot be written.
    """
    from animecli.io.video import VideoReader, VideoWriter

    t0 = time.perf_counter()
    rec = FileRecord(str(job.src), str(job.dst), Status.FAILED, notes="; ".join(filter(None, [job.note, note])))
    try:
        reader = VideoReader(job.src, max_size)
    except SetupError:
        raise
    except FileError as exc:
        rec.reason = exc.reason
        return VideoOutcome(rec, False)
    with reader:
        info = reader.info
        w, h = reader.size
        rec.input_size = "{}×{}".format(*info.upright_size)
        rec.processed_size = f"{w}×{h}"
        rec.fps = round(float(info.fps), 3) if info.fps else 0.0
        peak = [rss_mb()]
        frames_in: queue.Queue[Any] = queue.Queue(maxsize=max(1, opts.queue))
        frames_out: queue.Queue[Any] = queue.Queue(maxsize=max(1, opts.queue))
        abort = threading.Event()
        audio_q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        failure: list[BaseException] = []
        load_s = [0.0]
        save_s = [0.0]

        def decode() -> None:
            try:
                it = reader.frames(on_audio=audio_q.put if reader.audio is not None else None)
                while True:
                    t = time.perf_counter()
                    frame = next(it, None)
                    load_s[0] += time.perf_counter() - t
                    if frame is None or not _put(frames_in, frame, abort):
                        break
            except BaseException as exc:  # reported by the engine thread
                failure.append(exc)
            finally:
                _put(frames_in, _END, abort)

        try:
            job.dst.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(job.dst) as fh:
                writer = VideoWriter(fh, reader, opts.crf, opts.preset)
                done, infer_ms = _stream(reader, writer, runner, frames_in, frames_out, audio_q, abort, failure,
                                         decode, save_s, peak, batch_size, stop, on_frames, job, rec)
        except _Discard as d:
            _fill(rec, d.frames, d.infer_ms, load_s[0], save_s[0], peak[0], t0)
            rec.reason = d.reason
            return VideoOutcome(rec, False)
        except OSError as exc:
            if not _is_av_error(exc):
                raise OutputError(f"cannot write {job.dst} ({exc.strerror or exc}); free space or fix the "
                                  "permissions of OUTPUT") from None
            rec.reason = f"encoding failed ({first_line(exc)}); nothing written"
            return VideoOutcome(rec, False)
        rec.notes = "; ".join(filter(None, [rec.notes, *writer.notes,
                                            f"audio {info.audio} kept" if info.audio and writer.audio else ""]))
        _fill(rec, done, infer_ms, load_s[0], save_s[0], peak[0], t0)
        if reader.error:
            rec.reason = f"{reader.error}; the output holds the {done} frames that decoded"
        else:
            rec.status = Status.CONVERTED
        return VideoOutcome(rec, True)


class _Discard(Exception):
    """The video is abandoned: the temporary file is removed (raised through ``atomic_open``)."""

    def __init__(self, reason: str, frames: int, infer_ms: float) -> None:
        super().__init__(reason)
        self.reason, self.frames, self.infer_ms = reason, frames, infer_ms


def _stream(
    reader: Any, writer: Any, runner: Runner, frames_in: queue.Queue[Any], frames_out: queue.Queue[Any],
    audio_q: queue.SimpleQueue[Any], abort: threading.Event, failure: list[BaseException],
    decode: Callable[[], None], save_s: list[float], peak: list[float], batch_size: int,
    stop: threading.Event | None, on_frames: FramesFn | None, job: Job, rec: FileRecord,
) -> tuple[int, float]:
    """Run the three stages; returns (frames written, inference ms) or raises :class:`_Discard`."""

    def drain_audio() -> None:
        while not audio_q.empty():
            writer.add_audio(audio_q.get())

    def encode() -> None:
        try:
            while True:
                item = frames_out.get()
                if item is _END:
                    break
                t = time.perf_counter()
                drain_audio()
                rgb, pts = item
                writer.write(rgb, pts)
                save_s[0] += time.perf_counter() - t
            if not abort.is_set():
                drain_audio()
                writer.finish()
        except BaseException as exc:
            failure.append(exc)
            abort.set()

    decoder = threading.Thread(target=decode, name="video-decode", daemon=True)
    encoder = threading.Thread(target=encode, name="video-encode", daemon=True)
    decoder.start()
    encoder.start()
    done, infer_ms, problem = 0, 0.0, ""
    try:
        batch: list[Any] = []
        ended = False
        while not ended and not problem:
            item = _get(frames_in, abort)
            ended = item is _END
            if not ended:
                batch.append(item)
            if batch and (ended or len(batch) >= batch_size):
                result = runner.run_batch([f.rgb for f in batch])
                infer_ms += result.infer_ms
                for f, out, err in zip(batch, result.images, result.errors, strict=True):
                    if out is None:
                        problem = f"frame {f.index}: {err or 'inference failed'}; nothing written"
                        break
                    if not _put(frames_out, (out, f.pts), abort):
                        break
                    done += 1
                batch = []
                del result
                peak[0] = max(peak[0], rss_mb())
                if on_frames is not None:
                    on_frames(str(job.src), done, reader.info.frames)
            if abort.is_set() and not problem:
                problem = "the encoder failed"
            if stop is not None and stop.is_set() and not ended and not problem:
                problem = f"interrupted after {done} frames; nothing written (a rerun converts it again)"
        if not problem and done == 0:
            problem = (reader.error or "no frame decoded") + "; nothing written"
    finally:
        if problem:
            abort.set()
        _put(frames_out, _END, threading.Event())  # the encoder finishes (or, aborted, just ends)
        encoder.join()
        decoder.join()
    if failure:
        exc = failure[0]
        if isinstance(exc, AnimecliError) and not isinstance(exc, FileError):
            raise exc  # setup or output problems concern every file
        if isinstance(exc, OSError) and not _is_av_error(exc):
            raise exc  # a full disk, say: the run stops (atomic_open removes the temporary file)
        problem = f"{type(exc).__name__}: {first_line(exc)}; nothing written"
    if problem:
        writer.abort()
        raise _Discard(problem, done, infer_ms)
    return done, infer_ms


def _is_av_error(exc: BaseException) -> bool:
    """PyAV's errors subclass OSError; they concern this file, not the disk."""
    return type(exc).__module__.startswith("av.")


def _fill(rec: FileRecord, frames: int, infer_ms: float, load_s: float, save_s: float, peak: float,
          t0: float) -> None:
    wall_ms = (time.perf_counter() - t0) * 1000.0
    rec.frames = frames
    rec.infer_ms, rec.load_ms, rec.save_ms = infer_ms, load_s * 1000.0, save_s * 1000.0
    rec.ms_per_frame = round(wall_ms / frames, 1) if frames else 0.0
    rec.rss_mb = rss_mb()
    rec.peak_rss_mb = peak


def run_videos(
    videos: Sequence[Job],
    engine: Runner,
    temporal_engine: Callable[[], Any],
    opts: ConvertOptions,
    summary: Summary,
    stop: threading.Event | None,
    on_frames: FramesFn | None,
    emit: Callable[[FileRecord], None],
    saved: Callable[[Job], None],
    forget: Callable[[Job], object],
) -> None:
    """Convert a run's videos, one after another, and report each (the pipeline's last step).

    Args:
        videos: the video jobs discovery found (skips already taken out).
        engine: the run's engine (frames go through it when ``--no-temporal``).
        temporal_engine: builds the PyTorch engine for ``--temporal`` (called once, if needed;
            :func:`animecli.inference.select.temporal_engine`).
        opts: the run's options.
        summary: the run's summary (``fatal`` and ``interrupted`` are set here).
        stop: the run's stop event.
        on_frames: progress in frames.
        emit: reports a record.
        saved: records a written output in the resume state.
        forget: drops a job's input stamp (nothing written).
    """
    runner: Runner = engine
    temporal: Any = None
    note = ""
    batch = max(1, opts.video.batch_size or opts.engine.batch_size)
    for job in videos:
        if summary.fatal or (stop is not None and stop.is_set()):
            summary.interrupted = summary.interrupted or bool(stop is not None and stop.is_set())
            forget(job)
            continue
        try:
            if opts.video.carry and temporal is None and not note:
                from animecli.inference.temporal import TemporalRunner  # imports torch

                try:
                    temporal = TemporalRunner(temporal_engine(), opts.video.momentum)
                    how = "onnxruntime video graph" if temporal.graph else "eager PyTorch"
                    note = f"temporal (norm statistics carried, momentum {opts.video.momentum}, {how})"
                except ValueError as exc:  # a model without fast norms: frames run one by one
                    note = f"--temporal not applied ({exc})"
            if temporal is not None:
                runner = temporal
                temporal.new_video()
                with temporal:
                    outcome = convert_video(job, runner, opts.video, opts.load.max_size, batch, stop, on_frames, note)
            else:
                outcome = convert_video(job, runner, opts.video, opts.load.max_size, batch, stop, on_frames, note)
        except SetupError as exc:  # no PyAV: every video fails alike; the images are done
            forget(job)
            emit(FileRecord(str(job.src), str(job.dst), Status.FAILED, str(exc)))
            continue
        except OutputError as exc:
            forget(job)
            summary.fatal = summary.fatal or str(exc)
            emit(FileRecord(str(job.src), str(job.dst), Status.FAILED, str(exc)))
            continue
        if stop is not None and stop.is_set() and not outcome.written:
            summary.interrupted = True
        if outcome.written:
            try:
                saved(job)
            except OutputError as exc:  # the video is written; the resume state could not be
                summary.fatal = summary.fatal or str(exc)
        else:
            forget(job)
        emit(outcome.record)
