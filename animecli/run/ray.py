# Over 400 lines: the driver and the actor side of one protocol (job rows in, report rows out) read best together.
"""``--engine ray``: the same conversion, with the model held by a pool of Ray actors.

The driver (this process) does what the local engine does before and after
the model: it takes the output folder's lock, loads and checks the weights,
walks the inputs, decides from the resume state what is up to date, and
writes the resume state and the report. Only the work per image moves to the
cluster: every actor builds the generator from the driver's weights once, then
loads, converts and atomically writes the images it is given, with the very
loader, engine and writer of the local engine, and hands back one report row
per file. Rows come back in input order (``preserve_order``), so the report
and the progress callbacks see the same sequence as a local run.

Ray is an optional dependency (``pip install 'animecli[ray]'``). It is
imported only here, and only when a run asks for it.

Inputs and the output folder must be at the same paths on every node (a
shared file system) when the cluster has more than one machine.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from animecli.errors import FileError, OutputError, SetupError, UsageError
from animecli.inference.device import read_device
from animecli.io.discovery import Job, is_video
from animecli.options import Backend, ConvertOptions, EngineOptions, LoadOptions, RayOptions, WriteOptions
from animecli.run.report import FileRecord, Status, Summary, rss_mb
from animecli.run.session import RunInfo, Session, inference_record, load_failure_record

if TYPE_CHECKING:
    import numpy as np
    import torch

    from animecli.inference.torch_engine import Engine
    from animecli.io.loader import Loaded
    from animecli.models.spec import ArchSpec
    from animecli.weights.resolve import LoadedModel

INSTALL_HINT = "pip install 'animecli[ray]'"
# Rows per Ray block: small enough that a few dozen images spread over every actor and the
# progress bar moves steadily, large enough that scheduling costs little per image.
_MAX_BLOCK_ROWS = 16


def require_ray() -> Any:
    """Import Ray (and Ray Data), or explain how to install it.

    Returns:
        The ``ray`` module.

    Raises:
        SetupError: Ray is not installed (exit 2), with the install command.
    """
    try:
        import ray
        import ray.data  # Ray Data comes with the ``ray[data]`` extra
    except ImportError as exc:
        raise SetupError(
            f"--engine ray needs Ray with Ray Data, which is not installed ({exc}); install it with "
            f"`{INSTALL_HINT}` (or `pip install 'ray[data]'`), or use --engine local"
        ) from None
    return ray


@dataclass(frozen=True)
class Pool:
    """The actor pool a run asks the cluster for.

    Attributes:
        workers: number of model actors.
        gpus: GPUs reserved by each actor (0 = CPU actors).
        cpus: CPUs reserved by each actor (its torch threads).
        device: the actors' torch device, ``cpu`` or ``cuda``.
    """

    workers: int
    gpus: float
    cpus: int
    device: str

    def describe(self) -> str:
        """E.g. ``ray: 2 × cpu``."""
        return f"ray: {self.workers} × {self.device}"


def plan_pool(resources: Mapping[str, float], engine: EngineOptions, ray_opts: RayOptions, jobs: int) -> Pool:
    """Size the actor pool from the cluster's resources and the options.

    Args:
        resources: ``ray.cluster_resources()`` (``CPU``, ``GPU`` …).
        engine: ``--device`` and ``--threads`` matter here.
        ray_opts: ``--num-gpus-per-worker`` and ``--workers``.
        jobs: images to convert (no more actors than that).

    Raises:
        UsageError: contradictory options (``--device cpu`` with GPUs per worker, ``cuda:N``).
        SetupError: the cluster lacks the GPUs asked for.
    """
    device = engine.device
    if not read_device(device).plain:
        raise UsageError(
            f"--device {device!r} with --engine ray: use auto, cpu or cuda (Ray gives each worker its own "
            "GPU; choose how many with --num-gpus-per-worker)"
        )
    total_gpus = float(resources.get("GPU", 0.0))
    total_cpus = float(resources.get("CPU", 0.0))
    gpus = ray_opts.num_gpus_per_worker
    if gpus is None:
        gpus = 0.0 if device == "cpu" or (device == "auto" and total_gpus == 0) else 1.0
    if gpus < 0:
        raise UsageError(f"--num-gpus-per-worker {gpus:g}: must be 0 (CPU workers) or more")
    if gpus > 0 and device == "cpu":
        raise UsageError(f"--device cpu with --num-gpus-per-worker {gpus:g}: drop one of them")
    if gpus == 0 and device == "cuda":
        raise UsageError("--device cuda with --num-gpus-per-worker 0: give each worker a GPU share (e.g. 1)")
    if gpus > 0 and total_gpus < gpus:
        raise SetupError(
            f"the Ray cluster has {total_gpus:g} GPU(s), fewer than the {gpus:g} each worker asks for; "
            "add GPU nodes, lower --num-gpus-per-worker, or use --device cpu"
        )
    cpus = engine.threads if engine.threads > 0 else 1
    if ray_opts.workers > 0:
        workers = ray_opts.workers
    elif gpus > 0:
        workers = max(1, int(total_gpus / gpus + 1e-9))
    else:
        workers = max(1, int(total_cpus // cpus))
    return Pool(max(1, min(workers, jobs)), gpus, cpus, "cuda" if gpus > 0 else "cpu")


# --- the worker side: one actor per model copy -------------------------------------------------------


def _job_to_text(index: int, job: Job) -> str:
    # Absolute paths: workers do not share the driver's working directory (nor, on other nodes, its
    # machine). ASCII JSON: lone surrogates of undecodable file names travel as \udcXX, intact.
    src, dst = os.path.abspath(job.src), os.path.abspath(job.dst)
    return json.dumps({"i": index, "src": src, "dst": dst, "note": job.note})


def _job_from_text(text: str) -> tuple[int, Job]:
    d = json.loads(text)
    return int(d["i"]), Job(Path(d["src"]), Path(d["dst"]), str(d["note"]))


def _record_to_text(index: int, rec: FileRecord | None, fatal: str = "", backend: str = "") -> str:
    d: dict[str, object] = {"i": index, "fatal": fatal, "backend": backend}
    if rec is not None:
        d["rec"] = {**rec.__dict__, "status": rec.status.value}
    return json.dumps(d)


def _record_from_text(text: str) -> tuple[int, FileRecord | None, str, str]:
    """(job index, record or ``None``, fatal reason or "", the actor's backend)."""
    d = json.loads(text)
    rec = None
    if "rec" in d:
        fields = dict(d["rec"])
        fields["status"] = Status(fields["status"])
        rec = FileRecord(**fields)
    return int(d["i"]), rec, str(d["fatal"]), str(d.get("backend", ""))


def convert_jobs(
    engine: Engine, jobs: Sequence[Job], load: LoadOptions, write: WriteOptions, batch_size: int
) -> list[tuple[FileRecord | None, str]]:
    """Load, convert and save ``jobs``, building each file's report row as the local engine does.

    Images of one processed size are run together, ``batch_size`` at a time
    (:class:`~animecli.inference.batching.SizeBatcher`, as the local engine forms them).

    Args:
        engine: the actor's engine.
        jobs: the images of one Ray batch.
        load, write: the run's loading and writing options.
        batch_size: images per forward pass.

    Returns:
        Per job, in order: its record and ``""``; or ``(None, reason)`` once the output
        became unwritable (that job and the ones after it were not converted).
    """
    from animecli.inference.batching import SizeBatcher
    from animecli.io.loader import load_one
    from animecli.io.writer import save_image

    results: list[tuple[FileRecord | None, str]] = [(None, "")] * len(jobs)
    fatal = ""

    def run(chunk: list[tuple[int, Loaded]]) -> None:
        nonlocal fatal
        if fatal:
            for k, _ in chunk:
                results[k] = (None, fatal)
            return
        result = engine.run_batch([it.rgb for _, it in chunk if it.rgb is not None])
        share = result.infer_ms / len(chunk)
        for (k, it), out, err in zip(chunk, result.images, result.errors, strict=False):
            if fatal:
                results[k] = (None, fatal)
                continue
            rec = inference_record(it, share, result.gpu_peak_mb, result.note)
            if out is None:
                rec.reason = err or "inference failed"
            else:
                try:
                    saved = save_image(out, it.job.dst, write, it.alpha, it.icc, it.exif)
                except FileError as exc:
                    rec.reason = exc.reason
                except OutputError as exc:
                    fatal = str(exc)
                    results[k] = (None, fatal)
                    continue
                else:
                    rec.status, rec.save_ms = Status.CONVERTED, saved.save_ms
                    if saved.notes:
                        rec.notes = "; ".join(filter(None, [rec.notes, *saved.notes]))
            rec.rss_mb = rss_mb()
            results[k] = (rec, "")
        del result
        for _, it in chunk:
            it.rgb = None  # free the decoded pixels as soon as they are written

    # Loaded one at a time and run as batches fill, so that only the images waiting for a
    # partner of their size are held decoded (not the whole Ray batch).
    batcher: SizeBatcher[tuple[int, Loaded]] = SizeBatcher(batch_size)
    for k, job in enumerate(jobs):
        got = load_one(job, load)
        if got.error is not None:
            results[k] = (load_failure_record(got), "")
            continue
        for due in batcher.add(got.processed_size, (k, got), k):
            run(due)
    for due in batcher.drain():
        run(due)
    return results


class ConvertActor:
    """A Ray Data actor: one copy of the generator, converting the batches it is sent.

    Args:
        spec: the architecture (as the driver resolved it).
        state_dict: the driver's weights.
        input_multiple: padding multiple of the model.
        engine: engine options, with ``device`` and ``threads`` fixed by the driver.
        load, write: the run's options.
    """

    def __init__(
        self, spec: ArchSpec, state_dict: Mapping[str, torch.Tensor], input_multiple: int,
        engine: EngineOptions, load: LoadOptions, write: WriteOptions,
    ) -> None:
        import torch

        from animecli.inference.select import torch_engine_for
        from animecli.weights.checkpoint import build_and_load

        torch.set_num_threads(max(1, engine.threads))
        model = build_and_load(spec, state_dict, "weights sent by the animecli driver")
        self.engine = torch_engine_for(model, input_multiple, engine, spec)
        self.load, self.write, self.batch_size = load, write, max(1, engine.batch_size)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, list[str]]:
        """Convert one batch of jobs (column ``job``) into report rows (column ``row``)."""
        parsed = [_job_from_text(str(text)) for text in batch["job"]]
        results = convert_jobs(self.engine, [job for _, job in parsed], self.load, self.write, self.batch_size)
        backend = self.engine.backend.value
        return {"row": [_record_to_text(i, rec, fatal, backend)
                        for (i, _), (rec, fatal) in zip(parsed, results, strict=True)]}


# --- the driver side --------------------------------------------------------------------------------


def _connect(ray: Any, address: str | None) -> bool:
    """Join (or start) a Ray instance; ``True`` if we did, so we leave it again at the end."""
    # Only the CLI prints: Ray's own log lines (progress notes, retries) stay out of the terminal;
    # a failure reaches the user as the run's error message instead.
    for name, level in (("ray", logging.ERROR), ("ray.data", logging.CRITICAL)):
        logging.getLogger(name).setLevel(level)
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    # ray.init installs its own SIGTERM handlers (Python's, which exits at once, and a native one
    # that aborts 3 s later: exit 134, no report). Ours are put back so that SIGTERM stops the
    # run as locally: finish what is in hand, write the report, exit 143.
    main = threading.current_thread() is threading.main_thread()
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or os.environ.get("RAY_ADDRESS") or "a local instance"
        raise SetupError(
            f"could not connect to the Ray cluster at {where} ({str(exc).splitlines()[0] if str(exc) else exc}); "
            "check --address (`ray status` on the head node prints it), or leave it out to start Ray here"
        ) from None
    finally:
        for signum, handler in saved.items():
            if handler is not None:  # None: set outside Python; nothing to put back
                signal.signal(signum, handler)
    return True


def _rows(ray: Any, opts: ConvertOptions, pool: Pool, jobs: list[Job], model: torch.nn.Module, spec: ArchSpec,
          multiple: int) -> Iterator[str]:
    """Stream the jobs through the actor pool; yields the actors' rows in job order."""
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False  # only the CLI prints; it shows the cluster's progress
    ctx.print_on_execution_start = False
    batch_size = max(1, opts.engine.batch_size)
    block_rows = max(batch_size, min(_MAX_BLOCK_ROWS, math.ceil(len(jobs) / (4 * pool.workers))))
    items = [{"job": _job_to_text(i, job)} for i, job in enumerate(jobs)]
    ds = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / block_rows)))
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    engine = replace(opts.engine, device=pool.device, threads=pool.cpus)
    ds = ds.map_batches(
        ConvertActor,
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=pool.workers),
        num_cpus=pool.cpus,
        num_gpus=pool.gpus or None,
        fn_constructor_args=(spec, state, multiple, engine, opts.load, opts.write),
        udf_modifying_row_count=False,
    )
    for row in ds.iter_rows():
        yield str(row["row"])


def convert_on_ray(
    run: Session,
    on_start: Callable[[RunInfo], None] | None,
    stop: threading.Event | None,
    t0: float,
) -> Summary:
    """The non-dry run of :func:`animecli.run.convert.run_convert` on a Ray cluster (output folder locked).

    Args:
        run: the run's state (options, report, resume state, callbacks).
        on_start: called once the model is loaded and the pool sized, before the first file.
        stop: when set, no further rows are taken; the report is written and the run returns
            with ``summary.interrupted``. Images already in the actors' hands may still be written;
            a rerun skips them as existing outputs.
        t0: when the run started (``time.perf_counter``).

    Returns:
        The summary; ``summary.fatal`` is set if the output became unwritable or a worker died.

    Raises:
        SetupError: Ray is missing, the cluster cannot be reached, or lacks the GPUs asked for.
        UsageError: options that make no sense on Ray.
        WeightsError: the weights cannot be loaded (checked on the driver before anything runs).
    """
    ray = require_ray()
    from animecli.weights.resolve import load_generator

    opts = run.opts
    loaded = load_generator(opts.model)
    owned = _connect(ray, opts.ray.address)
    try:
        return _drive(ray, run, loaded, on_start, stop, t0)
    finally:
        if owned:
            ray.shutdown()


def _drive(ray: Any, run: Session, loaded: LoadedModel, on_start: Callable[[RunInfo], None] | None,
           stop: threading.Event | None, t0: float) -> Summary:
    """Size the pool, plan, and stream the jobs through it, emitting rows in input order."""
    import torch

    from animecli.inference.backends import resolve_backend
    from animecli.inference.torch_engine import resolve_precision

    opts, s = run.opts, run.summary
    spec = loaded.spec
    # Sized before planning: the precision (fp16 on GPU workers) is part of every output's fingerprint.
    pool = plan_pool(ray.cluster_resources(), opts.engine, opts.ray, jobs=1 << 30)
    dtype = resolve_precision(opts.engine.precision, torch.device(pool.device))
    s.model, s.precision, s.licence = loaded.name, str(dtype).removeprefix("torch."), loaded.licence
    # The header names what the actors will run: they resolve `auto` with the same function
    # (onnx on CPU actors where onnxruntime is installed), and each row reports what actually ran.
    asked = opts.engine.backend
    s.backend = (resolve_backend(asked, torch.device(pool.device), dtype).backend if asked is Backend.AUTO
                 else asked).value
    # `auto` never resolves to int8, so the backend asked for keys the outputs as the local engine does.
    run.use_settings(loaded.sha256, spec.key, s.precision, opts.engine.backend)
    plan = list(run.plan(keep_stamps=True))  # discovery and resume decisions, here on the driver
    # Videos stream through one engine in order (animecli.run.video); the actor pool takes images only.
    jobs = [item for item in plan if isinstance(item, Job) and not is_video(item.src)]
    pool = replace(pool, workers=max(1, min(pool.workers, len(jobs))))
    s.device = pool.describe()
    if on_start:
        on_start(RunInfo(s.model, s.device, s.precision, s.backend, licence=s.licence))
    rows = _rows(ray, opts, pool, jobs, loaded.model, spec, loaded.input_multiple) if jobs else iter(())
    expected = 0
    try:
        for item in plan:
            if not isinstance(item, Job):
                run.passthrough(item)
                continue
            if is_video(item.src):
                run.stamps.pop(item.dst, None)
                run.emit(FileRecord(str(item.src), str(item.dst), Status.FAILED,
                                    "videos are converted by --engine local only; convert them without --engine ray"))
                continue
            index, rec, fatal, backend = _record_from_text(next(rows))
            s.backend = backend or s.backend  # as the actors resolved it (auto)
            if index != expected:
                s.fatal = f"Ray returned the result of image {index} where image {expected} was due"
                break
            expected += 1
            if fatal or rec is None:
                s.fatal = fatal or "a Ray worker returned no result"
                break
            rec.src, rec.dst = str(item.src), str(item.dst)  # as given, like the local engine's rows
            if rec.status is Status.CONVERTED:
                run.saved(item)
            else:
                run.stamps.pop(item.dst, None)
            run.emit(rec)
            if stop is not None and stop.is_set():
                s.interrupted = True
                break
    except OutputError as exc:
        s.fatal = str(exc)
    except StopIteration:
        s.fatal = "the Ray dataset ended before every image was converted"
    except Exception as exc:  # a worker died or could not start: name it, keep the report
        lines = str(exc).strip().splitlines()
        reason = (f"a Ray worker failed ({type(exc).__name__}: {lines[-1].strip() if lines else ''}); check that "
                  "animecli and its dependencies are installed on every node, and the paths exist there")
        if expected == 0:
            raise SetupError(reason) from None  # nothing was converted: a setup problem, as locally
        s.fatal = reason
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()
    return run.finish(t0)

