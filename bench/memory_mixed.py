"""Memory of ``animecli convert`` on a *mixed* folder: many sizes, aspect ratios and formats.

Usage: python bench/memory_mixed.py [--work /tmp/animecli_mixed] [--photos 170] [--repeat 2]
       [--tree NAME=PATH ...] [--model hayao] [--v2] [--env NAME=VALUE ...] [--arg ARG ...]
       [--soak N]

Issue 23. ``bench/bench_memory.py`` measures four photos of two shapes; a real folder has
dozens of processed sizes, and memory that grows per shape (onnxruntime's arena, cached
plans) only shows there. This script

1. builds, once (cached under ``--work``), a folder from ``../shared/photos`` (train + val):
   ``--photos`` photos, seeded, each cropped to a random aspect ratio (1:1 … 21:9, both
   orientations, some arbitrary) and scaled so that its long side is 400–2048 px
   (upscaled where the photo is smaller), saved as JPEG (~70 %), PNG (~25 %) or WebP;
   plus four 2048-px and three 4000-px images (real photos upscaled), spread through
   the folder;
2. runs ``python -m animecli convert FOLDER OUT --report r.json`` as fresh processes
   (default settings unless ``--arg``), under ``/usr/bin/time -v`` when present (peak RSS
   = "Maximum resident set size"), else polling the child with psutil;
3. per tree (``--tree A=/work/main --tree B=/work/wtmem``; each run with
   ``PYTHONPATH=PATH``), runs rounds interleaved A, B, A, B … so that a busy machine
   slows both alike, after one throw-away warm-up run per tree and model that fills
   the graph cache (each tree has its own ``ANIMECLI_HOME`` under ``--work``, so a tree
   that changes the export does not reuse another's graphs);
4. prints a table: peak RSS, the report's per-file RSS (median, min, max and swing =
   max − min over the files after the 20th), images/s (the report's), and the ratio of
   images/s to the first tree's.

``--v2`` adds rows for a v2-architecture model: an installed v2 model if ``animecli models
list`` has one, else seeded random v2 weights given with ``--weights`` (same cost as any v2
checkpoint; the PyTorch engine's ``onnx`` backend). v2 is ~5× slower than the default:
``--v2-photos`` (default 30) limits its folder.

``--soak N`` runs one process per tree on the folder repeated to N files (copies: a file
reached twice is converted once) and prints the per-file RSS at a few points and the growth from file 50 to the end.

Sizes: peak RSS in MiB (kB from ``time -v`` / 1024) and in MB (10^6 bytes); the report's
``rss_mb`` is MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_PHOTOS = ROOT.parent / "shared" / "photos"
ASPECTS = [1.0, 4 / 3, 3 / 2, 16 / 9, 21 / 9, 5 / 4]
FOLDER_VERSION = "1"  # bump when the folder recipe changes


def _pick_sources(src: Path, n: int, rng: random.Random) -> list[Path]:
    files = sorted(p for sub in ("train", "val") for p in (src / sub).glob("*")
                   if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"})
    if len(files) < n:
        raise SystemExit(f"{src}: {len(files)} photos, fewer than --photos {n}")
    return rng.sample(files, n)


def _crop_to_aspect(im: object, aspect: float, rng: random.Random) -> object:
    from PIL import Image

    assert isinstance(im, Image.Image)
    w, h = im.size
    if w / h > aspect:  # too wide: crop width
        cw, ch = max(1, round(h * aspect)), h
    else:
        cw, ch = w, max(1, round(w / aspect))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return im.crop((x, y, x + cw, y + ch))


def build_folder(work: Path, n: int, seed: int = 0, name: str = "mixed") -> Path:
    """The mixed folder (built once; reused while its recipe, size and seed are the same)."""
    from PIL import Image, ImageOps

    folder = work / f"{name}-{FOLDER_VERSION}-{n}-{seed}"
    done = folder / ".complete"
    if done.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = random.Random(seed)
    big = {round(n * k / 8): long for k, long in
           zip(range(1, 8), (2048, 4000, 2048, 4000, 2048, 4000, 2048), strict=True)}
    sources = _pick_sources(SHARED_PHOTOS, n, rng)
    for i, src in enumerate(sources):
        with Image.open(src) as im:
            rgb = ImageOps.exif_transpose(im).convert("RGB")
        r = rng.random()
        aspect = rng.choice(ASPECTS) if r < 0.8 else rng.uniform(1.0, 2.5)
        if rng.random() < 0.4:
            aspect = 1 / aspect  # portrait
        rgb = _crop_to_aspect(rgb, aspect, rng)
        assert isinstance(rgb, Image.Image)
        long = big.get(i) or rng.randint(400, 2048)
        scale = long / max(rgb.size)
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
        f = rng.random()
        if i in big or f < 0.70:
            rgb.save(folder / f"p{i:03d}.jpg", quality=rng.randint(80, 95))
        elif f < 0.95:
            rgb.save(folder / f"p{i:03d}.png", compress_level=1)
        else:
            rgb.save(folder / f"p{i:03d}.webp", quality=85)
    done.write_text("ok\n")
    return folder


def soak_folder(base: Path, files: int) -> Path:
    """``files`` copies cycling through ``base``'s photos (made once).

    Copies, not links: the converter converts a file reached twice (a symlink, a hard link) once,
    so a folder of links to 40 photos was a 40-file soak.
    """
    folder = base.parent / f"{base.name}-soakcopy{files}"
    done = folder / ".complete"
    if done.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    photos = sorted(p for p in base.iterdir() if not p.name.startswith("."))
    for i in range(files):
        src = photos[i % len(photos)]
        shutil.copyfile(src, folder / f"s{i:05d}{src.suffix}")
    done.write_text("ok\n")
    return folder


def one_photo(base: Path) -> Path:
    folder = base.parent / f"{base.name}-one"
    if not folder.exists():
        folder.mkdir()
        src = sorted(p for p in base.iterdir() if p.suffix == ".jpg")[0]
        shutil.copy(src, folder / src.name)
    return folder


@dataclass
class Result:
    peak_kb: int
    wall_s: float
    images_per_s: float
    rss: list[float]  # the report's per-file rss_mb (MiB), converted files, in order
    converted: int
    failed: int


TIME = Path("/usr/bin/time")


def run_convert(tree: Path, home: Path, folder: Path, out: Path, extra: list[str], env_extra: dict[str, str],
                report: Path) -> Result:
    """One fresh ``animecli convert`` process."""
    env = dict(os.environ, PYTHONPATH=str(tree), ANIMECLI_HOME=str(home), **env_extra)
    cmd = [sys.executable, "-m", "animecli", "convert", str(folder), str(out), "--report", str(report),
           "--quiet", "--overwrite", *extra]
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    if TIME.exists():
        # cwd=tree: `python -m` puts the working directory before PYTHONPATH, so from another
        # checkout every tree would run that checkout's code.
        proc = subprocess.run([str(TIME), "-v", *cmd], env=env, capture_output=True, text=True, cwd=tree)
        wall = time.perf_counter() - t0
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
        peak = int(found.group(1)) if found else 0
        rc = proc.returncode
        err = proc.stderr
    else:
        import psutil

        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tree)
        child = psutil.Process(p.pid)
        peak = 0
        while p.poll() is None:
            try:
                peak = max(peak, child.memory_info().rss // 1024)
            except psutil.Error:
                break
            time.sleep(0.05)
        err = p.stderr.read() if p.stderr else ""
        rc = p.wait()
        wall = time.perf_counter() - t0
    if rc not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} exited with {rc}:\n{err[-3000:]}")
    data = json.loads(report.read_text())
    files = [f for f in data["files"] if f["status"] == "converted"]
    s = data["summary"]
    return Result(peak, wall, float(s["images_per_s"]), [float(f["rss_mb"]) for f in files],
                  int(s["converted"]), int(s["failed"]))


def rss_stats(rss: list[float], skip: int = 20) -> tuple[float, float, float, float]:
    """(median, min, max, swing) of per-file RSS after the first ``skip`` files."""
    tail = rss[skip:] or rss
    return statistics.median(tail), min(tail), max(tail), max(tail) - min(tail)


def v2_weights(work: Path) -> Path:
    """Seeded random v2 weights (a state dict), made once with this checkout's code (the
    state dict's keys are v2's in every tree; the module paths that build it are not)."""
    path = work / "v2_random_seed0.pt"
    if not path.exists():
        code = ("import torch, sys; from animecli.models.registry import build_generator; "
                "from animecli.models.spec import Arch, ArchSpec; torch.manual_seed(0); "
                "m = build_generator(ArchSpec(Arch.V2)); torch.save(m.state_dict(), sys.argv[1])")
        subprocess.run([sys.executable, "-c", code, str(path)], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                       check=True, cwd=ROOT)
    return path


def installed_v2(tree: Path) -> str | None:
    proc = subprocess.run([sys.executable, "-m", "animecli", "models", "list"], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(tree)), cwd=tree)
    for line in proc.stdout.splitlines()[1:]:
        cols = line.split("\t")
        if len(cols) >= 8 and cols[2] == "v2" and cols[7] == "yes":
            return cols[0]
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/animecli_mixed"))
    ap.add_argument("--photos", type=int, default=170)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--tree", action="append", default=[], help="NAME=PATH (repeatable); default: this tree")
    ap.add_argument("--model", default="", help="model name for the default rows ('' = the shipped default)")
    ap.add_argument("--v2", action="store_true", help="also a v2-architecture model (see the docstring)")
    ap.add_argument("--v2-photos", type=int, default=30)
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for every child (repeatable)")
    ap.add_argument("--variant", action="append", default=[],
                    help="LABEL:NAME=VALUE[,NAME=VALUE]: an extra row per tree with those env settings")
    ap.add_argument("--arg", action="append", default=[], help="extra convert argument (repeatable)")
    ap.add_argument("--soak", type=int, default=0, help="files in the soak run (0 = none)")
    ap.add_argument("--no-warmup", action="store_true")
    args = ap.parse_args()

    trees = [(t.split("=", 1)[0], Path(t.split("=", 1)[1]).resolve()) for t in args.tree] or [("this", ROOT)]
    env_extra = dict(e.split("=", 1) for e in args.env)
    args.work = args.work.resolve()  # the children run in their tree (cwd), so paths must be absolute
    args.work.mkdir(parents=True, exist_ok=True)
    folder = build_folder(args.work, args.photos, args.seed)
    photos = [p for p in folder.iterdir() if not p.name.startswith(".")]
    print(f"folder {folder}: {len(photos)} files "
          f"({sum(p.suffix == '.jpg' for p in photos)} JPEG, {sum(p.suffix == '.png' for p in photos)} PNG, "
          f"{sum(p.suffix == '.webp' for p in photos)} WebP)", flush=True)

    variants: list[tuple[str, dict[str, str]]] = [("", {})]
    for v in args.variant:
        label, _, settings = v.partition(":")
        variants.append((label, dict(s.split("=", 1) for s in settings.split(",") if s)))

    model_rows: list[tuple[str, list[str], Path]] = [
        (args.model or "default", ["--model", args.model] if args.model else [], folder)]
    if args.v2:
        name = installed_v2(trees[0][1])
        v2_folder = build_folder(args.work, args.v2_photos, args.seed + 1)
        if name:
            model_rows.append((name, ["--model", name], v2_folder))
        else:
            wts = v2_weights(args.work)
            model_rows.append(("v2 (random weights)", ["--weights", str(wts), "--arch", "v2"], v2_folder))

    homes = {name: args.work / f"home-{name}" for name, _ in trees}
    out, report = args.work / "out", args.work / "r.json"
    if not args.no_warmup:
        for tname, tree in trees:
            for _, margs, _f in model_rows:
                run_convert(tree, homes[tname], one_photo(folder), out, margs + args.arg, env_extra, report)

    results: dict[tuple[str, str, str], list[Result]] = {}
    if args.repeat:
        for r in range(args.repeat):
            for mname, margs, mfolder in model_rows:
                for label, venv in variants:
                    for tname, tree in trees:
                        res = run_convert(tree, homes[tname], mfolder, out, margs + args.arg,
                                          {**env_extra, **venv}, report)
                        results.setdefault((mname, label, tname), []).append(res)
                        med, lo, hi, _ = rss_stats(res.rss)
                        print(f"  round {r + 1} {mname} {tname}{' ' + label if label else ''}: peak "
                              f"{res.peak_kb / 1024:.0f} MiB, per-file median {med:.0f} [{lo:.0f}–{hi:.0f}] MiB, "
                              f"{res.images_per_s:.3f} img/s, {res.converted} converted, {res.failed} failed, "
                              f"{res.wall_s:.1f} s", flush=True)
        print()
        print("| model | tree | variant | peak RSS MiB (MB), per run | per-file RSS median MiB | min–max after 20th "
              "| swing | ±% of median | images/s (median) | × first tree |")
        print("|---|---|---|---|---:|---|---:|---:|---:|---:|")
        for mname, _, _f in model_rows:
            base_ips = 0.0
            for label, _ in variants:
                for tname, _ in trees:
                    rs = results[(mname, label, tname)]
                    peaks = " / ".join(f"{x.peak_kb / 1024:.0f} ({x.peak_kb * 1.024 / 1000:.0f})" for x in rs)
                    meds = [rss_stats(x.rss) for x in rs]
                    med = statistics.median(m[0] for m in meds)
                    lo, hi = min(m[1] for m in meds), max(m[2] for m in meds)
                    half = max(hi - med, med - lo)
                    ips = statistics.median(x.images_per_s for x in rs)
                    if not base_ips:
                        base_ips = ips
                    print(f"| {mname} | {tname} | {label or '-'} | {peaks} | {med:.0f} | {lo:.0f}–{hi:.0f} | "
                          f"{hi - lo:.0f} | ±{half:.0f} | {ips:.3f} | {ips / base_ips:.3f} |")

    if args.soak:
        sfolder = soak_folder(folder, args.soak)
        print(f"\nsoak: {args.soak} files (copies cycling through {folder.name})")
        for tname, tree in trees:
            res = run_convert(tree, homes[tname], sfolder, out, model_rows[0][1] + args.arg, env_extra, report)
            rss = res.rss
            points = [i for i in (20, 50, 100, 200, 500, 1000, 1500, len(rss) - 1) if i < len(rss)]
            window = 50

            def avg(i: int, rss: list[float] = rss, window: int = window) -> float:
                return statistics.median(rss[max(0, i - window // 2): i + window // 2 + 1])

            print(f"  {tname}: peak {res.peak_kb / 1024:.0f} MiB, {res.converted} converted in {res.wall_s:.0f} s "
                  f"({res.images_per_s:.3f} img/s); per-file RSS (median of {window} around) "
                  + ", ".join(f"#{i}: {avg(i):.0f}" for i in points)
                  + f"; growth #50→end {avg(len(rss) - 1) - avg(50):+.0f} MiB; "
                    f"max after #50 {max(rss[50:] or rss):.0f}")
            # The same photos in each cycle through the folder: the fairest view of growth,
            # since a window of 50 files mixes photos of different sizes.
            n = max(1, len(list(folder.glob("p*"))))
            cycles = [statistics.median(rss[c:c + n]) for c in range(0, len(rss) - n + 1, n)]
            if len(cycles) > 1:
                pick = sorted({0, 1, 2, 5, 10, 25, len(cycles) - 1} & set(range(len(cycles))))
                print(f"  {tname}: per-cycle median RSS ({n} photos each) "
                      + ", ".join(f"c{c + 1}: {cycles[c]:.0f}" for c in pick)
                      + f"; cycle 2→last {cycles[-1] - cycles[1]:+.0f} MiB; "
                        f"#20→end {avg(len(rss) - 1) - avg(20):+.0f} MiB")


if __name__ == "__main__":
    main()
