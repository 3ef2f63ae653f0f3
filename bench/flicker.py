"""Flicker of per-frame conversion vs ``--temporal`` (norm statistics carried across frames).

Usage:
    python bench/flicker.py --photos ../shared/photos/val --size 320x240 --frames 16 --model hayao

Clips are made in memory from real photos (no codec in the way): for each of ``--clips``
groups of three photos, a pan across the first (the crop window slides), a zoom into the
second (the window shrinks), then a cut to a pan across the third. Every clip runs through
the same engine (``--backend``: onnxruntime, whose video graph carries the statistics, or
eager PyTorch) per frame and with the statistics carried (one row per ``--momentum``).

Columns:
    flicker: Σ mean|out_t − out_{t−1}| / Σ mean|in_t − in_{t−1}| over consecutive frames of
        one shot (the cut's pair left out); 1.0 = the output changes as much as the input.
    vs per-frame: flicker relative to per-frame conversion.
    captured: 1 − ΣMSE(out, ref) / ΣMSE(photo, ref), with the per-frame output as the reference:
        how much of the per-frame look each frame keeps (per-frame itself is 1 by definition).
    vs teacher (with ``--teacher``): the same with the teacher run on each frame as the reference,
        the look measure of the shipped styles (the issue asks for a drop of at most 0.01).
    cuts found: frames the detector took as the start of a shot (the clip has 2 per group + 1).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from animecli.inference.temporal import CutDetector, TemporalRunner
from animecli.inference.torch_engine import Engine
from animecli.options import Backend, EngineOptions, ModelChoice
from animecli.weights.resolve import load_generator


def _crop(img: Image.Image, box: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    return np.asarray(img.resize(size, Image.Resampling.LANCZOS, box=box), dtype=np.uint8).copy()


def make_clip(photos: list[Path], size: tuple[int, int], n: int) -> tuple[list[np.ndarray], list[int]]:
    """Frames of pan (photo 0), zoom (photo 1), cut to pan (photo 2); and each shot's first frame index."""
    w, h = size
    frames: list[np.ndarray] = []
    starts: list[int] = []
    for k, path in enumerate(photos):
        img = Image.open(path).convert("RGB")
        iw, ih = img.size
        # The largest window of the frame's aspect that leaves room to move.
        cw = min(iw * 0.8, ih * 0.8 * w / h)
        ch = cw * h / w
        starts.append(len(frames))
        for i in range(n):
            t = i / max(1, n - 1)
            if k == 1:  # zoom: the window shrinks to 60 % about the centre
                s = 1.0 - 0.4 * t
                zw, zh = cw * s, ch * s
                x0, y0 = (iw - zw) / 2, (ih - zh) / 2
                box = (x0, y0, x0 + zw, y0 + zh)
            else:  # pan: left to right (and a little down)
                x0 = t * (iw - cw)
                y0 = t * (ih - ch) * 0.3
                box = (x0, y0, x0 + cw, y0 + ch)
            frames.append(_crop(img, box, size))
    return frames, starts


def measure(outs: list[np.ndarray], frames: list[np.ndarray], starts: list[int]) -> float:
    cut = set(starts)
    num = den = 0.0
    for t in range(1, len(frames)):
        if t in cut:
            continue
        num += float(np.abs(outs[t].astype(np.int16) - outs[t - 1]).mean())
        den += float(np.abs(frames[t].astype(np.int16) - frames[t - 1]).mean())
    return num / den


def captured(outs: list[np.ndarray], refs: list[np.ndarray], frames: list[np.ndarray]) -> float:
    err = sum(float(((o.astype(np.float64) - r) ** 2).mean()) for o, r in zip(outs, refs, strict=True))
    base = sum(float(((f.astype(np.float64) - r) ** 2).mean()) for f, r in zip(frames, refs, strict=True))
    return 1.0 - err / base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, default=Path(__file__).resolve().parents[2] / "shared/photos/val")
    ap.add_argument("--size", default="320x240", help="frame size WxH")
    ap.add_argument("--frames", type=int, default=16, help="frames per shot")
    ap.add_argument("--clips", type=int, default=2, help="groups of three photos")
    ap.add_argument("--model", default=None, help="model name (default: the shipped default)")
    ap.add_argument("--momentum", type=float, nargs="+", default=[0.5, 0.8, 0.9])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--backend", default="onnx", choices=["onnx", "eager"],
                    help="onnx: the video graph carries the statistics; eager: the modules' hooks")
    ap.add_argument("--teacher", type=Path, default=None,
                    help="the style's teacher (an AnimeGAN .onnx file): adds 'vs teacher', the captured "
                         "look per frame against the teacher run on each frame")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    # Photos spread over the folder, so the clips differ.
    step = max(1, len(photos) // (3 * args.clips))
    picked = photos[::step][: 3 * args.clips]
    loaded = load_generator(ModelChoice(args.model))
    engine = Engine(loaded.model, loaded.input_multiple, EngineOptions(device="cpu", backend=Backend(args.backend),
                                                                        threads=args.threads),
                    loaded.spec.arch.value, weights_sha256=loaded.sha256)
    teacher = None
    if args.teacher is not None:
        t = load_generator(ModelChoice(weights=args.teacher))
        teacher = Engine(t.model, t.input_multiple, EngineOptions(device="cpu", backend=Backend.ONNX,
                                                                  threads=args.threads),
                         t.spec.arch.value, weights_sha256=t.sha256)
    looks: dict[str, list[float]] = {}
    rows: dict[str, list[float]] = {}
    cuts_found = {}
    t_per = t_tmp = 0.0
    for c in range(args.clips):
        frames, starts = make_clip(picked[3 * c : 3 * c + 3], (w, h), args.frames)
        det = CutDetector()
        cuts_found[c] = (sum(det.is_cut(f) for f in frames), len(starts))
        t0 = time.perf_counter()
        refs = [engine.run_batch([f]).images[0] for f in frames]
        t_per += time.perf_counter() - t0
        assert all(r is not None for r in refs)
        per = [r for r in refs if r is not None]
        rows.setdefault("per-frame", []).extend([measure(per, frames, starts), 1.0])
        teach: list[np.ndarray] = []
        if teacher is not None:
            teach = [o for o in (teacher.run_batch([f]).images[0] for f in frames) if o is not None]
            looks.setdefault("per-frame", []).append(captured(per, teach, frames))
        for m in args.momentum:
            t0 = time.perf_counter()
            with TemporalRunner(engine, m) as tr:
                outs = [tr.run_batch([f]).images[0] for f in frames]
            t_tmp += time.perf_counter() - t0
            got = [o for o in outs if o is not None]
            rows.setdefault(f"temporal {m:g}", []).extend([measure(got, frames, starts), captured(got, per, frames)])
            if teach:
                looks.setdefault(f"temporal {m:g}", []).append(captured(got, teach, frames))
    print(f"model {loaded.name}, {args.clips} clips × 3 shots × {args.frames} frames at {w}×{h} "
          f"(photos: {', '.join(p.name for p in picked)})")
    print(f"cuts found / shots: {', '.join(f'{a}/{b}' for a, b in cuts_found.values())}")
    base = np.mean(rows["per-frame"][0::2])
    extra = f"{'vs teacher':>12}" if looks else ""
    print(f"{'mode':<16}{'flicker':>9}{'vs per-frame':>14}{'captured':>10}{extra}")
    for name, vals in rows.items():
        fl, cap = float(np.mean(vals[0::2])), float(np.mean(vals[1::2]))
        look = f"{np.mean(looks[name]):>12.4f}" if looks else ""
        print(f"{name:<16}{fl:>9.4f}{fl / base:>14.3f}{cap:>10.4f}{look}")
    n = args.clips * 3 * args.frames
    print(f"ms/frame: per-frame {1000 * t_per / n:.0f}, temporal {1000 * t_tmp / n / len(args.momentum):.0f} "
          f"({args.backend})")


if __name__ == "__main__":
    main()
