"""Imported AnimeGAN ONNX generators vs onnxruntime on the files: PSNR on real photos, and model-only speed.

Usage: PYTHONPATH=. python bench/onnx_import.py [--photos N] [--threads 2] [--teachers DIR] [--photo-dir DIR]

Prints one table: for each file and size, the mean PSNR (over N centre-cropped
photos) of our module against onnxruntime on the file; for the 8-bit v2 file
also against the file's float graph (activation Quantize/Dequantize removed).
Then the median time of one 512² image (model only; a noisy shared machine).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from PIL import Image

from animecli.weights.onnx_import import Layout, import_onnx, psnr, run_onnxruntime

ROOT = Path(__file__).resolve().parents[1]


def photo(path: Path, h: int, w: int) -> torch.Tensor:
    """Centre crop of ``path`` resized to cover (h, w): (1, 3, h, w) in [-1, 1]."""
    img = Image.open(path).convert("RGB")
    scale = max(h / img.height, w / img.width)
    img = img.resize((max(w, round(img.width * scale)), max(h, round(img.height * scale))), Image.Resampling.BICUBIC)
    left, top = (img.width - w) // 2, (img.height - h) // 2
    arr = np.asarray(img.crop((left, top, left + w, top + h)), np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0) / 127.5 - 1.0


def timed(fn: object, repeat: int = 5) -> float:
    assert callable(fn)
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teachers", type=Path, default=ROOT.parent / "shared" / "teachers")
    ap.add_argument("--photo-dir", type=Path, default=ROOT.parent / "shared" / "photos" / "val")
    ap.add_argument("--photos", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-speed", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    photos = sorted(args.photo_dir.glob("*.jpg"))[: args.photos]
    print(f"{'file':28} {'arch':16} {'size':>8} {'vs ORT on file':>15} {'vs float graph':>15}")
    speed: list[tuple[str, float, float]] = []
    for path in sorted(args.teachers.glob("*.onnx")):
        g = import_onnx(path)
        sizes = [g.fixed_size] if g.fixed_size else [(512, 512), (512, 768)]
        for h, w in sizes:
            on_file, on_float = [], []
            for p in photos:
                x = photo(p, h, w)
                with torch.inference_mode():
                    ours = g.module(x)
                on_file.append(psnr(ours, run_onnxruntime(path, x, g.layout, args.threads)))
                if g.quantized:
                    on_float.append(psnr(ours, run_onnxruntime(path, x, g.layout, args.threads, True)))
            flt = f"{statistics.mean(on_float):15.1f}" if on_float else f"{'-':>15}"
            print(f"{path.name:28} {g.arch.value:16} {f'{h}x{w}':>8} {statistics.mean(on_file):15.1f} {flt}")
        if not args.no_speed:
            h, w = g.fixed_size or (512, 512)
            x = photo(photos[0], h, w)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = args.threads, 1, 3
            sess = ort.InferenceSession(onnx.load(str(path)).SerializeToString(), opts,
                                        providers=["CPUExecutionProvider"])
            feed = {g.input_name: np.ascontiguousarray(
                x.numpy().transpose(0, 2, 3, 1) if g.layout is Layout.NHWC else x.numpy())}
            t_ort = timed(lambda s=sess, f=feed: s.run(None, f))
            with torch.inference_mode():
                t_ours = timed(lambda m=g.module, t=x: m(t))
            speed.append((f"{path.name} {h}x{w}", t_ort, t_ours))
    if speed:
        print(f"\nmodel only, one image, {args.threads} threads, median of 5 (shared machine: noisy)")
        print(f"{'file':40} {'ORT on file ms':>15} {'ours eager ms':>14} {'ratio':>6}")
        for name, a, b in speed:
            print(f"{name:40} {a:15.0f} {b:14.0f} {a / b:6.2f}")


if __name__ == "__main__":
    main()
