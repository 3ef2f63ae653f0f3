"""Which whole-image norms ``lite3`` drops: memory and speed of lite2 variants in onnxruntime.

Usage: python bench/lite3_variants.py [--repeat 5]

Each variant is the ``lite2`` network (seeded random weights) with some of its
``(conv, norm)`` layers turned into conv (with bias) → LeakyReLU, exported as the
converter exports it and run by onnxruntime (2 threads, the converter's session
options) in its own child process: the rise of peak RSS over the loaded session for one
1024×684 image, and the median time of a 512² image. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import statistics
import time
from pathlib import Path

import torch
from torch import nn

VARIANTS = {
    "none (lite2)": (),
    "all 8 outside the 1/4-resolution layers": ("stem.0", "stem.1", "stem.2", "up1.0", "up1.1", "reduce", "up2.0",
                                                "up2.1"),
    "the 3 at full resolution": ("stem.0", "up2.0", "up2.1"),
    "first conv + decoder (6) = lite3": ("stem.0", "up1.0", "up1.1", "reduce", "up2.0", "up2.1"),
}


def _hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return 0.0


def _strip(model: nn.Module, names: tuple[str, ...]) -> nn.Module:
    model = copy.deepcopy(model)
    for name in names:
        layer = model.get_submodule(name)
        conv = layer[1]
        biased = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                           groups=conv.groups, bias=True)
        biased.weight.data.copy_(conv.weight.data)
        layer[1], layer[2] = biased, nn.Identity()
    return model


def _measure(names: tuple[str, ...], repeat: int) -> tuple[float, float]:
    from animecli.inference.backends import OrtRunner
    from animecli.inference.backends.onnx_export import export_onnx
    from animecli.models.registry import build_generator
    from animecli.models.spec import Arch, ArchSpec
    from animecli.options import Backend

    torch.manual_seed(0)
    model = _strip(build_generator(ArchSpec(Arch.LITE2)).eval(), names)
    runner = OrtRunner(export_onnx(model), Backend.ONNX, threads=2)
    big = torch.rand(1, 3, 684, 1024) * 2 - 1
    small = torch.rand(1, 3, 512, 512) * 2 - 1
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak: export ran the model in PyTorch
    base = _hwm_mb()
    runner(big)
    rise = _hwm_mb() - base
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        runner(small)
        times.append((time.perf_counter() - t0) * 1000)
    return rise, statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    ctx = multiprocessing.get_context("spawn")
    print("| norms dropped | memory rise 1024×684 | ms at 512² |")
    print("|---|---:|---:|")
    for label, names in VARIANTS.items():
        with ctx.Pool(1) as pool:
            rise, ms = pool.apply(_measure, (names, args.repeat))
        print(f"| {label} | {rise:.0f} MB | {ms:.0f} |")


if __name__ == "__main__":
    main()
