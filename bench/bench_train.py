"""Seconds per distillation step, per student architecture and precision, side by side.

Usage: python bench/bench_train.py [--arch lite3 --arch v2] [--batch 4] [--crop 256] [--steps 3]
       [--device auto] [--precision fp32 --precision bf16]

One step is what ``animecli distill`` does per step (forward, L1 + SSIM + Sobel loss,
backward, AdamW), on random crops, so no teacher or photos are needed. Rows are
interleaved step by step, so a busy machine slows them alike; the figure is the median
after one warm-up step. Tells how long a recipe takes on this machine before starting it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from animecli.inference.device import resolve_device
from animecli.models.registry import build_generator
from animecli.models.spec import Arch, ArchSpec
from animecli.options import Precision
from animecli.training.distill import training_precision
from animecli.training.losses import distill_loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", action="append", default=[], choices=[a.value for a in Arch])
    ap.add_argument("--precision", action="append", default=[], choices=["fp32", "bf16"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    archs = [Arch(a) for a in args.arch] or [Arch.LITE3, Arch.V2]
    precisions = [Precision(p) for p in args.precision] or [Precision.FP32, Precision.BF16]
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(args.batch, 3, args.crop, args.crop, generator=gen) * 2 - 1).to(device)
    y = (torch.rand(args.batch, 3, args.crop, args.crop, generator=gen) * 2 - 1).to(device)
    x = x.contiguous(memory_format=torch.channels_last)
    rows = []
    for arch in archs:
        for precision in precisions:
            torch.manual_seed(0)
            model = build_generator(ArchSpec(arch)).train().to(device)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            rows.append((arch, precision, model, opt, training_precision(precision, device), []))
    for step in range(args.steps + 1):  # step 0 warms up
        for _arch, _p, model, opt, bf16, times in rows:
            t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out = model(x)
            loss, _parts = distill_loss(out.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if step > 0:
                times.append(time.perf_counter() - t0)
    print(f"batch {args.batch} × {args.crop}², device {device}, {torch.get_num_threads()} threads, "
          f"median of {args.steps} steps after a warm-up one")
    print("| student | precision | s/step | × fp32 |")
    print("|---|---|---:|---:|")
    fp32 = {arch: statistics.median(times) for arch, precision, *_rest, times in rows if precision is Precision.FP32}
    for arch, precision, _m, _o, _b, times in rows:
        s = statistics.median(times)
        ratio = f"{fp32[arch] / s:.2f}×" if arch in fp32 else "–"
        print(f"| {arch.value} | {precision.value} | {s:.2f} | {ratio} |")


if __name__ == "__main__":
    main()
