"""``animecli bench``: every backend × model on a fixed image set, side by side.

Each row converts the same images end to end, in memory: JPEG decode → prepare →
the engine's forward pass → JPEG encode. Rows are interleaved round by round
(row A, row B, …, then again), so that load from other processes affects all of
them alike; the figures are medians over the rounds. The quality column is the
PSNR of each row's 8-bit output against the same model's eager float32 output.

The *upstream-equivalent* row is the path an AnimeGANv2 user would run without
animecli: the v2 generator with ``torch.nn.GroupNorm``, contiguous (NCHW) tensors,
eager float32 under ``torch.no_grad``, PIL ↔ tensor conversions written the usual way.

Peak RSS is measured per row in a fresh child process (``spawn``) that loads the
model, builds the backend and converts the image set once: the high-water mark of
a process doing only that.

This module never prints; :mod:`animecli.cli` renders the result.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from animecli.backends import default_calibration_dir, onnxruntime_available
from animecli.config import Backend, EngineOptions, ModelChoice
from animecli.errors import UsageError, WeightsError
from animecli.models import Arch, ArchSpec, build_generator
from animecli.report import peak_rss_mb
from animecli.transforms import image_to_tensor, prepare, tensor_to_image

UPSTREAM = "upstream-equivalent"
DEFAULT_BACKENDS = (Backend.EAGER, Backend.TRACED, Backend.ONNX, Backend.INT8)
_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}

ProgressFn = Callable[[str], None]


@dataclass(frozen=True)
class BenchOptions:
    """What ``animecli bench`` measures.

    Attributes:
        images: folder of photos (``None`` = the bundled ``examples/``).
        size: each photo is centre-cropped to a square and resized to size×size.
        models: model names, weights files, or ``v2``/``lite`` (that architecture with
            seeded random weights); empty = the default model and ``v2``.
        backends: backends to run for each model (onnx/int8 are left out, with a note,
            when onnxruntime is missing).
        repeat: timed rounds; the figures are medians over them.
        threads: CPU threads for torch and onnxruntime (0 = their defaults).
        upstream: add the upstream-equivalent row.
        rss: measure peak RSS per row in a child process (slower).
        calibration: int8 calibration photos (``None`` = the bundled examples).
        max_images: use at most this many photos.
    """

    images: Path | None = None
    size: int = 512
    models: tuple[str, ...] = ()
    backends: tuple[Backend, ...] = DEFAULT_BACKENDS
    repeat: int = 5
    threads: int = 0
    upstream: bool = True
    rss: bool = True
    calibration: Path | None = None
    max_images: int = 8


@dataclass(frozen=True)
class BenchRow:
    """One backend × model.

    Attributes:
        model: model label.
        backend: backend name, or ``upstream-equivalent``.
        ms_per_image: median end-to-end milliseconds per image (decode → infer → encode).
        infer_ms: median milliseconds per image in the forward pass alone.
        images_per_s: 1000 / ``ms_per_image``.
        peak_rss_mb: peak RSS of a child process doing this row once (``None``: not measured).
        psnr_db: mean PSNR against the same model's eager float32 output (``inf``: identical;
            ``None``: no reference).
        speedup_vs_eager: the model's eager ``ms_per_image`` / this row's.
        speedup_vs_upstream: the upstream row's ``ms_per_image`` / this row's (``None``: no upstream row).
    """

    model: str
    backend: str
    ms_per_image: float
    infer_ms: float
    images_per_s: float
    peak_rss_mb: float | None
    psnr_db: float | None
    speedup_vs_eager: float | None
    speedup_vs_upstream: float | None


@dataclass(frozen=True)
class BenchResult:
    """All rows and the conditions they were measured in."""

    rows: tuple[BenchRow, ...]
    images: int
    size: int
    repeat: int
    threads: int
    machine: str
    versions: str
    notes: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class _Model:
    label: str
    spec: ArchSpec
    state: dict[str, torch.Tensor]
    multiple: int
    digest: str | None


def cpu_name() -> str:
    """The CPU model name (``/proc/cpuinfo``), and the number of logical CPUs."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {multiprocessing.cpu_count()} CPUs"


def _versions() -> str:
    parts = [f"torch {torch.__version__}"]
    if onnxruntime_available():
        import onnxruntime

        parts.append(f"onnxruntime {onnxruntime.__version__}")
    return ", ".join(parts)


def load_images(folder: Path | None, size: int, limit: int) -> list[bytes]:
    """The benchmark photos: centre-cropped square, resized to size×size, as JPEG bytes (quality 95).

    Raises:
        UsageError: no folder or no readable photos.
    """
    folder = folder if folder is not None else default_calibration_dir()
    if folder is None or not folder.is_dir():
        raise UsageError("no benchmark photos: the bundled examples/ folder is not here; pass --images DIR")
    out = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in _EXTS)[:limit]:
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB")
        except (OSError, ValueError, SyntaxError):
            continue
        side = min(rgb.size)
        left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
        square = rgb.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        square.save(buf, format="JPEG", quality=95)
        out.append(buf.getvalue())
    if not out:
        raise UsageError(f"no readable photos in {folder}; pass --images DIR with a few JPEG/PNG photos")
    return out


def _resolve_model(name: str) -> _Model:
    """A model by manifest name, weights path, or ``v2``/``lite`` (seeded random weights)."""
    from animecli.weights import load_generator

    if name in (a.value for a in Arch):
        torch.manual_seed(0)
        spec = ArchSpec(Arch(name))
        model = build_generator(spec)
        return _Model(f"{name} (random weights)", spec, _state(model), 4, None)
    path = Path(name)
    choice = ModelChoice(weights=path) if path.suffix == ".pt" or path.is_file() else ModelChoice(name)
    loaded = load_generator(choice)
    return _Model(f"{loaded.name} ({loaded.spec.arch.value})", loaded.spec, _state(loaded.model),
                  loaded.input_multiple, loaded.sha256)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _default_models() -> tuple[list[_Model], list[str]]:
    from animecli.weights import load_manifest

    notes = []
    models = []
    try:
        default = load_manifest().default
        models.append(_resolve_model(default))
    except WeightsError as exc:
        notes.append(f"default model unavailable ({exc}); lite with random weights instead")
        models.append(_resolve_model(Arch.LITE.value))
    models.append(_resolve_model(Arch.V2.value))
    return models, notes


class _Path:
    """One row's end-to-end conversion of an encoded image."""

    def __init__(self, m: _Model, backend: Backend, threads: int, calibration: Path | None) -> None:
        from animecli.engine import Engine

        model = build_generator(m.spec)
        model.load_state_dict(m.state)
        opts = EngineOptions(device="cpu", backend=backend, threads=threads, tile=0, calibration=calibration)
        self.engine = Engine(model, m.multiple, opts, m.spec.arch.value, weights_sha256=m.digest,
                             arch_key=m.spec.key)

    def __call__(self, data: bytes) -> tuple[torch.Tensor, float]:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb = prepare(img, 0).rgb
        t0 = time.perf_counter()
        result = self.engine.run_batch([rgb])
        infer = (time.perf_counter() - t0) * 1000.0
        out = result.images[0]
        if out is None:
            raise RuntimeError(result.errors[0] or "inference failed")
        buf = io.BytesIO()
        tensor_to_image(out).save(buf, format="JPEG", quality=92)
        return out, infer


class _UpstreamPath:
    """The plain AnimeGANv2 way: nn.GroupNorm, NCHW, eager float32 under no_grad."""

    def __init__(self, m: _Model, threads: int) -> None:
        if threads > 0:
            torch.set_num_threads(threads)
        spec = replace(m.spec, fast_norm=False)
        self.model = build_generator(spec)
        self.model.load_state_dict(m.state)
        self.model.eval()

    def __call__(self, data: bytes) -> tuple[torch.Tensor, float]:
        img = Image.open(io.BytesIO(data)).convert("RGB")
        x = image_to_tensor(img).float().div(255.0).unsqueeze(0) * 2.0 - 1.0
        t0 = time.perf_counter()
        with torch.no_grad():
            y = self.model(x)
        infer = (time.perf_counter() - t0) * 1000.0
        y = y.squeeze(0).clamp(-1.0, 1.0) * 0.5 + 0.5
        out = (y * 255.0).round().to(torch.uint8)
        buf = io.BytesIO()
        tensor_to_image(out).save(buf, format="JPEG", quality=92)
        return out, infer


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two uint8 images of the same shape (``inf`` if identical)."""
    mse = float((a.float() - b.float()).square().mean())
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _child_rss(payload: dict[str, Any]) -> float:
    """Child process: build one row, convert the images once, return the peak RSS (MiB)."""
    torch.set_num_threads(payload["threads"] or torch.get_num_threads())
    m: _Model = payload["model"]
    path: _Path | _UpstreamPath
    if payload["backend"] == UPSTREAM:
        path = _UpstreamPath(m, payload["threads"])
    else:
        path = _Path(m, Backend(payload["backend"]), payload["threads"], payload["calibration"])
    for data in payload["images"]:
        path(data)
    return _own_peak_rss_mb()


def _own_peak_rss_mb() -> float:
    """This process's peak RSS since it started (``VmHWM``; ``ru_maxrss`` would include the
    parent's RSS at fork time on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return peak_rss_mb()


def _measure_rss(payload: dict[str, Any]) -> float | None:
    ctx = multiprocessing.get_context("spawn")
    try:
        with ctx.Pool(1) as pool:
            return float(pool.apply(_child_rss, (payload,)))
    except Exception:  # a child that cannot start (no /dev/shm, frozen app): leave the cell empty
        return None


def run_bench(opts: BenchOptions, progress: ProgressFn | None = None) -> BenchResult:
    """Measure every backend × model, plus the upstream-equivalent row.

    Args:
        opts: what to measure.
        progress: called with a short line as each stage starts.

    Returns:
        The rows (model by model, backends in the order asked, the upstream row last).

    Raises:
        UsageError: no photos; WeightsError: a named model cannot be loaded;
        SetupError: onnx/int8 asked for explicitly without onnxruntime.
    """
    say = progress or (lambda _msg: None)
    if opts.threads > 0:
        torch.set_num_threads(opts.threads)
    images = load_images(opts.images, opts.size, opts.max_images)
    notes: list[str] = []
    if opts.models:
        models = [_resolve_model(name) for name in opts.models]
    else:
        models, notes = _default_models()
    backends = list(dict.fromkeys(b for b in opts.backends if b is not Backend.AUTO))
    if not onnxruntime_available() and any(b in (Backend.ONNX, Backend.INT8) for b in backends):
        backends = [b for b in backends if b not in (Backend.ONNX, Backend.INT8)]
        notes.append("onnxruntime is not installed: onnx and int8 rows left out")
    if Backend.EAGER not in backends:
        backends.insert(0, Backend.EAGER)  # the reference for PSNR and speed-ups

    paths: list[tuple[_Model, str, _Path | _UpstreamPath]] = []
    for m in models:
        for backend in backends:
            say(f"preparing {m.label} / {backend.value}")
            paths.append((m, backend.value, _Path(m, backend, opts.threads, opts.calibration)))
    if opts.upstream:
        v2 = next((m for m in models if m.spec.arch is Arch.V2), None) or _resolve_model(Arch.V2.value)
        paths.append((v2, UPSTREAM, _UpstreamPath(v2, opts.threads)))

    reference: dict[str, list[torch.Tensor]] = {}
    outputs: dict[int, list[torch.Tensor]] = {}
    e2e: dict[int, list[float]] = {i: [] for i in range(len(paths))}
    infer: dict[int, list[float]] = {i: [] for i in range(len(paths))}
    for rnd in range(opts.repeat + 1):  # round 0 warms up (traces, first-run allocations)
        say(f"round {rnd}/{opts.repeat}" + (" (warm-up)" if rnd == 0 else ""))
        for i, (_m, _b, path) in enumerate(paths):
            total = inf_total = 0.0
            outs = []
            for data in images:
                t0 = time.perf_counter()
                out, inf_ms = path(data)
                total += (time.perf_counter() - t0) * 1000.0
                inf_total += inf_ms
                outs.append(out)
            if rnd == 0:
                outputs[i] = outs
                continue
            e2e[i].append(total / len(images))
            infer[i].append(inf_total / len(images))
    for i, (m, b, _p) in enumerate(paths):
        if b == Backend.EAGER.value:
            reference[m.label] = outputs[i]

    upstream_ms = next((statistics.median(e2e[i]) for i, (_m, b, _p) in enumerate(paths) if b == UPSTREAM), None)
    rows = []
    for i, (m, b, _p) in enumerate(paths):
        ms = statistics.median(e2e[i])
        ref_key = m.label
        ref = reference.get(ref_key)
        quality = None
        if ref is not None:
            values = [psnr(o, r) for o, r in zip(outputs[i], ref, strict=True)]
            quality = math.inf if all(math.isinf(v) for v in values) else statistics.fmean(
                v for v in values if not math.isinf(v))
        eager_ms = next(statistics.median(e2e[j]) for j, (mm, bb, _) in enumerate(paths)
                        if mm.label == m.label and bb in (Backend.EAGER.value, UPSTREAM))
        rss = None
        if opts.rss:
            say(f"peak RSS: {m.label} / {b}")
            rss = _measure_rss({"model": m, "backend": b, "threads": opts.threads, "images": images,
                                "calibration": opts.calibration})
        rows.append(BenchRow(
            model=m.label, backend=b, ms_per_image=ms, infer_ms=statistics.median(infer[i]),
            images_per_s=1000.0 / ms if ms > 0 else math.inf, peak_rss_mb=rss, psnr_db=quality,
            speedup_vs_eager=eager_ms / ms if ms > 0 else None,
            speedup_vs_upstream=upstream_ms / ms if upstream_ms and ms > 0 else None,
        ))
    threads = opts.threads or torch.get_num_threads()
    return BenchResult(tuple(rows), len(images), opts.size, opts.repeat, threads, cpu_name(), _versions(),
                       tuple(notes))


def _fmt(v: float | None, spec: str, suffix: str = "") -> str:
    if v is None:
        return "–"
    if math.isinf(v):
        return "identical"
    return f"{v:{spec}}{suffix}"


COLUMNS = ("model", "backend", "ms/image", "infer ms", "images/s", "peak RSS MB", "PSNR vs eager fp32",
           "× eager", "× upstream")


def table_rows(result: BenchResult) -> list[tuple[str, ...]]:
    """The table's cells, one tuple per row, in :data:`COLUMNS` order."""
    return [
        (r.model, r.backend, _fmt(r.ms_per_image, ".0f"), _fmt(r.infer_ms, ".0f"), _fmt(r.images_per_s, ".2f"),
         _fmt(r.peak_rss_mb, ".0f"), _fmt(r.psnr_db, ".1f", " dB"), _fmt(r.speedup_vs_eager, ".2f", "×"),
         _fmt(r.speedup_vs_upstream, ".2f", "×"))
        for r in result.rows
    ]


def caption(result: BenchResult) -> str:
    """One line: the conditions of the measurement."""
    return (f"{result.images} photos at {result.size}×{result.size}, end to end (decode → infer → JPEG encode), "
            f"median of {result.repeat} interleaved rounds, {result.threads} threads; {result.machine}; "
            f"{result.versions}")


def to_markdown(result: BenchResult) -> str:
    """The result as a Markdown table with its caption and notes."""
    lines = [caption(result), "", "| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join(["---", "---"] + ["---:"] * (len(COLUMNS) - 2)) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(result)]
    lines += [""] + [f"Note: {n}" for n in result.notes]
    return "\n".join(lines).rstrip() + "\n"


def rows_as_dicts(result: BenchResult) -> list[dict[str, object]]:
    """The rows as JSON-ready dicts (``inf`` PSNR as ``null`` with ``identical: true``)."""
    out: list[dict[str, object]] = []
    for r in result.rows:
        d: dict[str, object] = dict(r.__dict__)
        if r.psnr_db is not None and math.isinf(r.psnr_db):
            d["psnr_db"], d["identical"] = None, True
        out.append(d)
    return out
