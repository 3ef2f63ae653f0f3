"""Options, as frozen dataclasses and ``str`` enums, passed from the CLI down the pipeline."""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path


def auto_jobs() -> tuple[int, int]:
    """``--jobs auto``: (decode threads, encode threads) for this machine.

    Decoding a photo costs about twice encoding it; more threads than cores only add memory.
    """
    cores = os.cpu_count() or 1
    return min(4, cores), min(2, cores)


class Precision(str, Enum):
    """Compute precision. ``auto`` = fp16 on CUDA, fp32 on CPU."""

    AUTO = "auto"
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"


class Backend(str, Enum):
    """How the generator runs (see :mod:`animecli.inference.backends`).

    ``eager``: plain PyTorch; ``traced``: TorchScript-traced and frozen; ``onnx``:
    onnxruntime on the CPU (float32); ``int8``: onnxruntime with statically quantised
    convolutions (changes the output slightly); ``auto``: the fastest float backend
    available for the device (never ``int8``).
    """

    AUTO = "auto"
    EAGER = "eager"
    TRACED = "traced"
    ONNX = "onnx"
    INT8 = "int8"


class OutputFormat(str, Enum):
    """Output image format; ``same`` keeps the input's."""

    SAME = "same"
    PNG = "png"
    JPG = "jpg"
    WEBP = "webp"


class ClearCache(str, Enum):
    """When to release cached GPU memory: ``auto`` = after batches on CUDA when sizes change."""

    AUTO = "auto"
    ALWAYS = "always"
    NEVER = "never"


class EngineKind(str, Enum):
    """Where the conversion runs: in this process, or on a Ray cluster (``animecli[ray]``)."""

    LOCAL = "local"
    RAY = "ray"


class Existing(str, Enum):
    """What to do when the output file already exists."""

    SKIP = "skip"
    OVERWRITE = "overwrite"


@dataclass(frozen=True)
class ModelChoice:
    """Which generator: a manifest name, or a weights file (with optional arch override).

    Attributes:
        name: model name from ``weights/manifest.json`` or a pulled upstream
            model; ``None`` = the default model.
        weights: path to a state dict; wins over ``name``.
        arch: architecture of ``weights`` (``None`` = detect from keys).
        align_corners: v2 upsampling mode for ``weights`` (``None`` = True).
    """

    name: str | None = None
    weights: Path | None = None
    arch: str | None = None
    align_corners: bool | None = None


@dataclass(frozen=True)
class LoadOptions:
    """How images are read and prepared.

    Attributes:
        max_size: long-side limit in pixels (LANCZOS down-scaling); 0 = none.
        max_pixels: refuse images with more pixels than this (decompression bombs).
        prefetch: decoded images waiting ahead of the model (bounded queue depth;
            at least ``workers``).
        workers: decode threads.
    """

    max_size: int = 1024
    max_pixels: int = 100_000_000
    prefetch: int = 4
    workers: int = 1


@dataclass(frozen=True)
class EngineOptions:
    """How the generator runs.

    Attributes:
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        precision: compute precision.
        backend: auto, eager, traced, onnx or int8.
        batch_size: images per forward pass (images of equal processed size).
        clear_cache: when to empty the CUDA cache.
        threads: CPU threads for torch (0 = torch's default).
        tile: tile interior side in pixels; 0 = never tile; -1 = automatic
            (tile only images whose activations would exceed ``max_memory_mb``).
        max_memory_mb: memory budget for the model's activations, MiB; 0 = automatic
            (CPU: 768; CUDA: 80% of the free memory).
        calibration: photos for int8 calibration; ``None`` = the bundled examples.
        compile: ``torch.compile`` the eager model (``backend`` auto then means eager).
    """

    device: str = "auto"
    precision: Precision = Precision.AUTO
    backend: Backend = Backend.AUTO
    batch_size: int = 1
    clear_cache: ClearCache = ClearCache.AUTO
    threads: int = 0
    tile: int = -1
    max_memory_mb: int = 0
    calibration: Path | None = None
    compile: bool = False


@dataclass(frozen=True)
class WriteOptions:
    """How results are saved.

    Attributes:
        format: output format.
        quality: JPEG/WebP quality 1–100.
        suffix: added to the output file's stem (``photo`` → ``photo_anime``).
        existing: skip or overwrite outputs that already exist.
        verify: when skipping, compare inputs by content digest (sha256) rather than
            size and modification time.
        workers: encode/write threads; 0 = encode on the thread that runs the model.
    """

    format: OutputFormat = OutputFormat.SAME
    quality: int = 92
    suffix: str = ""
    existing: Existing = Existing.SKIP
    verify: bool = False
    workers: int = 1


@dataclass(frozen=True)
class RayOptions:
    """How ``--engine ray`` uses its cluster.

    Attributes:
        address: cluster to join (``ray start --head`` prints it; ``auto`` = the one on
            this machine); ``None`` = ``RAY_ADDRESS`` if set, else start a local Ray instance.
        num_gpus_per_worker: GPUs each model actor reserves (fractions share a GPU);
            ``None`` = 1 when the cluster has GPUs and ``--device`` allows them, else 0 (CPU actors).
        workers: model actors in the pool; 0 = as many as the cluster's GPUs (or CPUs) allow.
    """

    address: str | None = None
    num_gpus_per_worker: float | None = None
    workers: int = 0


@dataclass(frozen=True)
class VideoOptions:
    """How video inputs are converted (issue 25; see :mod:`animecli.run.video`).

    Attributes:
        crf: H.264 constant rate factor (0 = lossless … 51 = worst; 18–23 look good).
        preset: x264 speed/size preset (``ultrafast`` … ``veryslow``).
        temporal: carry the norm layers' statistics across frames (an exponential moving
            average, reset on scene cuts) so colours do not pulse; ``None`` = the default
            (off: on pans, zooms and cuts of real photos it did not lower the flicker of the
            shipped models, and the pruned AnimeGANv3 styles lost some of their look;
            bench/flicker.py, docs/video.md).
        momentum: weight of the carried statistics in that average, in [0, 1).
        batch_size: frames per forward pass (0 = ``--batch-size``).
        queue: decoded and stylised frames waiting between the threads (bounded; memory does
            not grow with the video's length).
    """

    crf: int = 20
    preset: str = "medium"
    temporal: bool | None = None
    momentum: float = 0.8
    batch_size: int = 0
    queue: int = 4

    @property
    def carry(self) -> bool:
        """Whether norm statistics are carried across frames (``temporal`` unset = off)."""
        return self.temporal is True

    def fingerprint(self) -> str:
        """What of these options decides a video output (for the resume state)."""
        return f"h264/crf={self.crf}/{self.preset}/temporal={self.momentum if self.carry else 0}"


@dataclass(frozen=True)
class ConvertOptions:
    """Everything ``animecli convert`` needs.

    Attributes:
        inputs: files, directories or glob patterns.
        output: output directory (the input tree is mirrored below it).
        recursive: descend into sub-directories.
        hidden: also take hidden files and folders (``.name``) inside input folders.
        model: which generator.
        load, engine, write: the stages' options.
        report: where to write the machine-readable report (json/csv/jsonl), if anywhere.
        dry_run: list what would be converted, convert nothing.
        engine_kind: run locally, or on a Ray cluster.
        ray: cluster options (``engine_kind`` ray only).
        video: how video inputs are converted.
    """

    inputs: tuple[str, ...]
    output: Path
    recursive: bool = True
    hidden: bool = False
    model: ModelChoice = ModelChoice()
    load: LoadOptions = LoadOptions()
    engine: EngineOptions = EngineOptions()
    write: WriteOptions = WriteOptions()
    report: Path | None = None
    dry_run: bool = False
    engine_kind: EngineKind = EngineKind.LOCAL
    ray: RayOptions = RayOptions()
    video: VideoOptions = VideoOptions()  # issue 25: video inputs
