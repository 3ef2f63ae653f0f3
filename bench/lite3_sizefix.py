"""The next step for ``lite3``: the decoder's first upsampling sized from the input, not the stem.

Usage: python bench/lite3_sizefix.py [--repeat 5]

Same measurement as ``bench/lite3_variants.py`` (onnxruntime, 2 threads, random weights:
memory rise of one 1024×684 image, median 512² time), with ``GeneratorLite.forward``
replaced in this process by one that takes the half-resolution size from the input
(``H/2 × W/2``, exact for the multiples of 4 the converter feeds) instead of from the
stem's output tensor, so the exported graph no longer needs the stem's map to read its
shape. Same function, same weights. Not in the shipped models yet.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lite3_variants as variants

from animecli.models.lite import GeneratorLite


def forward_sized_from_input(self: GeneratorLite, x: torch.Tensor) -> torch.Tensor:
    s = self.stem(x)
    out = self.body(self.down(s))
    out = F.interpolate(out, size=(x.shape[-2] // 2, x.shape[-1] // 2), mode="bilinear", align_corners=False)
    out = self.up1(out)
    if self.reduce is not None:
        out = self.reduce(out)
    out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
    out = self.up2(out)
    return torch.tanh(self.head(out) + self.skip(x))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print("| norms dropped | upsampling sized from | memory rise 1024×684 | ms at 512² |")
    print("|---|---|---:|---:|")
    original = GeneratorLite.forward
    for label, names in variants.VARIANTS.items():
        for how, fwd in (("stem output", original), ("input", forward_sized_from_input)):
            GeneratorLite.forward = fwd  # type: ignore[method-assign]
            rise, ms = variants._measure(names, args.repeat)
            print(f"| {label} | {how} | {rise:.0f} MB | {ms:.0f} |")
    GeneratorLite.forward = original  # type: ignore[method-assign]


if __name__ == "__main__":
    main()
