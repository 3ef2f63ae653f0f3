"""--engine ray against the local engine on one machine: images/s with 1 and 2 Ray workers.

Usage: python bench/bench_ray.py [--photos ../shared/photos/val] [--count 40] [--repeats 2]
                                 [--weights weights/hayao_lite3.pt] [--width 0.125] [--threads 1]
       python bench/bench_ray.py --driver-only 20000

Converts the first COUNT photos (JPEG in, JPEG out) with: the local engine (THREADS torch
threads, and all cores), then Ray with 1 and 2 model actors (THREADS threads each) on a local Ray
instance started once with as many CPUs as the machine has. Every variant runs on COUNT/2 and on
COUNT photos; runs alternate so that other load on the machine hits all alike; the table gives
medians of REPEATS. Figures:

* wall: the whole run of COUNT photos, from the call to the summary (for Ray: actor start-up
  included, Ray's own start-up not; that is printed once above the table);
* images/s (wall): COUNT / wall;
* images/s (marginal): (COUNT - COUNT/2) / (wall(COUNT) - wall(COUNT/2)), the rate once running:
  fixed costs (model load, actor start-up, torch import in the actors) cancel out.

Model: ``--weights`` if given, else the shipped default model's file (``weights/manifest.json``) if present,
else a seeded random ``lite`` generator of ``--width`` (0.125 = the tests' tiny model; 1.0 costs
the same per image as the shipped lite model). The header says which. Outputs of every run are
compared byte for byte with the first local run's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from animecli.models.registry import build_generator
from animecli.models.spec import Arch, ArchSpec
from animecli.options import (
    ConvertOptions,
    EngineKind,
    EngineOptions,
    Existing,
    ModelChoice,
    RayOptions,
    WriteOptions,
)
from animecli.run.convert import run_convert
from animecli.weights.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[1]


def pick_weights(args: argparse.Namespace, work: Path) -> tuple[Path, str]:
    """The weights file to use and how to describe it."""
    if args.weights is not None:
        return args.weights, f"{args.weights}"
    manifest = load_manifest(ROOT / "weights")
    shipped = manifest.path_of(manifest.get(manifest.default))
    if shipped.is_file():
        return shipped, f"shipped default weights/{shipped.name}"
    torch.manual_seed(0)
    model = build_generator(ArchSpec(Arch.LITE, width=args.width))
    path = work / f"lite_w{args.width}.pt"
    torch.save(model.state_dict(), path)
    what = "the tests' tiny model" if args.width == 0.125 else "same cost per image as the shipped lite model"
    return path, (f"weights/{shipped.name} absent: seeded random lite generator, width {args.width} "
                  f"({sum(p.numel() for p in model.parameters()) / 1e6:.3f} M parameters; {what})")


def one_run(photos: Path, out: Path, weights: Path, kind: EngineKind, workers: int, threads: int) -> dict[str, float]:
    """Convert ``photos`` into a fresh ``out``; images converted and wall time."""
    shutil.rmtree(out, ignore_errors=True)
    opts = ConvertOptions(
        (str(photos),), out, model=ModelChoice(weights=weights), engine=EngineOptions(device="cpu", threads=threads),
        write=WriteOptions(existing=Existing.OVERWRITE), engine_kind=kind, ray=RayOptions(workers=workers),
    )
    t0 = time.perf_counter()
    summary = run_convert(opts)
    wall = time.perf_counter() - t0
    if summary.failed or summary.fatal:
        raise SystemExit(f"run failed: {summary.failed} files, {summary.fatal}")
    return {"n": summary.converted, "wall": wall}


def same_bytes(a: Path, b: Path) -> tuple[int, int]:
    """(files compared, files that differ) between two output folders."""
    names = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and not p.name.startswith(".animecli."))
    differ = sum((a / n).read_bytes() != (b / n).read_bytes() for n in names)
    return len(names), differ


def driver_cost(count: int) -> None:
    """Per-file time the driver spends around the cluster: planning and bookkeeping, no images.

    Plans ``count`` small files (discovery, stat, resume verdict), then takes one worker row per
    file back (JSON decode, resume-state line, report row), as ``--engine ray`` does.
    """
    from animecli.io.discovery import Job
    from animecli.run.ray import _record_from_text, _record_to_text
    from animecli.run.report import FileRecord, Status
    from animecli.run.resume import Settings
    from animecli.run.session import Session

    work = Path(tempfile.mkdtemp(prefix="bench_driver_"))
    src = work / "in"
    src.mkdir()
    for i in range(count):
        (src / f"img_{i:06d}.jpg").write_bytes(b"x")
    opts = ConvertOptions((str(src),), work / "out", report=work / "r.json")
    (work / "out").mkdir()
    run = Session(opts, None)
    run.settings = Settings("0" * 64, "lite/1.0/align", 1024, "same", 92, "", "float32")
    t0 = time.perf_counter()
    jobs = [j for j in run.plan(keep_stamps=True) if isinstance(j, Job)]
    t1 = time.perf_counter()
    rows = [_record_to_text(i, FileRecord(str(j.src), str(j.dst), Status.CONVERTED, "", "481×321", "481×321",
                                          5.0, 90.0, 8.0, 400.0, 0.0, "")) for i, j in enumerate(jobs)]
    t2 = time.perf_counter()
    for job, text in zip(jobs, rows, strict=True):
        _, rec, _, _ = _record_from_text(text)
        assert rec is not None
        run.saved(job)
        run.emit(rec)
    run.finish(t2)
    t3 = time.perf_counter()
    print(f"driver, {count} files: plan {1e6 * (t1 - t0) / count:.0f} µs/file, "
          f"rows back (decode, state, report) {1e6 * (t3 - t2) / count:.0f} µs/file "
          f"→ one driver keeps up with ~{count / (t1 - t0 + t3 - t2):.0f} images/s")
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "photos" / "val")
    ap.add_argument("--count", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--threads", type=int, default=1, help="torch threads, local engine and each Ray actor alike")
    ap.add_argument("--driver-only", type=int, default=0, metavar="N",
                    help="only time the driver's per-file work on N synthetic files, no model, no Ray")
    args = ap.parse_args()
    if args.driver_only:
        driver_cost(args.driver_only)
        return

    import ray

    work = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    sets = {n: work / f"photos_{n}" for n in (args.count // 2, args.count)}
    for n, folder in sets.items():
        folder.mkdir()
        for src in sorted(args.photos.glob("*.jpg"))[:n]:
            os.symlink(src.resolve(), folder / src.name)
    weights, described = pick_weights(args, work)
    t0 = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t0

    cores = os.cpu_count() or 1
    t = args.threads
    variants = [
        (f"local engine, {t} thread(s)", EngineKind.LOCAL, 0, t),
        (f"local engine, {cores} threads", EngineKind.LOCAL, 0, cores),
        (f"ray, 1 worker × {t} thread(s)", EngineKind.RAY, 1, t),
        (f"ray, 2 workers × {t} thread(s)", EngineKind.RAY, 2, t),
    ]
    walls: dict[tuple[str, int], list[float]] = {}
    mismatches: dict[str, tuple[int, int]] = {}
    for rep in range(args.repeats):
        for n, folder in sets.items():
            for i, (label, kind, workers, threads) in enumerate(variants):
                out = work / f"out_{i}_{n}"
                got = one_run(folder, out, weights, kind, workers, threads)
                assert got["n"] == n, got
                walls.setdefault((label, n), []).append(got["wall"])
                if i > 0 and n == args.count:
                    mismatches[label] = same_bytes(work / f"out_0_{n}", out)
                print(f"  run {rep + 1}, {n} photos, {label}: {got['wall']:.1f} s", flush=True)
    ray.shutdown()
    load = os.getloadavg()

    half, full = args.count // 2, args.count
    print(f"\n{full} photos from {args.photos} (JPEG, {photos_size(sets[full])}), JPEG out, CPU fp32, "
          f"{cores} cores, median of {args.repeats}")
    print(f"model: {described}")
    print(f"Ray start-up (ray.init, local instance): {ray_start:.1f} s, once per process; "
          f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min)\n")
    print(f"| engine | wall s ({full} photos) | images/s (wall) | images/s (marginal, {half}→{full}) "
          "| outputs = local 1st row |")
    print("|---|---:|---:|---:|---|")
    for label, _, _, _ in variants:
        w_full, w_half = statistics.median(walls[(label, full)]), statistics.median(walls[(label, half)])
        marginal = (full - half) / (w_full - w_half) if w_full > w_half else float("nan")
        same = "—" if label not in mismatches else (
            f"{mismatches[label][0] - mismatches[label][1]}/{mismatches[label][0]} byte-identical")
        print(f"| {label} | {w_full:.1f} | {full / w_full:.2f} | {marginal:.2f} | {same} |")
    shutil.rmtree(work, ignore_errors=True)


def photos_size(folder: Path) -> str:
    from collections import Counter

    from PIL import Image

    sizes: Counter[str] = Counter()
    for p in folder.iterdir():
        with Image.open(p) as im:
            sizes[f"{max(im.size)}×{min(im.size)}"] += 1
    return ", ".join(f"{n}× {s}" for s, n in sizes.most_common(3))


if __name__ == "__main__":
    main()
