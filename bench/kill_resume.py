"""Kill -9 / resume: is `animecli convert` safe to leave in cron? (issue 7)

Usage: python bench/kill_resume.py [--kills 20] [--images 60] [--seed 0] [--full-time S]
                                   [--touch-inputs] [--weights W] [--workdir DIR] [--keep]

Makes a folder of small seeded photos (64-400 px, JPEG and PNG, in a few
sub-folders), measures one uninterrupted run (the "full-run time"; skipped
with --full-time), then starts ``python -m animecli convert IN OUT`` again and
again, killing it with SIGKILL after a seeded random delay between 0.3 s and
the full-run time. After each kill the outputs present are decoded. Finally
it reruns the same command to completion and checks:

* the final run exits 0 (the stale lock of a killed run is taken over) and
  its report says 0 failed;
* every expected output exists and fully decodes with Pillow, at the input's size;
* no temporary files (``.animecli-*.part``) are left in the output tree, and no lock.

Resumed runs have less and less to do, so after a kill or two most kills land
in a run that only skips. ``--touch-inputs`` bumps every input's modification
time before each killed run, so each one has all images to convert again
(replacing the existing outputs atomically): kills then land mid-conversion far
more often, and the replace path is exercised as well. The final run is never
preceded by a touch.

Prints Markdown tables; exits 1 if a check fails. Without --weights a tiny
seeded generator (a few KB, random init) is used, so the figures measure the
CLI's bookkeeping, not a model. Run it niced on a shared machine:
``nice -n 10 python bench/kill_resume.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

TEMP_GLOB = ".animecli-*.part"
LOCK_NAME = ".animecli.lock"
STATE_NAME = ".animecli.state.jsonl"
SUBFOLDERS = ("", "trip", "trip/day2")


# ---------------------------------------------------------------- inputs


def seeded_photo(rng: random.Random, width: int, height: int) -> Image.Image:
    """A deterministic photo-like RGB image: smooth gradients per channel plus coarse noise."""
    ramps = [
        Image.linear_gradient("L"),
        Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90),
        Image.radial_gradient("L"),
        Image.linear_gradient("L").transpose(Image.Transpose.FLIP_TOP_BOTTOM),
    ]
    channels = [rng.choice(ramps).resize((width, height), Image.Resampling.BILINEAR) for _ in range(3)]
    base = Image.merge("RGB", channels)
    nw, nh = max(2, width // 8), max(2, height // 8)
    noise = Image.frombytes("RGB", (nw, nh), rng.randbytes(nw * nh * 3))
    noise = noise.resize((width, height), Image.Resampling.BICUBIC)
    return Image.blend(base, noise, rng.uniform(0.15, 0.45))


def make_photos(folder: Path, count: int, seed: int) -> list[Path]:
    """``count`` photos of 64-400 px per side, JPEG or PNG, spread over a few sub-folders.

    Returns:
        Their paths relative to ``folder`` (an output has the same relative path).
    """
    rng = random.Random(seed)
    rels = []
    for i in range(count):
        w, h = rng.randint(64, 400), rng.randint(64, 400)
        ext = rng.choice((".jpg", ".png"))
        rel = Path(SUBFOLDERS[i % len(SUBFOLDERS)]) / f"photo_{i:03d}{ext}"
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        img = seeded_photo(rng, w, h)
        if ext == ".jpg":
            img.save(path, quality=rng.randint(70, 95))
        else:
            img.save(path)
        rels.append(rel)
    return rels


def make_tiny_weights(path: Path, seed: int = 0) -> Path:
    """A few-KB ``lite`` generator (width 1/8), random init, seeded."""
    import torch

    from animecli.models.registry import build_generator
    from animecli.models.spec import Arch, ArchSpec

    torch.manual_seed(seed)
    model = build_generator(ArchSpec(Arch.LITE, width=0.125))
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, path)
    return path


# ---------------------------------------------------------------- checks


def decodes(path: Path) -> tuple[int, int] | None:
    """The image's size if Pillow opens and fully decodes it, else ``None``."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.size
    except Exception:
        return None


def state_lines(out: Path) -> int:
    try:
        return len((out / STATE_NAME).read_bytes().splitlines())
    except FileNotFoundError:
        return 0


def temp_files(out: Path) -> list[Path]:
    return sorted(out.rglob(TEMP_GLOB)) if out.is_dir() else []


@dataclass
class KillRow:
    """What one killed (or early-finished) run left behind."""

    n: int
    delay_s: float
    outcome: str  # "killed" or "exit N"
    todo: int  # outputs missing or out of date when the run started
    recorded: int  # lines this run appended to the resume state (outputs it completed)
    present: int
    invalid: int
    temp: int
    lock_left: bool

    @property
    def phase(self) -> str:
        if self.todo == 0:
            return "idle"
        return "startup" if self.recorded == 0 else "end" if self.recorded >= self.todo else "mid"


@dataclass
class Result:
    images: int
    full_time_s: float
    touched: bool = False
    rows: list[KillRow] = field(default_factory=list)
    final_rc: int | None = None
    final_summary: dict[str, object] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    leftover_temp: list[str] = field(default_factory=list)
    lock_after_final: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def kills(self) -> int:
        return sum(r.outcome == "killed" for r in self.rows)

    def kills_where(self, phase: str) -> int:
        """Kills of runs with nothing to do (``idle``), before the first output (``startup``), between the
        first and the last (``mid``), or after the last (``end``: report, lock release, interpreter exit)."""
        return sum(r.outcome == "killed" and r.phase == phase for r in self.rows)

    @property
    def ok(self) -> bool:
        return not self.problems


def convert_cmd(src: Path, out: Path, weights: Path, report: Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "animecli", "convert", str(src), str(out), "--weights", str(weights),
           "--threads", "1", "-q"]
    if report is not None:
        cmd += ["--report", str(report)]
    return cmd


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def check_outputs(src: Path, out: Path, rels: list[Path]) -> tuple[int, list[str], list[str]]:
    """(present, missing, invalid): outputs that exist, are absent, or fail to decode / have the wrong size."""
    present, missing, invalid = 0, [], []
    for rel in rels:
        dst = out / rel
        if not dst.exists():
            missing.append(str(rel))
            continue
        present += 1
        size = decodes(dst)
        if size is None:
            invalid.append(f"{rel} (does not decode)")
            continue
        with Image.open(src / rel) as im:
            if im.size != size:
                invalid.append(f"{rel} (size {size}, input {im.size})")
    return present, missing, invalid


def run_bench(
    workdir: Path,
    kills: int = 20,
    images: int = 60,
    seed: int = 0,
    full_time: float | None = None,
    weights: Path | None = None,
    touch_inputs: bool = False,
    log: Callable[[str], None] = print,
) -> Result:
    """The whole benchmark in ``workdir`` (which must be empty or absent)."""
    workdir.mkdir(parents=True, exist_ok=True)
    src, out = workdir / "in", workdir / "out"
    weights = weights or make_tiny_weights(workdir / "tiny.pt", seed)
    rels = make_photos(src, images, seed)
    log(f"{images} photos in {src}")

    if full_time is None:
        calib = workdir / "calib"
        t0 = time.perf_counter()
        proc = subprocess.run(convert_cmd(src, calib, weights), env=_env(), capture_output=True, text=True)
        full_time = time.perf_counter() - t0
        shutil.rmtree(calib, ignore_errors=True)
        if proc.returncode != 0:
            raise SystemExit(f"calibration run failed (exit {proc.returncode}):\n{proc.stderr}")
        log(f"full uninterrupted run: {full_time:.1f} s")
    res = Result(images, full_time, touch_inputs)

    rng = random.Random(seed + 1)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    for n in range(1, kills + 1):
        delay = rng.uniform(0.3, max(0.3, full_time))
        if touch_inputs:
            now = time.time_ns()
            for rel in rels:
                os.utime(src / rel, ns=(now, now))
        lines_before = state_lines(out)
        todo = images if touch_inputs else len(check_outputs(src, out, rels)[1])
        with (logs / f"run{n:02d}.err").open("w") as err:
            proc = subprocess.Popen(convert_cmd(src, out, weights), env=_env(),
                                    stdout=subprocess.DEVNULL, stderr=err)
            try:
                rc = proc.wait(timeout=delay)
                outcome = f"exit {rc}"
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                outcome = "killed"
        if outcome not in ("killed", "exit 0"):
            text = (logs / f"run{n:02d}.err").read_text(errors="replace").strip()
            res.problems.append(f"run {n} ended by itself with {outcome} (not killed, not 0): {text[-300:]}")
        present, _, invalid = check_outputs(src, out, rels)
        row = KillRow(n, delay, outcome, todo, state_lines(out) - lines_before, present, len(invalid),
                      len(temp_files(out)), (out / LOCK_NAME).exists())
        res.rows.append(row)
        if invalid:
            res.problems.append(f"after run {n}: {len(invalid)} present output(s) invalid: {invalid[:3]}")
        log(f"run {n:2d}: {delay:4.1f} s, {outcome:7s}, {todo} to do, {row.recorded} done, {present}/{images} outputs, "
            f"{row.invalid} invalid, {row.temp} temp, lock {'left' if row.lock_left else 'gone'}")

    report = workdir / "final.json"
    proc = subprocess.run(convert_cmd(src, out, weights, report), env=_env(), capture_output=True, text=True)
    res.final_rc = proc.returncode
    if proc.returncode != 0:
        res.problems.append(f"final run exited {proc.returncode}, not 0: {proc.stderr.strip()[-500:]}")
    if report.is_file():
        res.final_summary = json.loads(report.read_text())["summary"]
        if res.final_summary.get("failed") != 0:
            res.problems.append(f"final report: {res.final_summary.get('failed')} failed")
    else:
        res.problems.append("final run wrote no report")
    _, res.missing, res.invalid = check_outputs(src, out, rels)
    res.leftover_temp = [str(p.relative_to(out)) for p in temp_files(out)]
    res.lock_after_final = (out / LOCK_NAME).exists()
    if res.missing:
        res.problems.append(f"{len(res.missing)} output(s) missing: {res.missing[:5]}")
    if res.invalid:
        res.problems.append(f"{len(res.invalid)} output(s) invalid: {res.invalid[:5]}")
    if res.leftover_temp:
        res.problems.append(f"{len(res.leftover_temp)} temporary file(s) left: {res.leftover_temp[:5]}")
    if res.lock_after_final:
        res.problems.append("lock file left after the final run")
    return res


# ---------------------------------------------------------------- output


def tables(res: Result) -> str:
    lines = [
        "| run | kill after (s) | outcome | to do | completed | outputs present | invalid | temp files | lock left |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in res.rows:
        lines.append(f"| {r.n} | {r.delay_s:.2f} | {r.outcome} | {r.todo} | {r.recorded} | {r.present}/{res.images} | "
                     f"{r.invalid} | {r.temp} | {'yes' if r.lock_left else 'no'} |")
    s = res.final_summary
    lines += [
        "",
        "| figure | value | target |",
        "|---|---:|---:|",
        f"| images | {res.images} | |",
        f"| full uninterrupted run (s) | {res.full_time_s:.1f} | |",
        f"| inputs touched before each killed run | {'yes' if res.touched else 'no'} | |",
        f"| SIGKILLs delivered | {res.kills} of {len(res.rows)} runs | |",
        f"| … before the run's first output (start-up, model load) | {res.kills_where('startup')} | |",
        f"| … mid-conversion (after ≥ 1 output, with work left) | {res.kills_where('mid')} | |",
        f"| … after the run's last output (report, exit) | {res.kills_where('end')} | |",
        f"| … with nothing left to convert (skips only) | {res.kills_where('idle')} | |",
        f"| kills that left a stale lock | {sum(r.lock_left and r.outcome == 'killed' for r in res.rows)} | |",
        f"| final run exit code | {res.final_rc} | 0 |",
        f"| final run converted / skipped / failed | {s.get('converted', '?')} / {s.get('skipped', '?')} / "
        f"{s.get('failed', '?')} | failed 0 |",
        f"| invalid outputs | {len(res.invalid)} | 0 |",
        f"| missing outputs | {len(res.missing)} | 0 |",
        f"| leftover temp files (`{TEMP_GLOB}`) | {len(res.leftover_temp)} | 0 |",
        f"| lock file after final run | {'yes' if res.lock_after_final else 'no'} | no |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--full-time", type=float, default=None,
                    help="typical full-run time in seconds (default: measured by one uninterrupted run)")
    ap.add_argument("--touch-inputs", action="store_true",
                    help="bump the inputs' mtime before each killed run, so that each has everything to redo")
    ap.add_argument("--weights", type=Path, default=None, help="generator to use (default: a tiny seeded one)")
    ap.add_argument("--workdir", type=Path, default=None, help="default: a new temporary folder")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="animecli-kill-"))
    try:
        res = run_bench(workdir, args.kills, args.images, args.seed, args.full_time, args.weights,
                        args.touch_inputs,
                        log=lambda m: print(m, file=sys.stderr, flush=True))
        print(tables(res))
        for p in res.problems:
            print(f"FAIL: {p}", file=sys.stderr)
        print("all checks passed" if res.ok else f"{len(res.problems)} check(s) failed", file=sys.stderr)
        return 0 if res.ok else 1
    finally:
        if args.keep or args.workdir:
            print(f"work folder: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
