"""CPU speed table for the README: every backend × model, plus the upstream-equivalent path.

Usage: python bench/bench_cpu.py [--repeat 5] [--threads 0] [--images DIR] [--out docs/speed_table.md]
       [--model hayao --model v2] [--no-rss] [--extra-precision bf16]
       python bench/bench_cpu.py --quality-photos ../shared/photos/val [--model hayao] [--size 512]
           [--teacher ../shared/teachers/animeganv3_hayao_512.onnx]

Runs :func:`animecli.benchmark.run_bench` (what ``animecli bench`` runs), prints the
Markdown table and writes it to ``--out`` if given. Rows are interleaved round by
round, so a busy machine slows them alike: compare ratios, not absolute times.

``--quality-photos DIR`` instead compares int8 with float32 (onnx) on every photo in
DIR (long side scaled to ``--size``): PSNR of the int8 output against the float32
output, mean / min / max, and the float32 onnx output against eager. With ``--teacher`` it
also scores both against that teacher as ``animecli eval`` does (centre-cropped --size²):
PSNR, SSIM, captured, what a colour filter reaches and the edge ratio
(``animecli.training.look``), and says whether int8 stays within 1.5 dB of float32 there
(issue 4's quality guard).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from animecli.benchmark import DEFAULT_BACKENDS, BenchOptions, run_bench
from animecli.cli.bench_table import to_markdown
from animecli.options import Backend, Precision


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=None, help="photo folder (default: examples/)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--model", action="append", default=[], help="repeatable; default: the default model and v2")
    ap.add_argument("--backend", action="append", default=[], choices=[b.value for b in DEFAULT_BACKENDS])
    ap.add_argument("--no-rss", action="store_true", help="skip the per-row peak RSS child processes")
    ap.add_argument("--extra-precision", action="append", default=[], choices=["fp32", "bf16"],
                    help="repeatable: one more eager row per model at this precision "
                         "(default: bf16 on CPUs with AMX, none elsewhere; fp32 adds none)")
    ap.add_argument("--out", type=Path, default=None, help="write the Markdown table here")
    ap.add_argument("--quality-photos", type=Path, default=None, help="int8 vs float32 PSNR over these photos")
    ap.add_argument("--teacher", type=Path, default=None,
                    help="with --quality-photos: also PSNR/SSIM of float32 and int8 against this teacher")
    args = ap.parse_args()
    if args.quality_photos:
        quality(args.quality_photos, args.model[0] if args.model else None, args.size, args.threads, args.teacher)
        return
    opts = BenchOptions(
        images=args.images, size=args.size, models=tuple(args.model),
        backends=tuple(Backend(b) for b in args.backend) or DEFAULT_BACKENDS,
        repeat=args.repeat, threads=args.threads, rss=not args.no_rss,
        extra_precisions=tuple(Precision(p) for p in args.extra_precision) or None,
    )
    result = run_bench(opts, lambda line: print(line, file=sys.stderr, flush=True))
    text = to_markdown(result)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")


def quality(folder: Path, model_name: str | None, size: int, threads: int, teacher: Path | None = None) -> None:
    """Print int8-vs-float32 and onnx-vs-eager PSNR over every photo in ``folder``.

    With ``teacher``: also each backend's PSNR/SSIM and look figures (captured, colour filter,
    edge ratio) against the teacher (``animecli eval``'s measure, photos centre-cropped to
    size×size), and int8's loss against float32 there — issue 4's quality guard (≤ 1.5 dB).
    """
    import statistics

    import torch
    from PIL import Image

    from animecli.benchmark import psnr
    from animecli.inference.backends import make_runner
    from animecli.inference.tensors import array_to_tensor, from_model_range, pad_batch, to_model_range
    from animecli.io.transforms import prepare
    from animecli.options import ModelChoice
    from animecli.weights.resolve import load_generator

    loaded = load_generator(ModelChoice(model_name))
    runners = {b: make_runner(loaded.model, b, threads=threads, digest=loaded.sha256, arch_key=loaded.spec.key)
               for b in (Backend.ONNX, Backend.INT8)}
    int8_vs_fp32, onnx_vs_eager = [], []
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    for i, path in enumerate(files):
        with Image.open(path) as img:
            rgb = array_to_tensor(prepare(img, size).rgb)
        h, w = rgb.shape[1:]
        x = pad_batch(to_model_range(rgb.unsqueeze(0), torch.float32), loaded.input_multiple)
        with torch.inference_mode():
            eager = from_model_range(loaded.model(x)[..., :h, :w])[0]
            fp32 = from_model_range(runners[Backend.ONNX](x)[..., :h, :w])[0]
            q8 = from_model_range(runners[Backend.INT8](x)[..., :h, :w])[0]
        int8_vs_fp32.append(psnr(q8, fp32))
        onnx_vs_eager.append(min(psnr(fp32, eager), 99.0))
        print(f"{i + 1}/{len(files)} {path.name}: int8 vs fp32 {int8_vs_fp32[-1]:.2f} dB", file=sys.stderr)
    print(f"{loaded.name}: {len(files)} photos from {folder} at long side {size}")
    print(f"int8 vs float32 (onnx): PSNR mean {statistics.fmean(int8_vs_fp32):.2f} dB, "
          f"min {min(int8_vs_fp32):.2f}, max {max(int8_vs_fp32):.2f}")
    print(f"onnx float32 vs eager: PSNR mean {statistics.fmean(onnx_vs_eager):.2f} dB (99 = identical), "
          f"min {min(onnx_vs_eager):.2f}")
    if teacher is None:
        return
    from animecli.training.evaluate import evaluate
    from animecli.training.look import fmt

    against: dict[Backend, tuple[float, float]] = {}
    for b, runner in runners.items():
        result = evaluate(runner, teacher, folder, size, Path(".animecli-eval-cache"), threads=threads)
        assert result is not None and result.look is not None
        against[b] = (result.psnr_db, result.ssim)
        look = result.look
        print(f"{b.value} vs teacher {teacher.name} at {size}x{size}: PSNR {result.psnr_db:.2f} dB, "
              f"SSIM {result.ssim:.3f}, captured {fmt(look.captured)}, colour filter {fmt(look.colour_filter)}, "
              f"edge ratio {fmt(look.edge_ratio)} ({result.count} photos)")
    loss = against[Backend.ONNX][0] - against[Backend.INT8][0]
    verdict = "met" if loss <= 1.5 else "NOT met"
    print(f"int8 loses {loss:.2f} dB against the teacher (guard: at most 1.5 dB): {verdict}")


if __name__ == "__main__":
    main()
