"""The streaming loader: background threads decode the next images while the model runs.

Jobs come from a lazy iterator, walked by one feeder thread that hands each
file to a pool of ``workers`` decode threads (Pillow releases the GIL while it
decodes, so they run in parallel); results come back in job order through a
bounded queue (``prefetch`` deep), so memory stays flat however many files
there are. Every per-file problem becomes a :class:`Loaded` with ``error``
set: the batch carries on.
"""

from __future__ import annotations

import contextlib
import errno
import queue
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from animecli.io.discovery import Job
from animecli.io.probe import first_frame, format_note
from animecli.io.transforms import ORIENTATION_TAG, ROTATED_NOTE, UInt8Array, prepare
from animecli.options import LoadOptions

# Pillow's own bomb check is replaced by ours (--max-pixels), which names the option to change.
Image.MAX_IMAGE_PIXELS = None
# Pillow warns on odd metadata (corrupt EXIF and the like); the image is still usable and the
# report says what matters. A filter set once: warnings.catch_warnings() per file is not
# thread-safe, and files are decoded on several threads.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


@dataclass
class Loaded:
    """One decoded image, or the reason it could not be decoded.

    Attributes:
        job: what to convert and where to.
        rgb: (H, W, 3) uint8 at the processed size (``None`` on error).
        alpha: alpha channel (mode ``L``) at the processed size, if any.
        icc: the input's ICC profile bytes, kept for the output.
        exif: the input's EXIF bytes with orientation reset, kept for the output.
        original_size: (width, height) after EXIF rotation.
        load_ms: time to read, decode and prepare.
        notes: remarks for the report.
        error: one-line reason, when the file could not be loaded.
    """

    job: Job
    rgb: UInt8Array | None = None
    alpha: Image.Image | None = None
    icc: bytes | None = None
    exif: bytes | None = None
    original_size: tuple[int, int] = (0, 0)
    load_ms: float = 0.0
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def processed_size(self) -> tuple[int, int]:
        """(width, height) fed to the model."""
        if self.rgb is None:
            return (0, 0)
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


# Also what --dry-run says of an empty file, which it finds without opening it.
EMPTY_FILE = "empty file (0 bytes); re-export or remove it"


def _describe(exc: BaseException, path: Path) -> str:
    """A one-line reason with the fix, for a file that failed to load."""
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
        return "symbolic link loop; fix or remove the link"
    if isinstance(exc, FileNotFoundError):
        if path.is_symlink():
            return "broken symbolic link (its target is missing); fix or remove the link"
        return "file vanished before it could be read; nothing to do unless it should exist"
    if isinstance(exc, PermissionError):
        return "permission denied; make the file readable (chmod +r) and rerun"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not an image"
    if isinstance(exc, UnidentifiedImageError):
        with contextlib.suppress(OSError):
            if path.stat().st_size == 0:
                return EMPTY_FILE
        return "not a recognised image (wrong extension or corrupt); re-export it as JPEG/PNG or remove it"
    if isinstance(exc, (OSError, SyntaxError, ValueError, EOFError)):
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"corrupt or truncated image ({text}); re-export or re-download it"
    if isinstance(exc, Image.DecompressionBombError):  # pragma: no cover - we disabled Pillow's check
        return f"{exc}; raise --max-pixels if the file is trusted"
    return f"could not be decoded ({type(exc).__name__}: {exc}); re-export it as JPEG/PNG"


# TIFF tags that describe how the pixels are stored (not the photo): never copied to an output.
_LAYOUT_TAGS = (
    0x0100, 0x0101, 0x0102, 0x0103, 0x0106, 0x0107, 0x0108, 0x0109, 0x010A, 0x0111, 0x0115, 0x0116,
    0x0117, 0x0118, 0x0119, 0x011C, 0x0122, 0x0123, 0x0124, 0x0125, 0x0129, 0x012D, 0x013D, 0x0140,
    0x0141, 0x0142, 0x0143, 0x0144, 0x0145, 0x014A, 0x0150, 0x0152, 0x0153, 0x0154, 0x0155, 0x0156,
    0x015B, 0x0200, 0x0201, 0x0202, 0x0211, 0x0212, 0x0214, 0x8773,
    # Containers a TIFF carries in the same directory, often megabytes (a JPEG's EXIF holds 64 KB):
    # XMP, Photoshop resources, Photoshop layers.
    0x02BC, 0x8649, 0x935C,
)


def load_one(job: Job, opts: LoadOptions) -> Loaded:
    """Read, orient, convert and resize one image. Never raises for a bad file."""
    t0 = time.perf_counter()
    out = Loaded(job)
    try:
        with contextlib.ExitStack() as opened:
            img = opened.enter_context(Image.open(job.src))
            w, h = img.size
            if opts.max_pixels and w * h > opts.max_pixels:
                out.error = (
                    f"{w}×{h} = {w * h:,} pixels is over the --max-pixels limit of {opts.max_pixels:,} "
                    "(possible decompression bomb); raise --max-pixels if the file is trusted"
                )
                return out
            # Counting frames must not fail a readable first page (a damaged tail): see animecli.io.probe.
            img = opened.enter_context(first_frame(img, job.src, out.notes))
            mislabelled = format_note(img.format, job.src)
            if mislabelled:
                out.notes.append(mislabelled)
            # Pillow turns a TIFF upright itself while loading its pixels, and drops the tag:
            # read the orientation first so that the report still says the image was rotated.
            turned_by_pillow = img.format == "TIFF" and img.getexif().get(ORIENTATION_TAG, 1) not in (None, 1)
            img.load()
            out.icc = img.info.get("icc_profile")
            # prepare() first: it reads the orientation from img.getexif(), the object popped below.
            prepared = prepare(img, opts.max_size)
            exif = img.getexif()
            if exif:
                exif.pop(ORIENTATION_TAG, None)  # the pixels are rotated upright, so orientation becomes normal
                # A TIFF's "EXIF" is its first directory: size, layout and sample format of the
                # input. Written into an RGB output they described it wrongly (unreadable files).
                for tag in _LAYOUT_TAGS:
                    exif.pop(tag, None)
                out.exif = exif.tobytes() if len(exif) else None
            if out.icc and out.icc[16:20] != b"RGB ":
                # The output is RGB: a CMYK or grey profile would make colour-managed viewers
                # misread it (or ignore it).
                kind = out.icc[16:20].decode("latin-1").strip() or "non-RGB"
                out.notes.append(f"{kind} ICC profile not kept (the output is RGB)")
                out.icc = None
    except Exception as exc:
        out.error = _describe(exc, job.src)
        return out
    out.rgb = prepared.rgb
    out.alpha = prepared.alpha
    out.original_size = prepared.original_size
    if turned_by_pillow and ROTATED_NOTE not in prepared.notes:
        out.notes.append(ROTATED_NOTE)
    out.notes.extend(prepared.notes)
    if prepared.original_size != out.processed_size:
        (ow, oh), (pw, ph) = prepared.original_size, out.processed_size
        out.notes.append(f"resized {ow}×{oh} → {pw}×{ph}")
    out.load_ms = (time.perf_counter() - t0) * 1000.0
    return out


_END = object()


class StreamingLoader:
    """Decode jobs on background threads into a bounded, ordered queue.

    Iterate over it to receive a :class:`Loaded` for every :class:`Job`, in
    order; any other item of ``jobs`` (a skip notice, say) is passed through
    unchanged, so the consumer sees one ordered stream. Exceptions raised by
    the job iterator itself (not by a file) are re-raised in the consumer.
    Call :meth:`close` (or use it as a context manager) to stop early.

    At most ``max(prefetch, workers) + 1`` decoded images exist ahead of the
    consumer: the queue holds futures, and the feeder submits a file only when
    there is room for its result.

    Args:
        jobs: the jobs, consumed lazily in the feeder thread.
        opts: loading options (``prefetch`` = queue depth, ``workers`` = decode threads).
    """

    def __init__(self, jobs: Iterable[object], opts: LoadOptions) -> None:
        self._jobs = jobs
        self._opts = opts
        workers = max(1, opts.workers)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="animecli-decode")
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, opts.prefetch, workers))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="animecli-loader", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for job in self._jobs:
                if self._stop.is_set():
                    return
                item = self._pool.submit(load_one, job, self._opts) if isinstance(job, Job) else job
                if not self._put(item):
                    if isinstance(item, Future):
                        item.cancel()
                    return
        except BaseException as exc:
            self._put(exc)
            return
        self._put(_END)

    def __iter__(self) -> Iterator[object]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, Future):
                item = item.result()  # load_one never raises for a file; anything else is a bug to surface
            yield item

    def close(self) -> None:
        """Stop the threads and drop what they had prefetched."""
        self._stop.set()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Future):
                item.cancel()
        self._thread.join(timeout=5)
        # Waits only for decodes already running (one file per thread); queued ones are cancelled.
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> StreamingLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
