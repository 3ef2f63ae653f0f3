"""The command line (Typer). The only module that prints or exits.

Heavy imports (torch, the pipeline) happen inside the commands, so that
``animecli --help`` answers at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from animecli import __version__
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
    WriteOptions,
    auto_jobs,
)

if TYPE_CHECKING:
    from animecli.run.report import FileRecord, Summary
    from animecli.run.session import RunInfo

app = typer.Typer(
    name="animecli",
    help="Batch-convert folders of photos into anime-style images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="List, inspect and download generator weights.", no_args_is_help=True)
app.add_typer(models_app, name="models")

# soft_wrap: a message is one line however long (logs and scripts read lines; a terminal folds it).
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


def _printable(text: str) -> str:
    """``text`` safe to print on one line: undecodable file-name bytes (lone surrogates) shown as
    ``\\xNN``, control characters (a newline in a file name) as ``\\n``, ``\\x1b`` …"""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def _check_output_files(paths: dict[str, Path | None]) -> None:
    """Refuse output files that could not be written, before the work that produces them."""
    from animecli.atomic import unwritable_file

    for option, path in paths.items():
        problem = unwritable_file(path) if path is not None else None
        if problem:
            err.print(f"error: {option} {escape(_printable(str(path)))}: {problem}; choose a writable path")
            raise typer.Exit(EXIT_USAGE)


def _fail(exc: AnimecliError) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(_printable(str(exc)))}", markup=True, soft_wrap=True)
    return typer.Exit(exc.exit_code)


def _version(value: bool) -> None:
    if value:
        out.print(f"animecli {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Batch-convert folders of photos into anime-style images."""


class _Abort(KeyboardInterrupt):
    """A second SIGINT/SIGTERM: stop now, with the exit code of the signal that asked."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _Signals:
    """First SIGINT/SIGTERM: finish the current batch, write the report, exit 130/143. Second: stop now."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.received: int | None = None
        self._old: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stop.is_set():
            raise _Abort(signum)
        self.received = signum
        self.stop.set()
        again = "press Ctrl-C again" if signum == signal.SIGINT else "send SIGTERM again"
        err.print(f"\n{signal.Signals(signum).name}: finishing the current image, then stopping "
                  f"({again} to abort now)")

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for s in EXIT_SIGNAL:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)  # type: ignore[arg-type]


def _record_line(rec: FileRecord) -> str:
    return _printable(_record_text(rec))


def _record_text(rec: FileRecord) -> str:
    if rec.status.value == "failed":
        return f"FAILED {rec.src}: {rec.reason}"
    if rec.status.value == "skipped":
        return f"skipped {rec.src}: {rec.reason}"
    if rec.status.value == "planned":
        return f"would convert {rec.src} -> {rec.dst}" + (f" ({rec.notes})" if rec.notes else "")
    parts = [rec.processed_size, f"load {rec.load_ms:.0f} ms", f"infer {rec.infer_ms:.0f} ms",
             f"save {rec.save_ms:.0f} ms", f"rss {rec.rss_mb:.0f} MB"]
    if rec.gpu_peak_mb:
        parts.append(f"gpu {rec.gpu_peak_mb:.0f} MB")
    note = f" [{rec.notes}]" if rec.notes else ""
    return f"converted {rec.src} -> {rec.dst} ({', '.join(parts)}){note}"


def _summary_line(s: Summary) -> str:
    done = f"{s.planned} would be converted" if s.planned else f"{s.converted} converted"  # planned: --dry-run
    text = (f"{done}, {s.skipped} skipped, {s.failed} failed"
            + (f", {s.ignored} non-image files ignored" if s.ignored else "")
            + f" in {s.elapsed_s:.1f} s ({s.images_per_s:.2f} images/s, peak RSS {s.peak_rss_mb:.0f} MB)")
    return text


@app.command()
def convert(
    paths: Annotated[list[str], typer.Argument(help="INPUT... OUTPUT: image files, folders or globs, then the output folder.", metavar="INPUT... OUTPUT")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model name (see `animecli models list`); default: the shipped default.")] = None,
    weights: Annotated[Path | None, typer.Option("--weights", "-w", help="A generator state dict to use instead of a named model.")] = None,
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
) -> None:
    """Convert photos to anime style: [bold]animecli convert photos/ out/[/].

    Exit codes: 0 all converted or skipped; 1 some files failed (the rest were
    converted) or the output became unwritable; 2 usage or setup error;
    3 another run is writing to the same OUTPUT (its lock file OUTPUT/.animecli.lock);
    130/143 interrupted (after finishing the current image and writing the report).
    """
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
        err.print(f"error: --suffix {_printable(suffix)!r}: no path separators in a suffix; use e.g. --suffix _anime")
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
    )
    summary = _run_with_display(opts, quiet, verbose)
    if summary.fatal:
        err.print(f"[bold red]error:[/] {escape(_printable(summary.fatal))}", soft_wrap=True)
    if not quiet or summary.failed or summary.fatal:
        (err if summary.failed or summary.fatal else out).print(_summary_line(summary), soft_wrap=True)
    if (summary.converted == 0 and summary.skipped == 0 and summary.failed == 0 and summary.planned == 0
            and not summary.interrupted):
        from animecli.io.discovery import SUPPORTED

        kinds = ", ".join(sorted(e.lstrip(".") for e in SUPPORTED))
        err.print(f"error: no images found in the inputs (supported: {kinds}); check the paths and extensions")
        raise typer.Exit(EXIT_USAGE)
    raise typer.Exit(_exit_code(summary, None))


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


def _exit_code(summary: Summary, signum: int | None) -> int:
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
            out.print(f"model {info.model} on {info.device} ({info.precision}, {info.backend})")
        if info.warning:  # also with --quiet: it costs every run (a cron job's log shows it)
            err.print(f"warning: {escape(_printable(info.warning))}", soft_wrap=True)

    def on_record(rec: FileRecord) -> None:
        done[0] += 1
        line = _record_line(rec)
        if rec.status.value == "failed":
            err.print(line, markup=False, soft_wrap=True)
        elif (verbose or not tty or opts.dry_run) and not quiet:
            out.print(line, markup=False, soft_wrap=True)
        if progress is not None and task is not None:
            progress.update(task, completed=done[0], description=escape(_printable(Path(rec.src).name[:40])))

    with _Signals() as sig:
        try:
            if progress:
                progress.start()
            summary = run_convert(opts, on_record, on_start, sig.stop)
        except AnimecliError as exc:
            raise _fail(exc) from None
        finally:
            if progress:
                progress.stop()
    if summary.interrupted and sig.received is not None:
        err.print(_summary_line(summary), soft_wrap=True)
        err.print(f"interrupted by {signal.Signals(sig.received).name}; rerun the same command to continue")
        raise typer.Exit(_exit_code(summary, sig.received))
    return summary


@models_app.command("list")
def models_list() -> None:
    """Show the named models: shipped students and pullable upstream checkpoints."""
    from animecli.weights.manifest import InstallState, load_manifest

    try:
        manifest = load_manifest()
    except AnimecliError as exc:
        raise _fail(exc) from None
    columns = ("name", "default", "arch", "params", "size", "style", "licence", "installed")
    rows = []
    for name in sorted(manifest.models):
        e = manifest.models[name]
        default = "yes" if name == manifest.default else ""
        params = f"{e.parameters / 1e6:.2f} M" if e.parameters else "?"
        size = f"{e.size / 1e6:.1f} MB" if e.size else "?"
        state = manifest.install_state(e)
        if state is InstallState.INSTALLED:
            installed = "yes"
        elif state is InstallState.MISSING:
            installed = f"no: animecli models pull {name}" if e.remote else "no: reinstall animecli"
        elif e.remote:
            installed = f"damaged: delete {manifest.path_of(e)} and run animecli models pull {name}"
        else:
            installed = f"damaged ({manifest.path_of(e)}): reinstall animecli"
        rows.append((name, default, e.arch.value, params, size, e.style, e.licence, installed))
    if not out.is_terminal:  # a pipe or a file: whole values, one model per line, tab-separated
        for row in (columns, *rows):
            typer.echo("\t".join(row))  # not rich: it would expand the tabs
        return
    table = Table(title="animecli models")
    for col in columns:
        # Names and pull commands are never cut short (`face_paint_512_v1` vs `_v2`); the style folds.
        table.add_column(col, overflow="fold", no_wrap=col in ("name", "installed"))
    for row in rows:
        table.add_row(*row)
    out.print(table)


@models_app.command("info")
def models_info(name: Annotated[str, typer.Argument(help="Model name.")]) -> None:
    """Everything the manifest records about one model."""
    import json

    from animecli.weights.manifest import InstallState, load_manifest

    try:
        manifest = load_manifest()
        entry = manifest.get(name)
    except AnimecliError as exc:
        raise _fail(exc) from None
    state = manifest.install_state(entry)
    data = {"name": name, **entry.to_json(), "path": str(manifest.path_of(entry)),
            "installed": state is InstallState.INSTALLED, "damaged": state is InstallState.DAMAGED}
    out.print_json(json.dumps(data))


@models_app.command("pull")
def models_pull(name: Annotated[str, typer.Argument(help="Upstream model name, e.g. face_paint_512_v2.")]) -> None:
    """Download an upstream checkpoint into the cache (ANIMECLI_HOME or the platform cache folder)."""
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    from animecli.weights.manifest import load_manifest
    from animecli.weights.resolve import pull

    try:
        entry = load_manifest().get(name)
        if not entry.remote or entry.url is None:
            out.print(f"{name} ships with animecli; nothing to download")
            return
        with Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), console=err,
                      disable=not err.is_terminal) as bar:
            task = bar.add_task(f"pulling {name}", total=entry.size)

            def progress(done: int, total: int | None) -> None:
                bar.update(task, completed=done, total=total)

            def notice(message: str) -> None:
                err.print(f"warning: {escape(_printable(message))}", soft_wrap=True)

            # pull, not download.download: it checks that a first download loads as the model.
            path = pull(entry, progress, notice)
    except AnimecliError as exc:
        raise _fail(exc) from None
    out.print(f"{name}: {path}")


@app.command()
def distill(
    teacher: Annotated[Path, typer.Option(help="ONNX teacher generator (see shared/teachers/README.md).")],
    photos: Annotated[Path, typer.Option(help="Folder of training photos.")],
    work_dir: Annotated[Path, typer.Option(help="Cache of teacher outputs and checkpoints; rerun to resume.")],
    output: Annotated[Path, typer.Option(help="Where to write the trained student's state dict (.pt).")],
    arch: Annotated[str, typer.Option(help="Student architecture: lite3 (lite2 without norms in its first conv and decoder; --init a lite/lite2 student to fold them), lite2 (slim full-resolution head), lite or v2.")] = "lite",
    steps: Annotated[int, typer.Option(min=1, help="Optimiser steps.")] = 4000,
    batch_size: Annotated[int, typer.Option(min=1, help="Crops per step.")] = 8,
    crop_size: Annotated[int, typer.Option(min=32, help="Side of the training crops.")] = 256,
    pair_size: Annotated[int, typer.Option(min=64, help="Side of the cached teacher pairs (fixed-size teachers: their size).")] = 512,
    num_pairs: Annotated[int, typer.Option(min=1, help="Teacher pairs to cache.")] = 400,
    final_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of steps on whole pairs.")] = 0.1,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, cosine decay).")] = 2e-3,
    exclude: Annotated[list[str] | None, typer.Option(help="Skip photos whose name contains this (repeatable).")] = None,
    include: Annotated[list[str] | None, typer.Option(help="Use only photos whose name contains this (repeatable).")] = None,
    threads: Annotated[int, typer.Option(min=0, help="CPU threads (0 = all).")] = 0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    init: Annotated[Path | None, typer.Option(help="Start from this student's weights (e.g. another style); ignored when resuming.")] = None,
    device: Annotated[str, typer.Option(help="auto (a CUDA GPU if present, else CPU), cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[Precision, typer.Option(help="auto = bf16 autocast on CUDA, fp32 on CPU; bf16 also helps on CPUs with AMX. fp16 is refused.")] = Precision.AUTO,
    publish: Annotated[str | None, typer.Option(help="Also publish the student under this model name (file + manifest entry).")] = None,
    publish_dir: Annotated[Path, typer.Option(help="Weights folder to publish into.")] = Path("weights"),
    style: Annotated[str, typer.Option(help="Style description for the manifest entry.")] = "",
    make_default: Annotated[bool, typer.Option("--default", help="Make the published model the default.")] = False,
) -> None:
    """Train a student generator to imitate a teacher (knowledge distillation). Resumable."""
    import time

    import torch

    from animecli.atomic import atomic_write
    from animecli.models.spec import Arch
    from animecli.training.distill import DistillConfig, check_output, train
    from animecli.training.export import check_model_name

    if arch not in {a.value for a in Arch}:
        err.print(f"error: --arch {escape(_printable(arch))}: unknown; use one of {', '.join(a.value for a in Arch)}")
        raise typer.Exit(EXIT_USAGE)
    _check_output_files({"--output": output})  # now, not after hours of training
    try:
        if publish is not None:
            check_model_name(publish)
        cfg = DistillConfig(
            teacher=teacher, photos=photos, work_dir=work_dir, arch=Arch(arch), pair_size=pair_size,
            num_pairs=num_pairs, crop_size=crop_size, final_size=pair_size, final_fraction=final_fraction,
            batch_size=batch_size, steps=steps, lr=lr, photo_filter=tuple(exclude or ()),
            include=tuple(include or ()), seed=seed, threads=threads, init=init, device=device,
            precision=precision,
        )
        check_output(output, cfg)
        last = [0.0]

        def progress(stage: str, i: int, n: int, parts: dict[str, float]) -> None:
            if time.monotonic() - last[0] > 10 or i == n:
                last[0] = time.monotonic()
                figures = " ".join(f"{k}={v:.4g}" for k, v in parts.items())
                err.print(f"{stage} {i}/{n} {figures}", markup=False)

        def notice(line: str) -> None:
            err.print(f"note: {escape(_printable(line))}", soft_wrap=True)

        sd = train(cfg, progress, notice)
    except AnimecliError as exc:
        raise _fail(exc) from None
    except ValueError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    try:
        # Atomic: a failed write (disk full) must not leave a cut student where a good one was.
        atomic_write(output, lambda f: torch.save(sd, f))
    except OSError as exc:
        err.print(f"error: could not write {escape(_printable(str(output)))} ({escape(str(exc.strerror or exc))}); "
                  f"the checkpoint in {escape(_printable(str(work_dir)))} holds the weights: free space and rerun "
                  "the same command (it finishes at once)")
        raise typer.Exit(EXIT_FAILED) from None
    out.print(f"student written to {output}; evaluate it with `animecli eval --weights {output} --teacher {teacher}`")
    if publish:
        from animecli.training.export import export_student
        from animecli.weights.manifest import load_manifest

        try:
            earlier = load_manifest(publish_dir).models.get(publish)
        except AnimecliError:  # no manifest there yet: export starts one
            earlier = None
        try:
            entry = export_student(
                sd, publish_dir, publish, Arch(arch), style=style or f"distilled from {teacher.name}",
                source=f"animecli distill from {teacher.name} on {photos}",
                extra={"teacher": teacher.name, "training_steps": steps, "batch_size": batch_size,
                       "crop_size": crop_size, "num_pairs": num_pairs, "lr": lr},
                make_default=make_default,
            )
        except AnimecliError as exc:
            raise _fail(exc) from None
        # Replacing is what the documented retrain commands rely on; say so, with what was there.
        was = (f"; it replaces the earlier {publish} ({earlier.file}, sha256 {earlier.sha256 or '?'})"
               if earlier is not None else "")
        out.print(f"published {publish} as {publish_dir / entry.file} (sha256 {entry.sha256}){was}", soft_wrap=True)


@app.command("eval")
def evaluate_cmd(
    weights: Annotated[Path, typer.Option(help="Student state dict.")],
    teacher: Annotated[Path, typer.Option(help="The ONNX teacher it imitates.")],
    photos: Annotated[Path, typer.Option(help="Validation photos.")],
    size: Annotated[int, typer.Option(min=64, help="Evaluation side (the teacher's size for fixed-size teachers).")] = 512,
    sheet: Annotated[Path | None, typer.Option(help="Write a photo / teacher / student contact sheet PNG.")] = None,
    cache: Annotated[Path, typer.Option(help="Cache of teacher outputs.")] = Path(".animecli-eval-cache"),
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the per-photo figures as JSON.")] = None,
) -> None:
    """PSNR and SSIM of a student against its teacher on held-out photos."""
    import json

    from animecli.atomic import atomic_write_bytes
    from animecli.options import ModelChoice
    from animecli.training.evaluate import evaluate
    from animecli.weights.resolve import load_generator

    _check_output_files({"--sheet": sheet, "--json": json_out})
    try:
        student = load_generator(ModelChoice(weights=weights)).model
        result = evaluate(student, teacher, photos, size, cache, sheet)
    except AnimecliError as exc:
        raise _fail(exc) from None
    if result is None:
        err.print(f"error: no readable photos in {photos}; pass a folder of .jpg/.png/.webp/.bmp photos")
        raise typer.Exit(EXIT_USAGE)
    for name, why in result.skipped:
        err.print(f"skipped {escape(_printable(name))}: cannot be read ({escape(why)})", soft_wrap=True)
    out.print(f"{result.count} photos at {size}px: PSNR {result.psnr_db:.2f} dB, SSIM {result.ssim:.4f}"
              + (f" ({len(result.skipped)} unreadable skipped)" if result.skipped else ""))
    if json_out:
        atomic_write_bytes(json_out, json.dumps({
            "psnr_db": result.psnr_db, "ssim": result.ssim, "count": result.count, "size": size,
            "per_photo": [{"photo": n, "psnr_db": p, "ssim": q} for n, p, q in result.per_photo],
            "skipped": [{"photo": n, "reason": why} for n, why in result.skipped],
        }, indent=2).encode())


@app.command()
def bench(
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="Model name, weights file, or v2/lite (random weights); repeatable. Default: the default model and v2.")] = None,
    backend: Annotated[list[Backend] | None, typer.Option("--backend", "-b", help="Backend to measure; repeatable. Default: eager, traced, onnx, int8.")] = None,
    images: Annotated[Path | None, typer.Option(help="Folder of photos; default: the bundled examples/.")] = None,
    size: Annotated[int, typer.Option(min=16, help="Photos are centre-cropped and resized to SIZE×SIZE.")] = 512,
    max_images: Annotated[int, typer.Option(min=1, help="Use at most this many photos (the first, by name); a --batch-size above it is capped by it.")] = 8,
    repeat: Annotated[int, typer.Option(min=1, help="Timed rounds (rows interleaved); figures are medians.")] = 5,
    threads: Annotated[int, typer.Option(min=0, help="CPU threads for every row; 0 = the libraries' default.")] = 0,
    upstream: Annotated[bool, typer.Option("--upstream/--no-upstream", help="Add the upstream-equivalent row (v2, nn.GroupNorm, NCHW, eager).")] = True,
    rss: Annotated[bool, typer.Option("--rss/--no-rss", help="Measure each row's peak RSS in a child process.")] = True,
    calibration: Annotated[Path | None, typer.Option(help="int8 calibration photos; default: the bundled examples.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N. On CUDA: eager/traced rows, GPU peak memory, PSNR against eager float32 on the CPU.")] = "cpu",
    precision: Annotated[Precision, typer.Option(help="Engine rows' precision; auto = fp16 on CUDA, fp32 on CPU.")] = Precision.AUTO,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass in the engine rows (upstream row: 1).")] = 1,
    compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile the eager rows.")] = False,
    extra_precision: Annotated[list[Precision] | None, typer.Option("--extra-precision", help="One more eager row per model at this precision; repeatable. Default: bf16 on a CPU with AMX (where it is fastest), none elsewhere; fp32 on the CPU adds none.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Also write the table as Markdown to this file.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the rows as JSON.")] = None,
) -> None:
    """Time every backend × model on the same photos, side by side: ms/image, images/s, where time goes, peak RSS, PSNR."""
    import json

    from animecli.atomic import atomic_write_bytes
    from animecli.benchmark import (
        DEFAULT_BACKENDS,
        BenchOptions,
        caption,
        columns,
        rows_as_dicts,
        run_bench,
        table_rows,
    )
    from animecli.benchmark import to_markdown as bench_markdown

    opts = BenchOptions(
        images=images, size=size, max_images=max_images, models=tuple(model or ()),
        backends=tuple(backend or DEFAULT_BACKENDS), repeat=repeat, threads=threads, upstream=upstream, rss=rss,
        calibration=calibration,
        device=device, precision=precision, batch_size=batch_size, compile=compile_model,
        extra_precisions=tuple(extra_precision) if extra_precision else None,
    )

    def progress(line: str) -> None:
        err.print(line, markup=False, style="dim")

    _check_output_files({"--markdown": markdown, "--json": json_out})
    try:
        result = run_bench(opts, progress)
    except AnimecliError as exc:
        raise _fail(exc) from None
    table = Table(title="animecli bench", caption=caption(result))
    for i, col in enumerate(columns(result)):
        table.add_column(col, justify="left" if i < 2 else "right")
    for cells in table_rows(result):
        table.add_row(*cells)
    out.print(table)
    for note in result.notes:
        err.print(f"note: {escape(note)}")
    if markdown:
        atomic_write_bytes(markdown, bench_markdown(result).encode("utf-8"))
    if json_out:
        atomic_write_bytes(json_out, json.dumps({"caption": caption(result), "rows": rows_as_dicts(result)},
                                                indent=2).encode())


def run() -> None:
    """Console-script entry point."""
    for stream in (sys.stdout, sys.stderr):
        # A log whose encoding cannot hold "×" or a file name (PYTHONIOENCODING=ascii, an odd
        # locale) gets escapes, not a UnicodeEncodeError that ends the run after the first file.
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # a stream that cannot change any more
                pass
    try:
        app()
    except KeyboardInterrupt as exc:
        err.print("aborted")
        sys.exit(EXIT_SIGNAL.get(signal.Signals(exc.signum), 130) if isinstance(exc, _Abort) else 130)
