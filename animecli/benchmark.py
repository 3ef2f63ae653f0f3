# Over 400 lines: one measurement (paths, interleaved rounds, PSNR reference, RSS child) that reads best
# in one piece; the engine choice is animecli.inference.select's, the table animecli.cli.bench_table's.
"""``animecli bench``: every backend × model on a fixed image set, side by side.

Each row converts the same images end to end, in memory: JPEG decode → prepare →
the engine's forward pass → JPEG encode. Rows are interleaved round by round
(row A, row B, …, then again), so that load from other processes affects all of
them alike; the figures are medians over the rounds. The quality column is the
PSNR of each row's 8-bit output against the same model's eager float32 output.

The *upstream-equivalent* row is the path an AnimeGANv2 user would run without
animecli: the v2 generator with ``torch.nn.GroupNorm``, contiguous (NCHW) tensors,
eager float32 under ``torch.no_grad``, one image at a time, PIL ↔ tensor conversions
written the usual way (on the benchmark's device).

Each row's time is split into load (JPEG decode and prepare), infer (the engine,
host↔device copies included) and save (JPEG encode), all on one thread one after
the other, so the split shows where a pipelined converter has to overlap work.
With ``--device cuda`` the PSNR reference is still eager float32 *on the CPU*
(computed once, untimed), and each row reports its peak GPU memory.

Peak RSS is measured per row in a fresh child process (``spawn``) that loads the
model, builds the backend and converts the image set once: the high-water mark of
a process doing only that.

This module never prints; :mod:`animecli.cli.bench_table` renders the result.
"""

from __future__ import annotations

import io
import itertools
import math
import multiprocessing
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch import nn

from animecli.errors import UsageError, WeightsError
from animecli.inference.ort_session import onnxruntime_available
from animecli.inference.tensors import array_to_tensor, image_to_tensor, tensor_to_image
from animecli.io.photos import bundled_photos_dir, photo_files, read_photos
from animecli.io.transforms import UInt8Array, array_to_image, prepare
from animecli.models.registry import build_generator
from animecli.models.spec import Arch, ArchSpec, describe
from animecli.options import Backend, EngineOptions, ModelChoice, Precision
from animecli.run.report import peak_rss_mb

if TYPE_CHECKING:
    from animecli.inference.ort_engine import BatchRunner

UPSTREAM = "upstream-equivalent"
DEFAULT_BACKENDS = (Backend.EAGER, Backend.TRACED, Backend.ONNX, Backend.INT8)

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
        device: ``cpu``, ``cuda`` or ``cuda:N`` (onnx/int8 rows are CPU-only and left out on CUDA).
        precision: the engine rows' precision (``auto``: fp16 on CUDA, fp32 on CPU).
        batch_size: images per forward pass in the engine rows (the upstream row: 1).
        compile: ``torch.compile`` the eager rows.
        extra_precisions: one more eager row per model at each of these precisions, labelled
            ``eager <precision>`` (e.g. ``bf16`` beside the float32 rows on a CPU with AMX).
            ``None``: ``bf16`` on a CPU with AMX (where it is the fastest path; a note says
            so), none elsewhere.
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
    device: str = "cpu"
    precision: Precision = Precision.AUTO
    batch_size: int = 1
    compile: bool = False
    extra_precisions: tuple[Precision, ...] | None = None


@dataclass(frozen=True)
class BenchRow:
    """One backend × model.

    Attributes:
        model: model label.
        backend: backend name, or ``upstream-equivalent``.
        ms_per_image: median end-to-end milliseconds per image (decode → infer → encode).
        infer_ms: median milliseconds per image in the engine alone (model only, with copies).
        load_ms: median milliseconds per image decoding and preparing.
        save_ms: median milliseconds per image encoding.
        images_per_s: 1000 / ``ms_per_image``.
        peak_rss_mb: peak RSS of a child process doing this row once (``None``: not measured).
        psnr_db: mean PSNR against the same model's eager float32 output (``inf``: identical;
            ``None``: no reference).
        speedup_vs_eager: the model's eager ``ms_per_image`` / this row's.
        speedup_vs_upstream: the upstream row's ``ms_per_image`` / this row's (``None``: no upstream row).
        gpu_peak_mb: peak CUDA memory of one batch (``None`` on CPU).
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
    load_ms: float = 0.0
    save_ms: float = 0.0
    gpu_peak_mb: float | None = None


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
    device: str = "cpu"
    batch_size: int = 1


@dataclass(frozen=True)
class _Model:
    label: str
    spec: ArchSpec
    state: dict[str, torch.Tensor]
    multiple: int
    digest: str | None
    # How convert would name it (None for seeded random weights): bench then picks the engine
    # through the same function as convert (animecli.inference.select).
    choice: ModelChoice | None = None


def cpu_name() -> str:
    """The CPU model name (``/proc/cpuinfo``), the number of logical CPUs and the vector ISA torch uses.

    Virtual machines often report a bare "Intel(R) Xeon(R) Processor"; the ISA (and AMX, which
    decides whether bfloat16 pays) is what tells their figures apart.
    """
    from animecli.inference.torch_engine import cpu_has_amx

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    isa = torch.backends.cpu.get_cpu_capability() + (" + AMX" if cpu_has_amx() else "")
    return f"{name}, {multiprocessing.cpu_count()} CPUs, {isa}"


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
    if folder is not None and not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise UsageError(f"--images {folder} {what}; pass a folder of photos")
    folder = folder if folder is not None else bundled_photos_dir()
    if folder is None or not folder.is_dir():
        raise UsageError("no benchmark photos: the bundled examples/ folder is not here; pass --images DIR")
    out: list[bytes] = []
    # Counts readable photos: a broken one is passed over, not counted.
    for _, rgb in itertools.islice(read_photos(photo_files(folder), lambda img: img.convert("RGB")), limit):
        side = min(rgb.size)
        left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
        square = rgb.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        square.save(buf, format="JPEG", quality=95)
        out.append(buf.getvalue())
    if not out:
        raise UsageError(f"no readable photos in {folder}; pass --images DIR with a few JPEG/PNG photos")
    return out


_BENCH_HINTS = (
    ("or pass a file with --weights PATH", "or pass a generator's .pt file to -m"),
    (", or pass --arch v2, lite, lite2 or lite3", " (bench reads the architecture from the keys; "
     "`animecli convert --weights FILE --arch …` can be told it)"),
)


def _resolve_model(name: str) -> _Model:
    """A model by manifest name, weights path, or ``v2``/``lite`` (seeded random weights)."""
    from animecli.weights.resolve import load_generator

    if name in (a.value for a in Arch):
        torch.manual_seed(0)
        spec = ArchSpec(Arch(name))
        model = build_generator(spec)
        return _Model(f"{name} (random weights)", spec, _state(model), describe(spec.arch).size_multiple, None)
    path = Path(name)
    choice = ModelChoice(weights=path) if path.suffix == ".pt" or path.is_file() else ModelChoice(name)
    try:
        loaded = load_generator(choice)
    except WeightsError as exc:
        # load_generator's hints name convert's options; bench takes a path in -m and has no --arch.
        message = str(exc)
        for convert_hint, bench_hint in _BENCH_HINTS:
            message = message.replace(convert_hint, bench_hint)
        raise WeightsError(message) from None
    return _Model(f"{loaded.name} ({loaded.spec.arch.value})", loaded.spec, _state(loaded.model),
                  loaded.input_multiple, loaded.sha256, choice)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _default_models() -> tuple[list[_Model], list[str]]:
    from animecli.weights.manifest import load_manifest

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


@dataclass
class _Times:
    """Milliseconds spent on a set of images, and their outputs."""

    outputs: list[torch.Tensor]
    load: float = 0.0
    infer: float = 0.0
    save: float = 0.0
    gpu_peak_mb: float = 0.0


def _decode(data: bytes) -> UInt8Array:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return prepare(img, 0).rgb


def _encode(out: Image.Image) -> None:
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=92)


class _Path:
    """One row's end-to-end conversion of encoded images, ``batch_size`` per forward pass."""

    def __init__(self, m: _Model, backend: Backend, opts: BenchOptions, device: str | None = None,
                 precision: Precision | None = None, batch_size: int | None = None,
                 compile: bool | None = None) -> None:
        from animecli.inference.select import select_engine, torch_engine_for

        self.batch_size = batch_size or opts.batch_size
        eopts = EngineOptions(
            device=device or opts.device, precision=precision or opts.precision, backend=backend,
            batch_size=self.batch_size, threads=opts.threads, tile=0, calibration=opts.calibration,
            compile=opts.compile if compile is None else compile,
        )
        self.engine: BatchRunner
        if m.choice is not None:
            # The engine convert picks for these options (torch-free onnx once its graph is cached).
            self.engine = select_engine(m.choice, eopts, steady=True).engine
        else:
            model = build_generator(m.spec)
            model.load_state_dict(m.state)
            self.engine = torch_engine_for(model, m.multiple, eopts, m.spec, m.digest)

    def __call__(self, images: list[bytes]) -> _Times:
        from animecli.inference.batching import SizeBatcher

        t = _Times([])
        batcher: SizeBatcher[UInt8Array] = SizeBatcher(self.batch_size)

        def run(batch: list[UInt8Array]) -> None:
            t1 = time.perf_counter()
            result = self.engine.run_batch(batch)
            t2 = time.perf_counter()
            for out, err in zip(result.images, result.errors, strict=True):
                if out is None:
                    raise RuntimeError(err or "inference failed")
                _encode(array_to_image(out))
                t.outputs.append(array_to_tensor(out))
            t.infer += (t2 - t1) * 1000.0
            t.save += (time.perf_counter() - t2) * 1000.0
            t.gpu_peak_mb = max(t.gpu_peak_mb, result.gpu_peak_mb)

        for i, data in enumerate(images):
            t0 = time.perf_counter()
            rgb = _decode(data)
            t.load += (time.perf_counter() - t0) * 1000.0
            for due in batcher.add(rgb.shape[:2], rgb, i):
                run(due)
        for due in batcher.drain():
            run(due)
        return t


class _UpstreamPath:
    """The plain AnimeGANv2 way: nn.GroupNorm, NCHW, eager float32 under no_grad, one image at a time."""

    def __init__(self, m: _Model, threads: int, device: torch.device) -> None:
        if threads > 0:
            torch.set_num_threads(threads)
        self.device = device
        spec = replace(m.spec, fast_norm=False)
        self.model = build_generator(spec)
        self.model.load_state_dict(m.state)
        self.model.eval().to(self.device)

    def __call__(self, images: list[bytes]) -> _Times:
        t = _Times([])
        cuda = self.device.type == "cuda"
        for data in images:
            t0 = time.perf_counter()
            img = Image.open(io.BytesIO(data)).convert("RGB")
            x = image_to_tensor(img).float().div(255.0).unsqueeze(0) * 2.0 - 1.0
            t1 = time.perf_counter()
            with torch.no_grad():
                y = self.model(x.to(self.device)).cpu()
            t2 = time.perf_counter()
            y = y.squeeze(0).clamp(-1.0, 1.0) * 0.5 + 0.5
            out = (y * 255.0).round().to(torch.uint8)
            _encode(tensor_to_image(out))
            t3 = time.perf_counter()
            t.outputs.append(out)
            t.load += (t1 - t0) * 1000.0
            t.infer += (t2 - t1) * 1000.0
            t.save += (t3 - t2) * 1000.0
        if cuda:
            t.gpu_peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        return t


def _precision_label(precision: Precision) -> str:
    return f"{Backend.EAGER.value} {precision.value}"


def _row_path(m: _Model, label: str, opts: BenchOptions) -> _Path:
    """The engine row behind a row label (``onnx``, ``eager bf16``, ...)."""
    for precision in opts.extra_precisions or ():
        if label == _precision_label(precision):
            return _Path(m, Backend.EAGER, opts, precision=precision)
    return _Path(m, Backend(label), opts)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two uint8 images of the same shape (``inf`` if identical)."""
    mse = float((a.float() - b.float()).square().mean())
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _child_rss(payload: dict[str, Any]) -> float:
    """Child process: build one row, convert the images once, return the peak RSS (MiB)."""
    m: _Model = payload["model"]
    opts: BenchOptions = payload["opts"]
    torch.set_num_threads(opts.threads or torch.get_num_threads())
    path: _Path | _UpstreamPath
    if payload["backend"] == UPSTREAM:
        from animecli.inference.device import resolve_device

        path = _UpstreamPath(m, opts.threads, resolve_device(opts.device))
    else:
        path = _row_path(m, payload["backend"], opts)
    path(payload["images"])
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
    from animecli.inference.device import resolve_device
    from animecli.inference.torch_engine import cpu_has_amx

    device = resolve_device(opts.device)
    cpu = device.type == "cpu"
    if opts.extra_precisions is None:
        # On AMX, eager bfloat16 beats every float32 backend (1.5x the default model, 2.2x v2 on a
        # 2-core Xeon, docs/speed.md), but --precision auto stays float32 so that outputs do not
        # depend on the CPU: the table shows the row so that users can see what they would gain.
        amx = cpu and opts.precision in (Precision.AUTO, Precision.FP32) and cpu_has_amx()
        opts = replace(opts, extra_precisions=(Precision.BF16,) if amx else ())
        if amx:
            notes.append("this CPU has AMX: an 'eager bf16' row is added (convert --precision bf16; "
                         "--extra-precision fp32 leaves it out)")
    backends = list(dict.fromkeys(b for b in opts.backends if b is not Backend.AUTO))
    if not cpu and any(b in (Backend.ONNX, Backend.INT8) for b in backends):
        backends = [b for b in backends if b not in (Backend.ONNX, Backend.INT8)]
        notes.append("onnx and int8 run on the CPU only: their rows are left out on CUDA")
    if not onnxruntime_available() and any(b in (Backend.ONNX, Backend.INT8) for b in backends):
        backends = [b for b in backends if b not in (Backend.ONNX, Backend.INT8)]
        notes.append("onnxruntime is not installed: onnx and int8 rows left out")
    if Backend.EAGER not in backends:
        backends.insert(0, Backend.EAGER)  # the reference for speed-ups (and for PSNR on CPU)

    paths: list[tuple[_Model, str, _Path | _UpstreamPath]] = []
    rows_precision = opts.precision if opts.precision is not Precision.AUTO else (
        Precision.FP32 if cpu else Precision.FP16)
    # An extra row at the rows' own precision would repeat the eager row.
    extra = [p for p in dict.fromkeys(opts.extra_precisions or ()) if p not in (Precision.AUTO, rows_precision)]
    for m in models:
        for backend in backends:
            say(f"preparing {m.label} / {backend.value}")
            paths.append((m, backend.value, _Path(m, backend, opts)))
        for precision in extra:
            label = _precision_label(precision)
            say(f"preparing {m.label} / {label}")
            paths.append((m, label, _Path(m, Backend.EAGER, opts, precision=precision)))
    if opts.upstream:
        v2 = next((m for m in models if m.spec.arch is Arch.V2), None) or _resolve_model(Arch.V2.value)
        paths.append((v2, UPSTREAM, _UpstreamPath(v2, opts.threads, device)))

    outputs: dict[int, list[torch.Tensor]] = {}
    e2e: dict[int, list[float]] = {i: [] for i in range(len(paths))}
    parts: dict[int, list[tuple[float, float, float]]] = {i: [] for i in range(len(paths))}
    gpu_peak: dict[int, float] = {}
    n = len(images)
    for rnd in range(opts.repeat + 1):  # round 0 warms up (traces, compilation, first-run allocations)
        say(f"round {rnd}/{opts.repeat}" + (" (warm-up)" if rnd == 0 else ""))
        for i, (_m, _b, path) in enumerate(paths):
            t0 = time.perf_counter()
            times = path(images)
            total = (time.perf_counter() - t0) * 1000.0
            gpu_peak[i] = max(gpu_peak.get(i, 0.0), times.gpu_peak_mb)
            if rnd == 0:
                outputs[i] = times.outputs
                continue
            e2e[i].append(total / n)
            parts[i].append((times.load / n, times.infer / n, times.save / n))
    reference = _references(models, paths, outputs, images, opts, cpu, say)

    upstream_ms = next((statistics.median(e2e[i]) for i, (_m, b, _p) in enumerate(paths) if b == UPSTREAM), None)
    rows = []
    for i, (m, b, _p) in enumerate(paths):
        ms = statistics.median(e2e[i])
        ref = reference.get(m.label)
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
            rss = _measure_rss({"model": m, "backend": b, "opts": opts, "images": images})
        rows.append(BenchRow(
            model=m.label, backend=b, ms_per_image=ms, infer_ms=statistics.median(p[1] for p in parts[i]),
            images_per_s=1000.0 / ms if ms > 0 else math.inf, peak_rss_mb=rss, psnr_db=quality,
            speedup_vs_eager=eager_ms / ms if ms > 0 else None,
            speedup_vs_upstream=upstream_ms / ms if upstream_ms and ms > 0 else None,
            load_ms=statistics.median(p[0] for p in parts[i]), save_ms=statistics.median(p[2] for p in parts[i]),
            gpu_peak_mb=None if cpu else gpu_peak[i],
        ))
    threads = opts.threads or torch.get_num_threads()
    machine = cpu_name() if cpu else f"{_gpu_name(device)}; host {cpu_name()}"
    return BenchResult(tuple(rows), len(images), opts.size, opts.repeat, threads, machine, _versions(),
                       tuple(notes), device=opts.device, batch_size=opts.batch_size)


def _references(
    models: list[_Model], paths: list[tuple[_Model, str, _Path | _UpstreamPath]],
    outputs: dict[int, list[torch.Tensor]], images: list[bytes], opts: BenchOptions, cpu: bool, say: ProgressFn,
) -> dict[str, list[torch.Tensor]]:
    """Each model's eager float32 CPU outputs: the eager row's on CPU, else one untimed CPU pass."""
    reference: dict[str, list[torch.Tensor]] = {}
    for i, (m, b, _p) in enumerate(paths):
        if b == Backend.EAGER.value and cpu and opts.precision in (Precision.AUTO, Precision.FP32):
            reference[m.label] = outputs[i]
    for m in models:
        if m.label not in reference:
            say(f"reference: {m.label} / eager float32 on the CPU")
            ref = _Path(m, Backend.EAGER, opts, device="cpu", precision=Precision.FP32, batch_size=1, compile=False)
            reference[m.label] = ref(images).outputs
    return reference


def _gpu_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
