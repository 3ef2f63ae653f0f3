"""``convert --jobs``: images/s of whole conversion runs with different decode:encode thread counts.

Usage: python bench/bench_jobs.py [--photos ../shared/photos/val] [--count 40] [--repeats 3]
                                  [--jobs 1:0 --jobs 1:1 --jobs auto] [--max-size 512] [--batch-size 1]

Converts the first COUNT photos (JPEG in, JPEG out, long side scaled to MAX_SIZE) with the
default model and backend, once per ``--jobs`` setting, round after round (settings alternate,
so other load on the machine hits all alike); prints a Markdown table of the median wall time
and images/s per setting and the speed-up over the first setting. ``1:0`` is the converter
before the pools (one decode thread, encoding on the model's thread). Every run's outputs are
compared byte for byte with the first run's.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from animecli.benchmark import cpu_name
from animecli.options import ConvertOptions, EngineOptions, Existing, LoadOptions, WriteOptions, auto_jobs
from animecli.run.convert import run_convert

ROOT = Path(__file__).resolve().parents[1]


def parse_jobs(value: str) -> tuple[int, int]:
    if value == "auto":
        return auto_jobs()
    load, _, save = value.partition(":")
    return int(load), int(save or load)


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*.jpg")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "photos" / "val")
    ap.add_argument("--count", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--jobs", action="append", default=[])
    ap.add_argument("--max-size", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=1)
    args = ap.parse_args()
    settings = args.jobs or ["1:0", "1:1", "auto"]
    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))[: args.count]
    if not photos:
        raise SystemExit(f"no JPEG photos in {args.photos}")
    with tempfile.TemporaryDirectory(prefix="animecli-jobs-") as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for p in photos:
            shutil.copy(p, src / p.name)
        walls: dict[str, list[float]] = {s: [] for s in settings}
        ref: str | None = None
        for rnd in range(args.repeats + 1):  # round 0 warms up (ONNX export cached, files in page cache)
            for setting in settings:
                load, save = parse_jobs(setting)
                out = Path(tmp) / "out"
                shutil.rmtree(out, ignore_errors=True)
                opts = ConvertOptions(
                    inputs=(str(src),), output=out,
                    load=LoadOptions(max_size=args.max_size, workers=load),
                    engine=EngineOptions(batch_size=args.batch_size),
                    write=WriteOptions(existing=Existing.OVERWRITE, workers=save),
                )
                t0 = time.perf_counter()
                summary = run_convert(opts)
                wall = time.perf_counter() - t0
                if summary.converted != len(photos):
                    raise SystemExit(f"{setting}: {summary.converted}/{len(photos)} converted")
                d = digest(out)
                ref = ref or d
                if d != ref:
                    raise SystemExit(f"{setting}: outputs differ from the first run's")
                if rnd:
                    walls[setting].append(wall)
        print(f"{len(photos)} photos (JPEG, long side {args.max_size}), default model and backend, batch "
              f"{args.batch_size}, median of {args.repeats} alternating runs; {cpu_name()}; outputs identical")
        print()
        print("| --jobs (decode:encode) | wall s | images/s | × first |")
        print("|---|---:|---:|---:|")
        base = statistics.median(walls[settings[0]])
        for setting in settings:
            w = statistics.median(walls[setting])
            load, save = parse_jobs(setting)
            print(f"| {setting} ({load}:{save}) | {w:.2f} | {len(photos) / w:.2f} | {base / w:.2f}× |")


if __name__ == "__main__":
    main()
