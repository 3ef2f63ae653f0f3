"""Soak: thousands of mixed images, 2% of them broken, in ONE `animecli convert` run (issue 7).

Usage: python bench/soak.py [--count 2000] [--broken-pct 2] [--max-side 1600] [--seed 0]
                            [--growth-target 50] [--weights W] [--workdir DIR] [--keep]

Generates ``--count`` seeded photo-like images (long side log-uniform from
64 px to ``--max-side``; JPEG, PNG, WebP, BMP, TIFF; a few grey and RGBA),
in folders of 100. ``--broken-pct`` of them are broken on purpose, in turn:
truncated, random bytes, zero bytes, text with an image extension, and a
valid file whose header (first 32 bytes) is overwritten; each is checked not
to decode with Pillow before the run. Then one subprocess run::

    python -m animecli convert IN OUT --weights TINY --threads 1 --report soak.json -q

and checks, from the exit code and the JSON report:

* no crash: exit code 1 ("some files failed"), or 0 if nothing is broken;
* failed == number of broken files, every broken file listed as failed (by
  name), no good file failed, every converted output on disk, no temp files, no lock;
* RSS growth after warm-up, from the per-file ``rss_mb`` column: max over
  files 101..N minus max over files 1..100 (files that failed before
  inference have no RSS and are left out) <= ``--growth-target`` MB.

Throughput and peak RSS are taken from the report's summary. Prints Markdown
tables; exits 1 if a check fails. Run it niced on a shared machine:
``nice -n 10 python bench/soak.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kill_resume import LOCK_NAME, decodes, make_tiny_weights, seeded_photo, temp_files

FORMATS = {".jpg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF"}
BROKEN_KINDS = ("truncated", "random bytes", "zero bytes", "text", "corrupt header")
PER_FOLDER = 100


def _save(img: Image.Image, path: Path, rng: random.Random) -> None:
    fmt = FORMATS[path.suffix]
    params: dict[str, object] = {}
    if fmt in ("JPEG", "WEBP"):
        params["quality"] = rng.randint(70, 95)
    if fmt == "TIFF" and rng.random() < 0.5:
        params["compression"] = "tiff_deflate"
    img.save(path, format=fmt, **params)


def _photo(rng: random.Random, ext: str, max_side: int) -> Image.Image:
    long = round(math.exp(rng.uniform(math.log(64), math.log(max_side))))
    short = max(16, round(long * rng.uniform(0.5, 1.0)))
    w, h = (long, short) if rng.random() < 0.6 else (short, long)
    img = seeded_photo(rng, w, h)
    r = rng.random()
    if r < 0.05:
        img = img.convert("L")
    elif r < 0.10 and ext in (".png", ".webp", ".tif"):
        img.putalpha(Image.radial_gradient("L").resize(img.size))
    return img


def _break(path: Path, kind: str, rng: random.Random, max_side: int) -> None:
    """Turn ``path`` into a broken file of ``kind``."""
    if kind in ("truncated", "corrupt header"):
        _save(_photo(rng, path.suffix, max_side), path, rng)
        data = path.read_bytes()
        if kind == "truncated":
            data = data[: max(1, int(len(data) * rng.uniform(0.2, 0.7)))]
        else:
            data = rng.randbytes(32) + data[32:]
        path.write_bytes(data)
    elif kind == "random bytes":
        path.write_bytes(rng.randbytes(rng.randint(64, 200_000)))
    elif kind == "zero bytes":
        path.write_bytes(b"")
    else:
        path.write_text("This is not an image, just a note someone saved with the wrong extension.\n"
                        * rng.randint(1, 40))


def make_inputs(folder: Path, count: int, broken_pct: float, max_side: int, seed: int) -> dict[str, str]:
    """Write the images; return {relative path of each broken file: its kind}."""
    rng = random.Random(seed)
    n_broken = round(count * broken_pct / 100)
    broken_at = sorted(rng.sample(range(count), n_broken))
    kinds = {i: BROKEN_KINDS[k % len(BROKEN_KINDS)] for k, i in enumerate(broken_at)}
    broken: dict[str, str] = {}
    for i in range(count):
        ext = rng.choice(list(FORMATS))
        rel = Path(f"set_{i // PER_FOLDER:03d}") / f"img_{i:05d}{ext}"
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if i in kinds:
            _break(path, kinds[i], rng, max_side)
            if decodes(path) is not None:
                raise SystemExit(f"generator bug: broken file {rel} ({kinds[i]}) still decodes")
            broken[str(rel)] = kinds[i]
        else:
            _save(_photo(rng, ext, max_side), path, rng)
        if (i + 1) % 250 == 0:
            print(f"  {i + 1}/{count} images written", file=sys.stderr, flush=True)
    return broken


@dataclass
class Soak:
    count: int
    broken: dict[str, str]
    rc: int = -1
    wall_s: float = 0.0
    summary: dict[str, object] = field(default_factory=dict)
    total: int = 0
    failed_names: dict[str, str] = field(default_factory=dict)  # rel -> reason
    converted_dsts: list[str] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)  # per file, report order (0 = no RSS recorded)
    missing_outputs: int = 0
    leftover_temp: int = 0
    lock_left: bool = False
    problems: list[str] = field(default_factory=list)

    def growth(self) -> tuple[float, float, float]:
        """(max RSS files 1..100, max RSS files 101..N, growth) in MB."""
        head = [r for r in self.rss[:PER_FOLDER] if r > 0]
        tail = [r for r in self.rss[PER_FOLDER:] if r > 0]
        if not head or not tail:
            return (max(head, default=0.0), max(tail, default=0.0), 0.0)
        return max(head), max(tail), max(tail) - max(head)


def run_soak(workdir: Path, count: int, broken_pct: float, max_side: int, seed: int,
             weights: Path | None, growth_target: float) -> Soak:
    src, out, report = workdir / "in", workdir / "out", workdir / "soak.json"
    weights = weights or make_tiny_weights(workdir / "tiny.pt", seed)
    t0 = time.perf_counter()
    broken = make_inputs(src, count, broken_pct, max_side, seed)
    print(f"{count} inputs ({len(broken)} broken) written in {time.perf_counter() - t0:.0f} s; converting",
          file=sys.stderr, flush=True)
    res = Soak(count, broken)

    cmd = [sys.executable, "-m", "animecli", "convert", str(src), str(out), "--weights", str(weights),
           "--threads", "1", "--report", str(report), "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    with (workdir / "stdout.log").open("w") as so, (workdir / "stderr.log").open("w") as se:
        res.rc = subprocess.run(cmd, env=env, stdout=so, stderr=se).returncode
    res.wall_s = time.perf_counter() - t0
    expected_rc = 1 if broken else 0
    if res.rc != expected_rc:
        tail = (workdir / "stderr.log").read_text(errors="replace")[-800:]
        res.problems.append(f"crash: exit code {res.rc}, expected {expected_rc}: {tail}")
    if not report.is_file():
        res.problems.append("no report written")
        return res

    data = json.loads(report.read_text())
    res.summary = data["summary"]
    files = data["files"]
    res.total = len(files)
    for f in files:
        rel = str(Path(f["src"]).relative_to(src))
        res.rss.append(float(f["rss_mb"]))
        if f["status"] == "failed":
            res.failed_names[rel] = f["reason"]
        elif f["status"] == "converted":
            res.converted_dsts.append(f["dst"])
    res.missing_outputs = sum(not Path(d).is_file() or Path(d).stat().st_size == 0 for d in res.converted_dsts)
    res.leftover_temp = len(temp_files(out))
    res.lock_left = (out / LOCK_NAME).exists()

    s = res.summary
    if res.total != count:
        res.problems.append(f"report lists {res.total} files, expected {count}")
    if s.get("failed") != len(broken):
        res.problems.append(f"{s.get('failed')} failed, expected {len(broken)} (the broken files)")
    not_failed = sorted(set(broken) - set(res.failed_names))
    if not_failed:
        res.problems.append(f"{len(not_failed)} broken file(s) not listed as failed: {not_failed[:5]}")
    good_failed = sorted(set(res.failed_names) - set(broken))
    if good_failed:
        res.problems.append(f"{len(good_failed)} good file(s) failed: "
                            f"{[(n, res.failed_names[n]) for n in good_failed[:5]]}")
    if s.get("converted") != count - len(broken):
        res.problems.append(f"{s.get('converted')} converted, expected {count - len(broken)}")
    if s.get("interrupted") or s.get("fatal"):
        res.problems.append(f"run interrupted or fatal: {s.get('fatal')!r}")
    if res.missing_outputs:
        res.problems.append(f"{res.missing_outputs} converted output(s) missing or empty")
    if res.leftover_temp:
        res.problems.append(f"{res.leftover_temp} temporary file(s) left in the output")
    if res.lock_left:
        res.problems.append("lock file left after the run")
    head, tail, growth = res.growth()
    if growth > growth_target:
        res.problems.append(f"RSS grew {growth:.1f} MB after warm-up (max {head:.1f} -> {tail:.1f}), "
                            f"target <= {growth_target:g}")
    return res


def tables(res: Soak, growth_target: float) -> str:
    s = res.summary
    head, tail, growth = res.growth()
    broken_failed = sum(n in res.failed_names for n in res.broken)
    crash = "no" if res.rc == (1 if res.broken else 0) else f"YES (exit {res.rc})"
    lines = [
        "| figure | value | target |",
        "|---|---:|---:|",
        f"| total images (in the report) | {res.total} | {res.count} |",
        f"| converted | {s.get('converted', '?')} | {res.count - len(res.broken)} |",
        f"| failed | {s.get('failed', '?')} | {len(res.broken)} (the broken files) |",
        f"| broken files listed as failed, by name | {broken_failed} / {len(res.broken)} | all |",
        f"| good files failed | {len(set(res.failed_names) - set(res.broken))} | 0 |",
        f"| exit code / crash | {res.rc} / {crash} | 1 / no |",
        f"| wall time of the run (s) | {res.wall_s:.0f} | |",
        f"| throughput (report, images/s) | {s.get('images_per_s', '?')} | |",
        f"| peak RSS (report, MB) | {s.get('peak_rss_mb', '?')} | |",
        f"| max RSS files 1..100 / 101..N (MB) | {head:.1f} / {tail:.1f} | |",
        f"| RSS growth after warm-up (MB) | {growth:.1f} | <= {growth_target:g} |",
        f"| converted outputs missing on disk | {res.missing_outputs} | 0 |",
        f"| leftover temp files / lock | {res.leftover_temp} / {'yes' if res.lock_left else 'no'} | 0 / no |",
        "",
        "| broken kind | files | failed | example reason |",
        "|---|---:|---:|---|",
    ]
    for kind in BROKEN_KINDS:
        names = [n for n, k in res.broken.items() if k == kind]
        failed = [n for n in names if n in res.failed_names]
        example = res.failed_names[failed[0]].replace("|", "\\|") if failed else ""
        lines.append(f"| {kind} | {len(names)} | {len(failed)} | {example} |")
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or "?"
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs ({cpu}), load average {os.getloadavg()[0]:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--broken-pct", type=float, default=2.0)
    ap.add_argument("--max-side", type=int, default=1600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--growth-target", type=float, default=50.0, help="MB (default 50)")
    ap.add_argument("--weights", type=Path, default=None, help="generator to use (default: a tiny seeded one)")
    ap.add_argument("--workdir", type=Path, default=None, help="default: a new temporary folder")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="animecli-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        print(f"machine: {machine()} at the start", file=sys.stderr, flush=True)
        res = run_soak(workdir, args.count, args.broken_pct, args.max_side, args.seed, args.weights,
                       args.growth_target)
        print(tables(res, args.growth_target))
        print(f"machine: {machine()} at the end", file=sys.stderr)
        for p in res.problems:
            print(f"FAIL: {p}", file=sys.stderr)
        print("all checks passed" if not res.problems else f"{len(res.problems)} check(s) failed", file=sys.stderr)
        return 1 if res.problems else 0
    finally:
        if args.keep or args.workdir:
            print(f"work folder: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
