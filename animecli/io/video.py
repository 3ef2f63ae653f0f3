"""Video decoding and encoding with PyAV (the ``video`` extra; it bundles FFmpeg).

PyAV is imported only here, and only when a video is converted: ``animecli --help``
and image runs never load it. :class:`VideoReader` yields upright RGB frames at the
run's size policy with their timestamps (and hands the audio packets on);
:class:`VideoWriter` encodes stylised frames as H.264 into an MP4 with the same
timestamps and copies the audio stream into it (transcoded to AAC only when MP4
cannot hold the input's audio codec).

Frames travel as (H, W, 3) uint8 RGB numpy arrays, as images do.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

import numpy as np

from animecli.errors import FileError, SetupError, first_line
from animecli.io.transforms import UInt8Array, fit_size

# Audio codecs the MP4 muxer takes as they are (copied); any other is transcoded to AAC.
MP4_AUDIO = {"aac", "mp3", "opus", "flac", "alac", "ac3", "eac3"}
# Encoders tried in order: x264 is in PyAV's wheels; the others cover FFmpeg builds without it.
H264_ENCODERS = ("libx264", "h264", "libopenh264")
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


def require_av() -> ModuleType:
    """The ``av`` module, or a :class:`SetupError` saying how to install it."""
    try:
        import av
    except ImportError:
        raise SetupError("video inputs need PyAV: pip install 'animecli[video]' (or pip install av)") from None
    return av


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds.

    Attributes:
        width, height: coded frame size (before rotation).
        rotation: degrees counter-clockwise the player turns the frames (display matrix), a multiple of 90.
        fps: average frame rate (``None`` if the container does not say).
        time_base: the video stream's time base.
        frames: frames the container announces (0 = unknown; an estimate from the duration otherwise).
        duration_s: the video stream's duration in seconds (0 = unknown).
        codec: the video codec's name.
        audio: the first audio stream's codec name, or "" for none.
    """

    width: int
    height: int
    rotation: int
    fps: Fraction | None
    time_base: Fraction
    frames: int
    duration_s: float
    codec: str
    audio: str

    @property
    def upright_size(self) -> tuple[int, int]:
        """(width, height) as displayed."""
        return (self.height, self.width) if self.rotation % 180 else (self.width, self.height)


def output_size(info: VideoInfo, max_size: int) -> tuple[int, int]:
    """The processed (width, height): the image size policy (long side ≤ ``max_size``),
    then rounded down to even sides (4:2:0 H.264 needs them)."""
    w, h = fit_size(*info.upright_size, max_size)
    return max(2, w - w % 2), max(2, h - h % 2)


@dataclass
class Frame:
    """One decoded frame: upright RGB at the processed size, and when it is shown.

    Attributes:
        rgb: (H, W, 3) uint8.
        pts: presentation timestamp in the stream's time base.
        index: 0-based frame number.
    """

    rgb: UInt8Array
    pts: int
    index: int


def _stream_rotation(stream: Any) -> int:
    """Rotation from the stream's display matrix or its (older) ``rotate`` tag, in degrees CCW."""
    try:
        tag = stream.metadata.get("rotate")
        if tag is not None:
            return (-int(float(tag))) % 360  # the tag is clockwise
    except (ValueError, AttributeError):
        pass
    return 0


class VideoReader:
    """Opens a video and decodes its frames in order.

    Args:
        path: the video file.
        max_size: the long-side limit of the run (as for images; 0 = none).

    Raises:
        SetupError: PyAV is not installed.
        FileError: the file cannot be opened as a video, has no video stream, or its
            codec cannot be decoded by the bundled FFmpeg (one line each, naming the fix).

    Attributes:
        info: what the video holds.
        size: the processed (width, height).
        error: set after :meth:`frames` if decoding stopped on an error (a truncated or
            damaged file); the frames before it were yielded.
    """

    def __init__(self, path: Path, max_size: int) -> None:
        av = require_av()
        self.path = path
        self.error: str | None = None
        try:
            self.container = av.open(str(path), "r")
        except av.error.FFmpegError as exc:
            raise FileError(str(path), f"cannot open as a video ({first_line(exc)}); it may be truncated "
                                       "(an MP4 whose index was never written) or not a video") from None
        try:
            streams = self.container.streams
            if not streams.video:
                kinds = ", ".join(sorted({s.type for s in streams})) or "nothing"
                raise FileError(str(path), f"no video stream (it holds {kinds}); give a video file")
            self.stream = streams.video[0]
            codec = self.stream.codec_context
            name = getattr(codec, "name", None) or "unknown"
            if codec is None or not self._decodable():
                raise FileError(str(path), f"video codec {name!r} cannot be decoded by this FFmpeg "
                                           "(PyAV's bundled build); convert it first, e.g. "
                                           "ffmpeg -i IN -c:v libx264 OUT.mp4")
            self.stream.thread_type = "AUTO"  # frame threads: decoding keeps up with the model
            self.audio = streams.audio[0] if streams.audio else None
            self.info = self._info(name)
            self.size = output_size(self.info, max_size)
        except BaseException:
            self.container.close()
            raise

    def _decodable(self) -> bool:
        try:
            return self.stream.codec_context.codec.is_decoder  # type: ignore[no-any-return]
        except Exception:  # no codec at all (an unknown codec id)
            return False

    def _info(self, codec: str) -> VideoInfo:
        s = self.stream
        tb = Fraction(s.time_base) if s.time_base else Fraction(1, 90000)
        fps = Fraction(s.average_rate) if s.average_rate else (Fraction(s.guessed_rate) if s.guessed_rate else None)
        duration = float(s.duration * tb) if s.duration else 0.0
        if not duration and self.container.duration:
            duration = self.container.duration / 1_000_000  # AV_TIME_BASE
        frames = int(s.frames or 0) or (round(duration * fps) if fps and duration else 0)
        return VideoInfo(int(s.codec_context.width), int(s.codec_context.height), _stream_rotation(s), fps, tb,
                         frames, duration, codec, self.audio.codec_context.name if self.audio else "")

    def frames(self, on_audio: Any = None) -> Iterator[Frame]:
        """Decode the video's frames in presentation order.

        Args:
            on_audio: called with each audio packet of the first audio stream as it is demuxed
                (for the writer to copy); ``None`` = audio is not read.

        Yields:
            Frames, upright, at :attr:`size`. On a decoding error (truncated file) the
            iteration ends and :attr:`error` says where.
        """
        av = require_av()
        w, h = self.size
        streams = [self.stream] + ([self.audio] if self.audio is not None and on_audio is not None else [])
        index = 0
        last_pts = -1
        step = self._frame_step()
        try:
            for packet in self.container.demux(*streams):
                if packet.stream is not self.stream:
                    if packet.dts is not None:  # the flushing packet has none
                        on_audio(packet)
                    continue
                for frame in packet.decode():
                    rotation = self.info.rotation or _frame_rotation(frame)
                    rgb = _upright_rgb(frame, rotation, w, h)
                    pts = frame.pts if frame.pts is not None else last_pts + step
                    pts = max(pts, last_pts + 1)  # the encoder needs strictly increasing timestamps
                    last_pts = pts
                    yield Frame(rgb, int(pts), index)
                    index += 1
        except av.error.FFmpegError as exc:
            self.error = f"decoding stopped after {index} frames ({first_line(exc)})"
            # Frames the decoder still holds (frame threads keep a few) are shown too.
            try:
                for frame in self.stream.codec_context.decode(None):
                    last_pts = max(frame.pts if frame.pts is not None else last_pts + step, last_pts + 1)
                    yield Frame(_upright_rgb(frame, self.info.rotation or _frame_rotation(frame), w, h),
                                int(last_pts), index)
                    index += 1
            except av.error.FFmpegError:
                pass
        self.decoded = index
        self.last_pts = last_pts
        if self.error is None:
            self.error = self._short(index, last_pts)

    def _frame_step(self) -> int:
        fps = self.info.fps
        return max(1, round(1 / (fps * self.info.time_base))) if fps else 1

    def _short(self, decoded: int, last_pts: int) -> str | None:
        """Why the decoded frames fall short of what the container announces (a cut-off file), or ``None``."""
        info = self.info
        if decoded == 0:
            return "no frame could be decoded; the file is damaged or empty"
        if not info.duration_s or not info.fps:
            return None
        start = self.stream.start_time or 0
        shown = (last_pts - start) * float(info.time_base) + 1 / float(info.fps)
        # Two frames of slack: containers round their durations.
        if shown < info.duration_s - 2 / float(info.fps):
            return (f"truncated: decoding ended at {shown:.2f} s of {info.duration_s:.2f} s "
                    f"({decoded} of ~{info.frames or round(info.duration_s * float(info.fps))} frames)")
        return None

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _frame_rotation(frame: Any) -> int:
    try:
        return round(float(frame.rotation) / 90.0) * 90 % 360
    except (AttributeError, TypeError, ValueError):
        return 0


def _upright_rgb(frame: Any, rotation: int, width: int, height: int) -> UInt8Array:
    """The frame as upright RGB at (width, height) upright; resized by FFmpeg's scaler (Lanczos,
    as images are) before turning, so the turn moves the fewest pixels."""
    sw, sh = (height, width) if rotation % 180 else (width, height)
    if (frame.width, frame.height) != (sw, sh):
        rgb = frame.to_ndarray(format="rgb24", width=sw, height=sh, interpolation="LANCZOS")
    else:
        rgb = frame.to_ndarray(format="rgb24")
    if rotation:
        # np.rot90 turns counter-clockwise, as the display matrix angle counts.
        rgb = np.ascontiguousarray(np.rot90(rgb, k=rotation // 90))
    return rgb  # type: ignore[no-any-return]


class VideoWriter:
    """Encodes frames as H.264 in MP4, with the source's timestamps, and copies its audio.

    Args:
        fh: the (temporary) file to write, seekable.
        reader: the source (frame rate, time base, audio stream).
        crf: x264 constant rate factor.
        preset: x264 preset.

    Attributes:
        notes: remarks for the report (audio transcoded, another encoder used …).
    """

    def __init__(self, fh: BinaryIO, reader: VideoReader, crf: int, preset: str) -> None:
        av = require_av()
        self.av = av
        self.notes: list[str] = []
        self.container = av.open(fh, "w", format="mp4")
        info = reader.info
        w, h = reader.size
        self.time_base = info.time_base
        self.stream = self._video_stream(info, w, h, crf, preset)
        self.audio: Any = None
        self.audio_in: Any = reader.audio
        self._resampler: Any = None
        self._decoder: Any = None
        if reader.audio is not None:
            self._audio_stream(reader.audio)
        self._audio_pending: list[Any] = []

    def _video_stream(self, info: VideoInfo, w: int, h: int, crf: int, preset: str) -> Any:
        rate = info.fps if info.fps else Fraction(25)
        for name in H264_ENCODERS:
            if name not in self.av.codecs_available:
                continue
            options = {"crf": str(crf), "preset": preset} if name == "libx264" else {}
            stream = self.container.add_stream(name, rate=rate, options=options)
            if name != "libx264":
                self.notes.append(f"encoded with {name} (no libx264 in this FFmpeg; --crf not applied)")
            break
        else:
            raise SetupError("this FFmpeg has no H.264 encoder; install PyAV's wheel (pip install av)")
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = info.time_base  # the source's timestamps pass unchanged
        stream.time_base = info.time_base
        return stream

    def _audio_stream(self, audio_in: Any) -> None:
        name = audio_in.codec_context.name
        if name in MP4_AUDIO:
            self.audio = self.container.add_stream_from_template(audio_in)
            return
        try:
            self._decoder = audio_in.codec_context
            rate = audio_in.codec_context.sample_rate or 48000
            self.audio = self.container.add_stream("aac", rate=rate)
            self.audio.layout = audio_in.codec_context.layout
            self._resampler = self.av.AudioResampler(format="fltp", layout=self.audio.layout, rate=rate)
            self.notes.append(f"audio {name} transcoded to AAC (MP4 cannot hold {name})")
        except Exception as exc:  # an audio stream we cannot set up: the video still converts
            self.audio = None
            self.notes.append(f"audio {name} dropped ({first_line(exc)})")

    def add_audio(self, packet: Any) -> None:
        """Queue one audio packet of the source; it is muxed once the video has caught up with it."""
        if self.audio is not None:
            self._audio_pending.append(packet)

    def _mux_audio(self, until_s: float) -> None:
        keep = []
        for packet in self._audio_pending:
            t = float(packet.pts * packet.time_base) if packet.pts is not None else -math.inf
            if t <= until_s:
                self._write_audio(packet)
            else:
                keep.append(packet)
        self._audio_pending = keep

    def _write_audio(self, packet: Any) -> None:
        if self._resampler is None:
            packet.stream = self.audio
            self.container.mux(packet)
            return
        for frame in self._decoder.decode(packet):
            for out in self._resampler.resample(frame):
                self.container.mux(self.audio.encode(out))

    def write(self, rgb: UInt8Array, pts: int) -> None:
        """Encode one stylised frame shown at ``pts`` (source time base)."""
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = pts
        frame.time_base = self.time_base
        self.container.mux(self.stream.encode(frame))
        self._mux_audio(float(pts * self.time_base))

    def finish(self) -> None:
        """Flush the encoder and the audio still queued, and write the MP4's index."""
        self.container.mux(self.stream.encode(None))
        self._mux_audio(math.inf)
        if self._resampler is not None:
            for out in self._resampler.resample(None):
                self.container.mux(self.audio.encode(out))
            self.container.mux(self.audio.encode(None))
        self.container.close()

    def abort(self) -> None:
        """Close without finishing (the temporary file is then removed by the caller)."""
        try:
            self.container.close()
        except Exception:  # a container in an error state: nothing left worth keeping
            pass
