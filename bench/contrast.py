"""How much does each generator's output depend on the input photo's global contrast?

Usage:
    python bench/contrast.py --photos ../shared/photos/val --size 512 --count 13 \
        --teacher ../shared/teachers/animeganv3_hayao_512.onnx \
        --model hayao --weights runs/v2_hayao3/student.pt

Every photo (short side scaled to ``--size``, centre-cropped, as ``animecli eval`` does) is run
twice through each generator: as it is (``x`` in [-1, 1]) and with its contrast scaled about
mid-grey (``--factor``·x, default 0.5). The table gives the mean PSNR between the two outputs:
a high figure means the output barely depends on the contrast, and 100 dB or more means it
does not depend on it at all. For each student it also gives the PSNR against the teacher,
plain and after the best per-channel gain and offset of the student's output (a least-squares
fit per photo), which shows how much of the gap is global colour and contrast.

Why it matters: the ``v2`` generator (AnimeGANv2) has no bias in the convolution in front of
each whole-image normalisation (``GroupNorm`` with one group), so scaling its input scales
every pre-norm activation of its first layer alike and the norm divides it out: ``v2`` cannot
see the input's contrast. A teacher whose output changes with the contrast cannot be matched
by a ``v2`` student beyond what the photo's content tells about its contrast.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import torch

from animecli.options import ModelChoice
from animecli.training.evaluate import square
from animecli.training.teachers import OnnxTeacher
from animecli.weights.resolve import load_generator

Generator = Callable[[torch.Tensor], torch.Tensor]


def unit(x: torch.Tensor) -> torch.Tensor:
    """(3, H, W) uint8 → float in [-1, 1]."""
    return x.float() / 127.5 - 1.0


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two tensors in [-1, 1] (peak-to-peak 2)."""
    mse = float(((a - b) ** 2).mean())
    return 10.0 * math.log10(4.0 / mse) if mse > 0 else math.inf


def gain_offset_fit(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``s`` (3, H, W) with the per-channel gain and offset that bring it closest to ``y`` (least squares)."""
    out = torch.empty_like(s)
    for c in range(s.shape[0]):
        a, b = s[c].flatten().double(), y[c].flatten().double()
        design = torch.stack([a, torch.ones_like(a)], 1)
        gain, offset = torch.linalg.lstsq(design, b[:, None]).solution[:, 0]
        out[c] = (s[c].double() * gain + offset).float()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--teacher", type=Path, required=True)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--count", type=int, default=13, help="every k-th photo so that this many are used")
    ap.add_argument("--factor", type=float, default=0.5)
    ap.add_argument("--model", action="append", default=[], help="a model name (repeatable)")
    ap.add_argument("--weights", action="append", type=Path, default=[], help="a student .pt (repeatable)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    teacher = OnnxTeacher(args.teacher, args.threads)
    teacher.check_size(args.size, "--size")
    students: dict[str, Generator] = {}
    for name in args.model:
        students[name] = load_generator(ModelChoice(name=name)).model.eval()
    for path in args.weights:
        students[path.name] = load_generator(ModelChoice(weights=path)).model.eval()

    files = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    files = files[:: max(1, len(files) // args.count)][: args.count]
    rows: dict[str, list[tuple[float, float, float]]] = {"teacher": []}
    rows.update({k: [] for k in students})
    for p in files:
        x = unit(square(p, args.size))
        low = x * args.factor
        y = teacher(x[None])[0]
        y_low = teacher(low[None])[0]
        rows["teacher"].append((psnr(y, y_low), math.nan, math.nan))
        for name, net in students.items():
            with torch.inference_mode():
                s = net(x[None])[0].clamp(-1, 1)
                s_low = net(low[None])[0].clamp(-1, 1)
            rows[name].append((psnr(s, s_low), psnr(s, y), psnr(gain_offset_fit(s, y), y)))

    print(f"{len(files)} photos from {args.photos} at {args.size}², contrast ×{args.factor}; "
          f"teacher {args.teacher.name}")
    print(f"{'generator':<28} {'out(x) vs out(k·x) dB':>22} {'vs teacher dB':>14} {'after gain/offset dB':>21}")
    for name, vals in rows.items():
        mean = [sum(v[i] for v in vals) / len(vals) for i in range(3)]
        shown = [f"{m:.2f}" if not math.isnan(m) else "—" for m in mean]
        print(f"{name:<28} {shown[0]:>22} {shown[1]:>14} {shown[2]:>21}")


if __name__ == "__main__":
    main()
