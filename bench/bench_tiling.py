"""Tiling: seamlessness and time overhead against the untiled model, and a zoomed seam crop.

Usage: python bench/bench_tiling.py PHOTO [PHOTO ...] [--size 1536] [--tile 768] [--overlap 32]
                                   [--repeat 3] [--model NAME | --weights W] [--docs docs/]

Each photo is centre-cropped and scaled to size×size and run untiled, then tiled
three ways, with the eager PyTorch backend and with onnxruntime (if installed):

* ``sampled`` — the default plan: norm statistics pooled over a grid of small
  full-resolution crops (``animecli.inference.tiling.plan_tiles``), then the tiles;
* ``exact`` — statistics from a whole-image pass at full size (exact, but that
  pass costs an untiled run);
* ``downscaled/4`` — statistics from the image scaled to a quarter.

Prints one table: per variant, the median time over ``--repeat`` interleaved
rounds on the first photo, its ratio to the untiled run of the same backend, and
the mean absolute difference to the untiled output (in 0–255 levels) averaged
over all photos, with the worst photo. Writes a 4× zoomed crop across a tile
corner (untiled | tiled | |diff|×20) to ``docs/tiling_seam.png``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image, ImageOps

from animecli.inference.backends import OrtRunner, make_runner
from animecli.inference.ort_session import onnxruntime_available
from animecli.inference.tensors import from_model_range, image_to_tensor, tensor_to_image, to_model_range
from animecli.inference.tiling import TilePlan, plan_tiles, tiled_forward
from animecli.options import Backend, ModelChoice
from animecli.weights.resolve import load_generator

Run = Callable[[torch.Tensor], torch.Tensor]  # (3, H, W) uint8 -> (3, H, W) uint8


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("photos", type=Path, nargs="+")
    ap.add_argument("--size", type=int, default=1536)
    ap.add_argument("--tile", type=int, default=768)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch/onnxruntime threads (0 = all cores)")
    ap.add_argument("--model", default=None, help="shipped model name (default: the default model)")
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--docs", type=Path, default=Path("docs"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_generator(ModelChoice(name=args.model, weights=args.weights))
    model = loaded.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    mult = loaded.input_multiple
    cpu = torch.device("cpu")
    sampled = plan_tiles(args.size, args.size, 2**40, 256, mult, args.overlap, tile=args.tile)
    plans = {
        "sampled": sampled,
        "exact": TilePlan(sampled.tile, sampled.overlap, args.size),
        "downscaled/4": TilePlan(sampled.tile, sampled.overlap, args.size // 4),
    }

    def eager_untiled(t: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = to_model_range(t.unsqueeze(0), torch.float32).contiguous(memory_format=torch.channels_last)
            return from_model_range(model(x))[0]

    runs: dict[str, Run] = {"eager untiled": eager_untiled}
    for label, plan in plans.items():
        runs[f"eager tiled, {label}"] = (
            lambda t, p=plan: tiled_forward(model, model, t, p, mult, torch.float32, cpu))
    ort_note = "onnxruntime not installed: onnx rows skipped"
    if onnxruntime_available():
        runner = make_runner(model, Backend.ONNX, threads=args.threads, digest=loaded.sha256 or None,
                             arch_key=loaded.spec.key)
        assert isinstance(runner, OrtRunner)
        ort_runner = runner

        def onnx_untiled(t: torch.Tensor) -> torch.Tensor:
            x = to_model_range(t.unsqueeze(0), torch.float32)
            return from_model_range(ort_runner(x))[0]

        runs["onnx untiled"] = onnx_untiled
        for label, plan in plans.items():
            runs[f"onnx tiled, {label}"] = (
                lambda t, p=plan: tiled_forward(model, model, t, p, mult, torch.float32, cpu,
                                                fixed_forward=ort_runner.run_fixed))
        ort_note = "onnx rows: untiled in onnxruntime; tiled = statistics pass in eager PyTorch, tiles in " \
                   "onnxruntime's fixed-statistics graph"

    images = []
    for photo in args.photos:
        with Image.open(photo) as im:
            img = ImageOps.fit(ImageOps.exif_transpose(im).convert("RGB"), (args.size, args.size),
                               Image.Resampling.LANCZOS)
        images.append(image_to_tensor(img))

    # Warm-up (export, arena growth), then interleaved timing rounds on the first photo.
    for run in runs.values():
        run(images[0])
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeat):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run(images[0])
            times[name].append((time.perf_counter() - t0) * 1000)
    # Differences on every photo, against the untiled output of the same backend.
    diffs: dict[str, list[float]] = {k: [] for k in runs}
    outputs: dict[str, torch.Tensor] = {}
    for i, t in enumerate(images):
        refs = {"eager": eager_untiled(t)}
        if "onnx untiled" in runs:
            refs["onnx"] = runs["onnx untiled"](t)
        for name, run in runs.items():
            out = run(t) if "untiled" not in name else refs[name.split()[0]]
            diffs[name].append(float((out.float() - refs[name.split()[0]].float()).abs().mean()))
            if i == 0:
                outputs[name] = out

    print(f"model {loaded.name} ({loaded.spec.arch.value}), {len(images)} photo(s) at {args.size}×{args.size}, "
          f"tile {sampled.tile}, overlap {sampled.overlap}, sampled statistics: {sampled.samples}×{sampled.samples} "
          f"crops of {sampled.sample_side}+2×{sampled.sample_margin} px, {torch.get_num_threads()} threads, CPU")
    print(ort_note)
    print()
    print("| variant | ms (median) | × untiled, same backend | MAE vs untiled (/255), mean | worst photo |")
    print("|---|---:|---:|---:|---:|")
    for name in runs:
        backend = name.split()[0]
        base = statistics.median(times[f"{backend} untiled"])
        ms = statistics.median(times[name])
        print(f"| {name} | {ms:.0f} | {ms / base:.2f}× | {statistics.mean(diffs[name]):.3f} | {max(diffs[name]):.3f} |")

    # Zoomed crop centred on the first tile corner (sampled statistics, eager).
    ref, tiled = outputs["eager untiled"], outputs["eager tiled, sampled"]
    c, half, zoom = sampled.tile, 48, 4
    crops = [tensor_to_image(v[:, c - half : c + half, c - half : c + half].contiguous()) for v in (ref, tiled)]
    d = ((tiled.float() - ref.float()).abs() * 20).clamp(0, 255).to(torch.uint8)
    crops.append(tensor_to_image(d[:, c - half : c + half, c - half : c + half].contiguous()))
    sheet = Image.new("RGB", (3 * 2 * half * zoom + 20, 2 * half * zoom), "white")
    for i, crop in enumerate(crops):
        sheet.paste(crop.resize((2 * half * zoom,) * 2, Image.Resampling.NEAREST), (i * (2 * half * zoom + 10), 0))
    args.docs.mkdir(parents=True, exist_ok=True)
    sheet.save(args.docs / "tiling_seam.png")
    print(f"\nseam crop: {args.docs / 'tiling_seam.png'} (untiled | tiled with sampled statistics | |diff|×20, "
          "a tile corner at the centre)")


if __name__ == "__main__":
    main()
