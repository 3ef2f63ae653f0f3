"""A candidate student against the shipped one and their teacher, side by side in one run (issue 26).

Every row is loaded the way a user's run loads it (:func:`animecli.weights.resolve.load_generator`:
the teacher through ``convert --weights FILE.onnx``'s import onto our module, the students from
their state dicts) and timed through animecli's own default CPU path (``--backend auto``, which is
onnxruntime on the exported graph when it is installed), the same backend for every row.

* captured = 1 − ΣMSE(student, teacher) / ΣMSE(photo, teacher) over the photos;
* colour = that figure for the best per-image affine colour map photo → teacher;
* edge = mean Sobel gradient magnitude of the student / of the teacher;
  quality in float32 (``--quality-backend``: auto, the onnxruntime graphs a user's run uses, staged for
  AnimeGANv3; eager, the modules) on ``--val-dir`` photos, long side 512, centre-cropped to a multiple of 16
  (``bench/prune_pareto.py``'s measure);
* model-only ms at 512² and 1024×688: median of ``--repeat`` interleaved rounds after a warm-up.

Usage:
    PYTHONPATH=. python bench/ship_compare.py --teacher ../shared/teachers/animeganv3_cute.onnx \
        --weights weights/cute_v3p25.pt --weights weights/cute_lite3.pt
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from animecli.inference.backends import make_runner, resolve_backend
from animecli.models.registry import count_macs
from animecli.options import Backend, ModelChoice
from animecli.training.prune_distill import list_photos
from animecli.weights.resolve import LoadedModel, load_generator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prune_pareto import affine_colour, grad_energy, val_photo


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", type=Path, required=True)
    ap.add_argument("--weights", type=Path, action="append", default=[], help="a student file (repeatable)")
    ap.add_argument("--model", action="append", default=[], help="a manifest model, as `-m NAME` runs it (repeatable)")
    ap.add_argument("--quality-backend", default="auto",
                    help="backend the quality outputs are computed with (auto: onnx on the CPU, 2-3x faster than "
                         "eager and within 1e-5 of it; eager: the modules themselves)")
    ap.add_argument("--val-dir", type=Path, default=Path("../shared/photos/val"))
    ap.add_argument("--val", type=int, default=0, help="the first N photos (0 = all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--cache", type=Path, default=None, help="teacher outputs cache file (.pt)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows: list[tuple[str, LoadedModel]] = [("teacher " + a.teacher.name,
                                            load_generator(ModelChoice(weights=a.teacher)))]
    rows += [(w.name, load_generator(ModelChoice(weights=w))) for w in a.weights]
    rows += [(f"-m {n}", load_generator(ModelChoice(n))) for n in a.model]
    photos = list_photos(a.val_dir)[: a.val or None]
    xs = [val_photo(p) for p in photos]
    choice = resolve_backend(Backend.AUTO, torch.device("cpu"), torch.float32)
    runners = {n: make_runner(lm.model.eval(), choice.backend, threads=a.threads, digest=lm.sha256,
                              arch_key=lm.spec.key, multiple=lm.input_multiple) for n, lm in rows}

    def outputs(name: str, lm: LoadedModel) -> list[torch.Tensor]:
        fn = lm.model.eval() if a.quality_backend == "eager" else runners[name]
        with torch.inference_mode():
            return [fn(x).float() for x in xs]

    if a.cache is not None and a.cache.is_file():
        ts = torch.load(a.cache, weights_only=True)
        assert len(ts) == len(xs) and all(t.shape == x.shape for t, x in zip(ts, xs, strict=True)), "stale cache"
    else:
        ts = outputs(*rows[0])
        if a.cache is not None:
            torch.save(ts, a.cache)
    base = sum(float(((x - t) ** 2).mean()) for x, t in zip(xs, ts, strict=True))
    t_edge = sum(grad_energy(t) for t in ts)
    colour = 1 - sum(float(((affine_colour(x, t) - t) ** 2).mean()) for x, t in zip(xs, ts, strict=True)) / base
    quality = {}
    for name, lm in rows[1:]:
        ys = outputs(name, lm)
        err = sum(float(((y - t) ** 2).mean()) for y, t in zip(ys, ts, strict=True))
        quality[name] = (1 - err / base, sum(grad_energy(y) for y in ys) / t_edge)
    quality[rows[0][0]] = (1.0, 1.0)

    times: dict[str, dict[tuple[int, int], list[float]]] = {n: {} for n, _ in rows}
    sizes = ((512, 512), (688, 1024))
    if not a.no_speed:
        for hw in sizes:
            x = torch.zeros(1, 3, *hw).uniform_(-1, 1)
            for r in runners.values():
                r(x)  # warm-up (and the first run's export/session)
            for _ in range(a.repeat):  # interleaved, so that load from other jobs hits every row alike
                for n, r in runners.items():
                    t0 = time.perf_counter()
                    r(x)
                    times[n].setdefault(hw, []).append((time.perf_counter() - t0) * 1000)

    print(f"teacher {a.teacher.name}; {len(xs)} photos from {a.val_dir} (long side 512, /16 centre crop; "
          f"quality outputs with {a.quality_backend}); "
          f"colour filter reaches {colour:.3f}")
    print(f"backend {choice.backend.value} ({choice.reason}); {a.threads} threads; median of {a.repeat} interleaved; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    head = (f"{'model':34} {'arch':16} {'captured':>8} {'edge':>6} {'ms 512²':>8} {'× teacher':>9} "
            f"{'ms 1024×688':>11} {'× teacher':>9} {'GMAC 512²':>9} {'MB':>5}")
    print(head)
    print("-" * len(head))
    t_name = rows[0][0]
    for name, lm in rows:
        cap, edge = quality[name]
        cells = []
        for hw in sizes:
            if a.no_speed:
                cells += [float("nan"), float("nan")]
                continue
            ms = statistics.median(times[name][hw])
            cells += [ms, statistics.median(times[t_name][hw]) / ms]
        mb = lm.path.stat().st_size / 1e6
        print(f"{name:34} {lm.spec.arch.value:16} {cap:8.3f} {edge:6.3f} {cells[0]:8.0f} {cells[1]:9.2f} "
              f"{cells[2]:11.0f} {cells[3]:9.2f} {count_macs(lm.model, 512, 512) / 1e9:9.2f} {mb:5.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
