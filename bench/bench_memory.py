"""Peak memory of ``animecli convert`` on large photos: the torch-free engine beside the PyTorch one.

Usage: python bench/bench_memory.py [--images DIR] [--long-side 1024] [--repeat 3] [--model hayao]
       [--backend auto] [--out docs/memory_table.md]

Issue 4's memory target ("peak RSS converting 1024-px photos on CPU under 600 MB") as one
command. The photos (default: the bundled ``examples/``) are first scaled so that their long
side is ``--long-side`` pixels and written as JPEGs to a temporary folder. Then ``animecli
convert`` runs on that folder in a child process, once per engine and round, rounds
interleaved so that a busy machine slows both alike:

- ``torch-free``: the default CPU path (``animecli.inference.ort_engine``: onnxruntime on numpy arrays, no
  ``import torch``) — used when onnxruntime is installed and the model's graph is cached;
- ``PyTorch``: the same command with ``ANIMECLI_LEAN=0`` (the PyTorch engine, what every run
  used before the torch-free path existed).

One warm-up run first exports the model's ONNX graph into a temporary ``ANIMECLI_HOME``, as a
user's first run would. Peak RSS is the child's ``ru_maxrss`` (``os.wait4``), so it covers
the whole process: interpreter, imports, model, decode, inference and encode. The table also
gives the wall time of each run (start-up included) and the largest pixel difference between
the two engines' outputs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
ENGINES = {"torch-free": "1", "PyTorch": "0"}  # value of ANIMECLI_LEAN


def make_photos(src: Path, dst: Path, long_side: int) -> list[str]:
    """Scale every photo in ``src`` to ``long_side`` pixels on its long side; return "W×H" per photo."""
    dst.mkdir(parents=True, exist_ok=True)
    sizes = []
    for path in sorted(p for p in src.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"}):
        with Image.open(path) as im:
            rgb = ImageOps.exif_transpose(im).convert("RGB")
        scale = long_side / max(rgb.size)
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb.resize(size, Image.Resampling.LANCZOS).save(dst / f"{path.stem}.jpg", quality=95)
        sizes.append(f"{size[0]}×{size[1]}")
    if not sizes:
        raise SystemExit(f"{src}: no photos (.jpg, .png, .webp) to scale")
    return sizes


def convert(photos: Path, out: Path, env: dict[str, str], args: argparse.Namespace) -> tuple[int, float]:
    """Run ``animecli convert`` in a child process; return (peak RSS in kB, wall seconds)."""
    cmd = [sys.executable, "-m", "animecli", "convert", str(photos), str(out), "--quiet", "--overwrite",
           "--model", args.model, "--backend", args.backend, "--device", "cpu",
           "--max-size", str(args.long_side)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()  # read before waiting: a full pipe would block the child
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited with {proc.returncode}:\n{err.decode(errors='replace')}")
    return int(usage.ru_maxrss), wall  # Linux: kB


def max_pixel_difference(a: Path, b: Path) -> int:
    """Largest absolute difference of any pixel between same-named images of two folders."""
    worst = 0
    for pa in sorted(p for p in a.iterdir() if not p.name.startswith(".")):  # not the resume state
        with Image.open(pa) as ia, Image.open(b / pa.name) as ib:
            da = np.asarray(ia.convert("RGB"), dtype=np.int16)
            db = np.asarray(ib.convert("RGB"), dtype=np.int16)
        worst = max(worst, int(np.abs(da - db).max()))
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=ROOT / "examples", help="photo folder (default: examples/)")
    ap.add_argument("--long-side", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3, help="rounds (each engine once per round)")
    ap.add_argument("--model", default="hayao")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--out", type=Path, default=None, help="also write the Markdown table here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="animecli-mem-") as tmp:
        work = Path(tmp)
        sizes = make_photos(args.images, work / "photos", args.long_side)
        env = {**os.environ, "ANIMECLI_HOME": str(work / "home")}
        convert(work / "photos", work / "warm", env, args)  # exports and caches the graph
        runs: dict[str, list[tuple[int, float]]] = {name: [] for name in ENGINES}
        for _ in range(args.repeat):
            for name, lean in ENGINES.items():
                runs[name].append(convert(work / "photos", work / name, {**env, "ANIMECLI_LEAN": lean}, args))
        diff = max_pixel_difference(work / "torch-free", work / "PyTorch")

    lines = [
        f"{len(sizes)} photos ({', '.join(sizes)}), model {args.model}, backend {args.backend}, "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, Python {platform.python_version()}",
        "",
        "| engine | peak RSS per run (kB) | median | wall per run (s) |",
        "|---|---|---:|---|",
    ]
    for name, rs in runs.items():
        kb = [r[0] for r in rs]
        med = statistics.median(kb)
        lines.append(f"| {name} | {' / '.join(f'{k:,}' for k in kb)} "
                     f"| {med / 1024:.0f} MiB ({med * 1024 / 1e6:.0f} MB) | {' / '.join(f'{r[1]:.2f}' for r in rs)} |")
    free, torch_ = (statistics.median(r[0] for r in runs[n]) for n in ENGINES)
    lines += ["", f"torch-free / PyTorch peak RSS: {free / torch_:.2f}; "
              f"largest pixel difference between their outputs: {diff}"]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
