"""Fast normalisation vs ``nn.GroupNorm``: the v2 generator, one image, side by side.

Usage: python bench/bench_norm.py [--size 512] [--repeats 5] [--device cpu|cuda]

Both variants hold the same weights; runs alternate so that machine load
affects both alike. Prints a table of median milliseconds and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from animecli.models.registry import build_generator
from animecli.models.spec import Arch, ArchSpec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--arch", default="v2", choices=["v2", "lite"])
    args = ap.parse_args()
    dev = torch.device(args.device)
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    torch.manual_seed(0)
    stock = build_generator(ArchSpec(Arch(args.arch), fast_norm=False))
    fast = build_generator(ArchSpec(Arch(args.arch), fast_norm=True))
    fast.load_state_dict(stock.state_dict())
    x = (torch.rand(1, 3, args.size, args.size) * 2 - 1).to(dev, dtype)
    rows = []
    for label, cl in (("contiguous", False), ("channels-last", True)):
        models = {}
        for name, m in (("nn.GroupNorm", stock), ("FastGroupNorm", fast)):
            m = m.to(dev, dtype)
            if cl:
                m = m.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            models[name] = m
        xx = x.contiguous(memory_format=torch.channels_last) if cl else x.contiguous()
        times: dict[str, list[float]] = {n: [] for n in models}
        with torch.inference_mode():
            outs = {n: m(xx) for n, m in models.items()}  # warm-up
            diff = float((outs["nn.GroupNorm"].float() - outs["FastGroupNorm"].float()).abs().max())
            for _ in range(args.repeats):
                for n, m in models.items():
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    m(xx)
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    times[n].append((time.perf_counter() - t0) * 1000)
        a, b = statistics.median(times["nn.GroupNorm"]), statistics.median(times["FastGroupNorm"])
        rows.append((label, a, b, a / b, diff))
    print(f"{args.arch} generator, 1×3×{args.size}×{args.size}, {dev} {str(dtype)[6:]}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'layout':<14} {'nn.GroupNorm ms':>16} {'FastGroupNorm ms':>17} {'speed-up':>9} {'max |diff|':>11}")
    for label, a, b, r, d in rows:
        print(f"{label:<14} {a:>16.1f} {b:>17.1f} {r:>8.2f}× {d:>11.2e}")


if __name__ == "__main__":
    main()
