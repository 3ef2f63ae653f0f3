"""Pareto table of structurally pruned AnimeGANv3 students against their teacher (model only, torch eager, CPU).

For one teacher, each row is a model: the teacher itself (our float import of the
ONNX file), each pruning ratio right after pruning (no fine-tuning) and after
fine-tuning (``pruned_R.pt`` / ``student_R.pt`` of the given work dirs, see
``animecli.training.prune_distill``); ``--prune-now`` adds untuned points pruned
here for ratios that have no file. Figures on validation photos (never trained on),
each resized so its long side is 512 and centre-cropped to a multiple of 16:

* captured = 1 − ΣMSE(student, teacher) / ΣMSE(photo, teacher);
* colour = the same figure for the best per-image affine colour map photo → teacher
  (what a colour filter reaches), on the teacher row;
* edge = mean Sobel gradient magnitude of the student / of the teacher;
* ms at 512² and at 1024×688 (683 rounded up to a multiple of 16), median of
  ``--repeat`` after a warm-up, torch eager, ``--threads`` threads;
* parameters and the size of the fp32 state dict file.

Usage:
    PYTHONPATH=. python bench/prune_pareto.py --teacher ../shared/teachers/animeganv3_cute.onnx \
        --work /work/prune_ckpt/cute_50 --val 32
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageOps

from animecli.inference.backends import make_runner
from animecli.options import Backend
from animecli.training.distill import to_tensor, to_unit
from animecli.training.losses import sobel_edges
from animecli.training.prune import PrunableGenerator, prune
from animecli.training.prune_distill import list_photos, load_student, load_teacher, random_crops


def val_photo(path: Path, long_side: int = 512, multiple: int = 16) -> torch.Tensor:
    """(1, 3, H, W) in [-1, 1]: long side ``long_side``, centre-cropped to multiples of ``multiple``."""
    with Image.open(path) as opened:
        im = ImageOps.exif_transpose(opened).convert("RGB")
    s = long_side / max(im.size)
    w, h = max(multiple, round(im.width * s)), max(multiple, round(im.height * s))
    im = im.resize((w, h), Image.Resampling.LANCZOS)
    cw, ch = w - w % multiple, h - h % multiple
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    return to_unit(to_tensor(im.crop((x0, y0, x0 + cw, y0 + ch)))).unsqueeze(0)


def affine_colour(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The best (least squares) per-image affine colour map of ``x`` onto ``t``, applied to ``x``; (1, 3, H, W)."""
    a = torch.cat([x[0].reshape(3, -1).T, torch.ones(x[0, 0].numel(), 1)], 1).double()
    b = t[0].reshape(3, -1).T.double()
    m = torch.linalg.lstsq(a, b).solution
    return (a @ m).T.reshape_as(x).float().clamp(-1, 1)


def grad_energy(y: torch.Tensor) -> float:
    """Mean Sobel gradient magnitude of (1, 3, H, W)."""
    e = sobel_edges(y)
    c = y.shape[1]
    return float(torch.sqrt(e[:, 0::2] ** 2 + e[:, 1::2] ** 2 + 1e-12).mean()) if c else 0.0


def timed(model: torch.nn.Module, h: int, w: int, repeat: int) -> float:
    """Median ms of one (1, 3, h, w) forward after one warm-up."""
    x = torch.zeros(1, 3, h, w).uniform_(-1, 1)
    times = []
    with torch.inference_mode():
        model(x)
        for _ in range(repeat):
            t0 = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def gmacs(model: torch.nn.Module, side: int = 512) -> float:
    """Conv multiply-accumulates (G) of one side×side image, counted on a 64² run and scaled (all convs are local)."""
    total = 0

    def hook(m: torch.nn.Module, _i: object, out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(m, torch.nn.Conv2d)
        total += out.numel() * m.weight[0].numel()

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, 64, 64))
    finally:
        for h in hs:
            h.remove()
    return total * (side / 64) ** 2 / 1e9


def file_mb(model: torch.nn.Module) -> float:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", type=Path, required=True)
    ap.add_argument("--work", type=Path, nargs="*", default=[], help="prune_distill work dirs")
    ap.add_argument("--student", type=Path, nargs="*", default=[], help="more student files")
    ap.add_argument("--val-dir", type=Path, default=Path("../shared/photos/val"))
    ap.add_argument("--val", type=int, default=0, help="use the first N val photos (0 = all)")
    ap.add_argument("--ratios", type=str, default="0.25,0.5,0.75")
    ap.add_argument("--prune-now", action="store_true", help="prune untuned points here when no file has them")
    ap.add_argument("--prune-ends", action="store_true",
                    help="--prune-now rows also prune the first conv's outputs / last conv's inputs")
    ap.add_argument("--l1-baseline", action="store_true", help="also untuned points ranked by filter L1 norm")
    ap.add_argument("--train-dir", type=Path, default=Path("../shared/photos/train"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--quality-backend", default="eager", choices=("eager", "onnx"),
                    help="compute the quality outputs in eager torch or with onnxruntime on the exported graph "
                         "(2-3x faster on a CPU, within 1e-5 of eager)")
    ap.add_argument("--cache", type=Path, default=Path("/work/prune_ckpt/cache"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    teacher = load_teacher(a.teacher)
    photos = list_photos(a.val_dir)
    if a.val:
        photos = photos[: a.val]
    xs = [val_photo(p) for p in photos]
    a.cache.mkdir(parents=True, exist_ok=True)
    cache = a.cache / f"{a.teacher.stem}_val{len(xs)}.pt"
    if cache.exists():
        ts = torch.load(cache, weights_only=True)
    else:
        tfn = teacher if a.quality_backend == "eager" else make_runner(teacher, Backend.ONNX, threads=a.threads)
        with torch.inference_mode():
            ts = [tfn(x).float() for x in xs]
        torch.save(ts, cache)
    base = sum(float(((x - t) ** 2).mean()) for x, t in zip(xs, ts, strict=False))
    t_edge = sum(grad_energy(t) for t in ts)
    colour = 1 - sum(float(((affine_colour(x, t) - t) ** 2).mean()) for x, t in zip(xs, ts, strict=False)) / base

    rows: list[tuple[str, PrunableGenerator]] = [("teacher", teacher)]
    ratios = [float(r) for r in a.ratios.split(",")]
    for r in ratios:
        tag = f"{round(r * 100):02d}"
        found = False
        for wd in a.work:
            for kind, label in (("pruned", "no fine-tune"), ("student", "fine-tuned")):
                f = wd / f"{kind}_{tag}.pt"
                if f.exists():
                    rec = torch.load(f, weights_only=True)
                    steps = rec.get("steps", 0)
                    rows.append((f"{r:.2f} {label}" + (f" {steps} st ({wd.name})" if steps else f" ({wd.name})"),
                                 load_student(f)))
                    found = found or kind == "pruned"
        if (a.prune_now and not found) or a.l1_baseline:
            rng = random.Random(0)
            scoring = [random_crops(list_photos(a.train_dir), 256, 1, rng, 320) for _ in range(8)]
            if a.prune_now and not found:
                ends = " ends too" if a.prune_ends else ""
                rows.append((f"{r:.2f} no fine-tune (here{ends})",
                             prune(teacher, r, scoring, multiple=8, keep_ends=not a.prune_ends).eval()))
            if a.l1_baseline:
                rows.append((f"{r:.2f} no fine-tune, L1 ranking", prune(teacher, r, scoring, multiple=8,
                                                                       criterion="l1").eval()))
    for f in a.student:
        rows.append((f.name, load_student(f)))

    print(f"teacher {a.teacher.name}; {len(xs)} val photos from {a.val_dir} (long side 512, /16 crop); "
          f"colour-filter figure (best per-image affine colour map) = {colour:.3f}")
    print(f"torch {torch.__version__} eager, {a.threads} threads, median of {a.repeat}; shared 2-core machine: "
          f"timings are noisy, compare within a run")
    head = (f"{'model':44} {'captured':>8} {'edge':>6} {'ms 512²':>8} {'ms 1024×688':>11} {'GMAC 512²':>9} "
            f"{'params':>9} {'MB':>6}")
    print(head)
    print("-" * len(head))
    for name, m in rows:
        m.eval()
        fn = m if a.quality_backend == "eager" else make_runner(m, Backend.ONNX, threads=a.threads)
        with torch.inference_mode():
            ys = [fn(x).float() for x in xs]
        err = sum(float(((y - t) ** 2).mean()) for y, t in zip(ys, ts, strict=False))
        edge = sum(grad_energy(y) for y in ys) / t_edge
        if a.no_speed:
            s1 = s2 = float("nan")
        else:
            s1, s2 = timed(m, 512, 512, a.repeat), timed(m, 688, 1024, a.repeat)
        params = sum(p.numel() for p in m.parameters())
        print(f"{name:44} {1 - err / base:8.3f} {edge:6.3f} {s1:8.0f} {s2:11.0f} {gmacs(m):9.2f} {params:9d} "
              f"{file_mb(m):6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
