"""``animecli convert``: options → :class:`~animecli.options.ConvertOptions`, a progress display,
and the exit code from the run's summary."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from animecli.errors import AnimecliError
from animecli.options import (
    Backend,
    ClearCache,
    ConvertOptions,
    EngineKind,
    EngineOptions,
    Existing,
    LoadOptions,
    ModelChoice,
    OutputFormat,
    Precision,
    RayOptions,
    VideoOptions,
    WriteOptions,
    auto_jobs,
)

if TYPE_CHECKING:
    from animecli.run.report import FileRecord, Summary
    from animecli.run.session import RunInfo
from animecli.cli import startup
from animecli.cli.console import EXIT_FAILED, EXIT_OK, EXIT_USAGE, err, fail, out, printable
from animecli.cli.signals import EXIT_SIGNAL, Abort, Signals


def record_line(rec: FileRecord) -> str:
    """One file's record as a printable line (``convert`` and ``watch``)."""
    return printable(_record_text(rec))


def _record_text(rec: FileRecord) -> str:
    if rec.status.value == "failed":
        return f"FAILED {rec.src}: {rec.reason}"
    if rec.status.value == "skipped":
        return f"skipped {rec.src}: {rec.reason}"
    if rec.status.value == "planned":
        return f"would convert {rec.src} -> {rec.dst}" + (f" ({rec.notes})" if rec.notes else "")
    if rec.frames:  # a video (issue 25): per-frame figures instead of per-stage times
        speed = 1000.0 / rec.ms_per_frame if rec.ms_per_frame else 0.0
        parts = [rec.processed_size, f"{rec.frames} frames at {rec.fps:g} fps", f"{rec.ms_per_frame:.0f} ms/frame",
                 f"{speed:.2f} frames/s", f"peak rss {rec.peak_rss_mb:.0f} MB"]
    else:
        parts = [rec.processed_size, f"load {rec.load_ms:.0f} ms", f"infer {rec.infer_ms:.0f} ms",
                 f"save {rec.save_ms:.0f} ms", f"rss {rec.rss_mb:.0f} MB"]
    if rec.gpu_peak_mb:
        parts.append(f"gpu {rec.gpu_peak_mb:.0f} MB")
    note = f" [{rec.notes}]" if rec.notes else ""
    return f"converted {rec.src} -> {rec.dst} ({', '.join(parts)}){note}"


def summary_line(s: Summary) -> str:
    """The run's totals as one line."""
    done = f"{s.planned} would be converted" if s.planned else f"{s.converted} converted"  # planned: --dry-run
    text = (f"{done}, {s.skipped} skipped, {s.failed} failed"
            + (f", {s.ignored} non-image files ignored" if s.ignored else "")
            + f" in {s.elapsed_s:.1f} s ({s.images_per_s:.2f} images/s, peak RSS {s.peak_rss_mb:.0f} MB)")
    return text


def convert(
    paths: Annotated[list[str], typer.Argument(help="INPUT... OUTPUT: image files, folders or globs, then the output folder.", metavar="INPUT... OUTPUT")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model name (see `animecli models list`); default: the shipped default.")] = None,
    weights: Annotated[Path | None, typer.Option("--weights", "-w", help="A generator state dict, or an AnimeGAN ONNX file (AnimeGANv3, AnimeGANv2; needs the onnx extra; imported once and cached), to use instead of a named model.")] = None,
    arch: Annotated[str | None, typer.Option(help="Architecture of --weights (v2, lite, lite2 or lite3); default: detected from its keys.")] = None,
    recursive: Annotated[bool, typer.Option("--recursive/--no-recursive", help="Descend into sub-folders (the tree is mirrored).")] = True,
    hidden: Annotated[bool, typer.Option("--hidden", help="Also take hidden files and folders (names starting with '.') inside input folders; by default they are passed over. Files named as inputs are always taken.")] = False,
    max_size: Annotated[int, typer.Option(min=0, help="Down-scale so the long side is at most this many pixels; 0 = keep full size.")] = 1024,
    max_pixels: Annotated[int, typer.Option(min=0, help="Refuse images larger than this many pixels (decompression bombs); 0 = no limit.")] = 100_000_000,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N. Asking for CUDA without it is an error.")] = "auto",
    precision: Annotated[Precision, typer.Option(help="auto = fp16 on CUDA, fp32 on CPU.")] = Precision.AUTO,
    backend: Annotated[Backend, typer.Option(help="auto (CPU: onnx if onnxruntime is installed, else eager; CUDA: eager), eager, traced (TorchScript, frozen), onnx (onnxruntime, CPU) or int8 (quantised onnx, CPU; slightly different output). See docs/speed.md.")] = Backend.AUTO,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass (images of equal size are batched).")] = 1,
    prefetch: Annotated[int, typer.Option(min=1, help="Images decoded ahead of the model.")] = 4,
    jobs: Annotated[str, typer.Option("--jobs", "-j", help="Threads that decode and encode images, LOAD:SAVE (e.g. 4:2), N for both, or auto (decode: up to 4, encode: up to 2, by the CPU count). SAVE 0 = encode on the model's thread.")] = "auto",
    threads: Annotated[int, typer.Option(min=0, help="CPU threads for torch and onnxruntime; 0 = their default (all cores).")] = 0,
    calibration: Annotated[Path | None, typer.Option(help="--backend int8: a folder of photos to calibrate on (once per model; cached); default: the bundled examples.")] = None,
    compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile the eager model (CUDA: with CUDA graphs). Compiles once per image size (tens of seconds): for large folders of one size.")] = False,
    clear_cache: Annotated[ClearCache, typer.Option(help="When to empty the CUDA cache between batches.")] = ClearCache.AUTO,
    tile: Annotated[str, typer.Option(help="Tiled inference: auto (when an image would not fit --max-memory), 0 = never, or a tile side in pixels.")] = "auto",
    max_memory: Annotated[int, typer.Option(min=0, help="Memory budget for the model's activations, MB; 0 = automatic (CPU 768, CUDA 80% of free).")] = 0,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format; same = the input's.")] = OutputFormat.SAME,
    quality: Annotated[int, typer.Option(min=1, max=100, help="JPEG/WebP quality.")] = 92,
    suffix: Annotated[str, typer.Option(help="Added to each output file name's stem.")] = "",
    overwrite: Annotated[bool, typer.Option("--overwrite/--skip-existing", help="Redo outputs that already exist (default: skip those made from the same input with the same settings).")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="When skipping, compare inputs by content (sha256) instead of size and modification time; reads every input twice.")] = False,
    report: Annotated[Path | None, typer.Option(help="Write a report: .json, .csv or .jsonl.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be converted; convert nothing.")] = False,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="Print only failures, then the summary; nothing when all went well (cron).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print every file, also on a terminal.")] = False,
    engine_kind: Annotated[EngineKind, typer.Option("--engine", help="local (this process) or ray (a pool of Ray actors; pip install 'animecli\\[ray]'). See docs/ray.md.")] = EngineKind.LOCAL,
    address: Annotated[str | None, typer.Option(help="--engine ray: the cluster to join (e.g. auto, or HOST:6379); default: RAY_ADDRESS, else a local Ray instance.")] = None,
    num_gpus_per_worker: Annotated[float | None, typer.Option(min=0.0, help="--engine ray: GPUs per model actor (0 = CPU actors; 0.5 = two per GPU); default: 1 if the cluster has GPUs, else 0.")] = None,
    workers: Annotated[int, typer.Option(min=0, help="--engine ray: model actors; 0 = as many as the cluster's GPUs (or CPUs) allow.")] = 0,
    crf: Annotated[int, typer.Option(min=0, max=51, help="Videos: H.264 quality, 0 (lossless) to 51 (worst); 18-23 look good.")] = 20,
    preset: Annotated[str, typer.Option(help="Videos: x264 preset, ultrafast ... veryslow (slower = smaller files).")] = "medium",
    temporal: Annotated[bool | None, typer.Option("--temporal/--no-temporal", help="Videos: carry the norm statistics across frames (reset on scene cuts) so colours do not pulse; default off (bench/flicker.py: no gain on pans and zooms with the shipped models, and the pruned AnimeGANv3 styles lose some of their look). Runs onnxruntime's video graph one frame at a time (eager PyTorch without onnxruntime).")] = None,
) -> None:
    """Convert photos to anime style: [bold]animecli convert photos/ out/[/].

    Exit codes: 0 all converted or skipped; 1 some files failed (the rest were
    converted) or the output became unwritable; 2 usage or setup error;
    3 another run is writing to the same OUTPUT (its lock file OUTPUT/.animecli.lock);
    130/143 interrupted (after finishing the current image and writing the report).
    """
    opts = convert_options(**locals())  # every parameter above, by name (animecli watch parses them too)
    summary = _run_with_display(opts, quiet, verbose)
    _finish_convert(summary, quiet)


def convert_options(
    paths: list[str], model: str | None, weights: Path | None, arch: str | None, recursive: bool, hidden: bool,
    max_size: int, max_pixels: int, device: str, precision: Precision, backend: Backend, batch_size: int,
    prefetch: int, jobs: str, threads: int, calibration: Path | None, compile_model: bool, clear_cache: ClearCache,
    tile: str, max_memory: int, fmt: OutputFormat, quality: int, suffix: str, overwrite: bool, verify: bool,
    report: Path | None, dry_run: bool, quiet: bool, verbose: bool, engine_kind: EngineKind, address: str | None,
    num_gpus_per_worker: float | None, workers: int, crf: int, preset: str, temporal: bool | None,
) -> ConvertOptions:
    """``convert``'s arguments checked and turned into options (exits 2 on a bad one)."""
    if len(paths) < 2:
        err.print("error: give at least one INPUT and the OUTPUT folder, e.g. `animecli convert photos/ out/`")
        raise typer.Exit(EXIT_USAGE)
    *inputs, output = paths
    if not output.strip():
        # An unset variable in a script (`animecli convert in "$OUT"`): "" would mean the current folder.
        err.print("error: OUTPUT is an empty string (an unset variable?); give the output folder")
        raise typer.Exit(EXIT_USAGE)
    load_jobs, save_jobs = _jobs(jobs)
    if any(sep and sep in suffix for sep in ("/", "\0", os.sep, os.altsep)):
        # The suffix goes into a file name: a separator would put outputs outside OUTPUT.
        err.print(f"error: --suffix {printable(suffix)!r}: no path separators in a suffix; use e.g. --suffix _anime")
        raise typer.Exit(EXIT_USAGE)
    if engine_kind is not EngineKind.RAY:
        ray_only = [name for name, given in (("--address", address is not None), ("--workers", workers != 0),
                                              ("--num-gpus-per-worker", num_gpus_per_worker is not None)) if given]
        if ray_only:
            err.print(f"error: {', '.join(ray_only)}: for --engine ray only (add it, or leave them out; "
                      "decode/encode threads are -j/--jobs)")
            raise typer.Exit(EXIT_USAGE)
    opts = ConvertOptions(
        inputs=tuple(inputs),
        output=Path(output),
        recursive=recursive,
        hidden=hidden,
        model=ModelChoice(model, weights, arch),
        load=LoadOptions(max_size=max_size, max_pixels=max_pixels, prefetch=prefetch, workers=load_jobs),
        engine=EngineOptions(device, precision, backend, batch_size, clear_cache, threads, _tile(tile), max_memory,
                             calibration, compile=compile_model),
        write=WriteOptions(fmt, quality, suffix, Existing.OVERWRITE if overwrite else Existing.SKIP, verify,
                           workers=save_jobs),
        report=report,
        dry_run=dry_run,
        engine_kind=engine_kind,
        ray=RayOptions(address, num_gpus_per_worker, workers),
        video=VideoOptions(crf=crf, preset=preset, temporal=temporal),
    )
    if preset not in _PRESETS:
        err.print(f"error: --preset {printable(preset)!r}: use one of {', '.join(_PRESETS)}")
        raise typer.Exit(EXIT_USAGE)
    return opts


# x264's presets (animecli.io.video.PRESETS, repeated so that the CLI need not import the video module).
_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


def _finish_convert(summary: Summary, quiet: bool) -> None:
    """Print the summary and exit with the run's code."""
    if summary.fatal:
        err.print(f"[bold red]error:[/] {escape(printable(summary.fatal))}", soft_wrap=True)
    if not quiet or summary.failed or summary.fatal:
        (err if summary.failed or summary.fatal else out).print(summary_line(summary), soft_wrap=True)
    if (summary.converted == 0 and summary.skipped == 0 and summary.failed == 0 and summary.planned == 0
            and not summary.interrupted):
        from animecli.io.discovery import SUPPORTED

        kinds = ", ".join(sorted(e.lstrip(".") for e in SUPPORTED))
        err.print(f"error: no images found in the inputs (supported: {kinds}); check the paths and extensions")
        raise typer.Exit(EXIT_USAGE)
    raise typer.Exit(exit_code(summary, None))


def _tile(value: str) -> int:
    """``auto`` → -1, ``0`` → 0, ``N`` → N (at least 64)."""
    if value == "auto":
        return -1
    try:
        n = int(value)
    except ValueError:
        n = -2
    if n != 0 and n < 64:
        err.print(f"error: --tile {value!r}: use auto, 0 (never tile) or a tile side of at least 64 pixels")
        raise typer.Exit(EXIT_USAGE)
    return n


def _jobs(value: str) -> tuple[int, int]:
    """``--jobs``: ``auto``, ``N`` or ``LOAD:SAVE`` → (decode threads ≥ 1, encode threads ≥ 0)."""
    if value == "auto":
        return auto_jobs()
    parts = value.split(":")
    try:
        load, save = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
        ok = len(parts) <= 2 and load >= 1 and save >= 0
    except ValueError:
        ok = False
    if not ok:
        err.print(f"error: --jobs {value!r}: use auto, N (decode and encode threads) or LOAD:SAVE, e.g. 4:2 "
                  "(LOAD at least 1; SAVE 0 encodes on the model's thread)")
        raise typer.Exit(EXIT_USAGE)
    return load, save


def exit_code(summary: Summary, signum: int | None) -> int:
    """The exit status: the signal's (130/143) when stopped by one, else 1 if anything failed, else 0."""
    if signum is not None:
        return EXIT_SIGNAL.get(signal.Signals(signum), 130)
    return EXIT_FAILED if summary.failed or summary.fatal else EXIT_OK


def _run_with_display(opts: ConvertOptions, quiet: bool, verbose: bool) -> Summary:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from animecli.run.convert import run_convert

    tty = out.is_terminal
    progress = Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=out, transient=True,
    ) if tty and not quiet else None
    task = progress.add_task("converting", total=None, rate="") if progress else None
    done = [0]

    def on_start(info: RunInfo) -> None:
        if not quiet:
            licence = f"; licence: {info.licence}" if info.licence else ""
            out.print(f"model {info.model} on {info.device} ({info.precision}, {info.backend}){licence}",
                      markup=False, soft_wrap=True)
        if info.warning:  # also with --quiet: it costs every run (a cron job's log shows it)
            err.print(f"warning: {escape(printable(info.warning))}", soft_wrap=True)

    def on_record(rec: FileRecord) -> None:
        done[0] += 1
        line = record_line(rec)
        if rec.status.value == "failed":
            err.print(line, markup=False, soft_wrap=True)
        elif (verbose or not tty or opts.dry_run) and not quiet:
            out.print(line, markup=False, soft_wrap=True)
        if progress is not None and task is not None:
            progress.update(task, completed=done[0], description=escape(printable(Path(rec.src).name[:40])))

    def on_frames(src: str, frames_done: int, total: int) -> None:  # a video's progress, in frames
        if progress is not None and task is not None:
            name = escape(printable(Path(src).name[:30]))
            progress.update(task, description=f"{name} frame {frames_done}/{total or '?'}")

    try:
        with Signals() as sig:
            if sig.received is not None:  # a signal while starting up: nothing has run; the report says so
                problem = startup.write_empty_report(opts.report)
                if problem:
                    err.print(f"error: {escape(printable(problem))}", soft_wrap=True)
                err.print(startup.message(sig.received))
                raise typer.Exit(EXIT_SIGNAL.get(signal.Signals(sig.received), 130))
            try:
                if progress:
                    progress.start()
                summary = run_convert(opts, on_record, on_start, sig.stop, on_frames)
            except AnimecliError as exc:
                raise fail(exc) from None
            finally:
                if progress:
                    progress.stop()
    except Abort as exc:  # a second signal: stop now
        # Exit here, not through Typer: it turns any KeyboardInterrupt into 130, silently.
        err.print("aborted")
        raise typer.Exit(EXIT_SIGNAL.get(signal.Signals(exc.signum), 130)) from None
    if summary.interrupted and sig.received is not None:
        err.print(summary_line(summary), soft_wrap=True)
        err.print(f"interrupted by {signal.Signals(sig.received).name}; rerun the same command to continue")
        raise typer.Exit(exit_code(summary, sig.received))
    return summary

