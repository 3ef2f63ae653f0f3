"""Tiling: seamlessness and time overhead against the untiled model, and a zoomed seam crop.

Usage: python bench/bench_tiling.py PHOTO [--size 1536] [--tile 768] [--weights W] [--docs docs/]

Runs the default model (or --weights) on PHOTO scaled to size×size: once
untiled, then tiled with the statistics pass at several sizes. Prints a table
of milliseconds, time ratio and difference to the untiled output, and writes
a 4× zoomed crop across a tile border (untiled | tiled | |diff|×20) to docs/.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from PIL import Image, ImageOps

from animecli.config import ModelChoice
from animecli.tiling import TilePlan, tiled_forward
from animecli.transforms import from_model_range, image_to_tensor, tensor_to_image, to_model_range
from animecli.weights import load_generator


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("photo", type=Path)
    ap.add_argument("--size", type=int, default=1536)
    ap.add_argument("--tile", type=int, default=768)
    ap.add_argument("--overlap", type=int, default=48)
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--docs", type=Path, default=Path("docs"))
    args = ap.parse_args()
    loaded = load_generator(ModelChoice(weights=args.weights))
    model = loaded.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    with Image.open(args.photo) as im:
        img = ImageOps.fit(im.convert("RGB"), (args.size, args.size), Image.Resampling.LANCZOS)
    t = image_to_tensor(img)
    cpu = torch.device("cpu")
    with torch.inference_mode():
        x = to_model_range(t.unsqueeze(0), torch.float32).contiguous(memory_format=torch.channels_last)
        t0 = time.perf_counter()
        ref = from_model_range(model(x))[0]
        base_ms = (time.perf_counter() - t0) * 1000
        del x
    print(f"model {loaded.name} ({loaded.spec.arch.value}), {args.size}×{args.size}, tile {args.tile}, "
          f"overlap {args.overlap}, {torch.get_num_threads()} threads, CPU")
    print(f"{'variant':<28} {'ms':>9} {'time ratio':>11} {'MAE (/255)':>11} {'max diff':>9}")
    print(f"{'untiled':<28} {base_ms:>9.0f} {1.0:>10.2f}× {0.0:>11.3f} {0:>9}")
    tiled_full = ref
    for stats_side in (args.size, args.size // 2, args.size // 4):
        plan = TilePlan(args.tile, args.overlap, stats_side)
        t0 = time.perf_counter()
        out = tiled_forward(model, model, t, plan, loaded.input_multiple, torch.float32, cpu)
        ms = (time.perf_counter() - t0) * 1000
        diff = (out.float() - ref.float()).abs()
        label = f"tiled, stats at {stats_side}px"
        print(f"{label:<28} {ms:>9.0f} {ms / base_ms:>10.2f}× {float(diff.mean()):>11.3f} {int(diff.max()):>9}")
        if stats_side == args.size:
            tiled_full = out
    # Zoomed crop centred on the first tile corner.
    c, half = args.tile, 48
    crops = [tensor_to_image(v[:, c - half : c + half, c - half : c + half].contiguous()) for v in (ref, tiled_full)]
    d = ((tiled_full.float() - ref.float()).abs() * 20).clamp(0, 255).to(torch.uint8)
    crops.append(tensor_to_image(d[:, c - half : c + half, c - half : c + half].contiguous()))
    zoom = 4
    sheet = Image.new("RGB", (3 * 2 * half * zoom + 20, 2 * half * zoom), "white")
    for i, crop in enumerate(crops):
        sheet.paste(crop.resize((2 * half * zoom,) * 2, Image.Resampling.NEAREST), (i * (2 * half * zoom + 10), 0))
    args.docs.mkdir(parents=True, exist_ok=True)
    sheet.save(args.docs / "tiling_seam.png")
    print(f"seam crop: {args.docs / 'tiling_seam.png'} (untiled | tiled | |diff|×20, tile corner at the centre)")


if __name__ == "__main__":
    main()
