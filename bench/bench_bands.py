"""What running lite3's decoder in bands costs in time, side by side with the whole graph.

Usage: python bench/bench_bands.py [--model hayao] [--repeat 5] [--threads 0]
       [--size 512x512 --size 683x1024 --size 1024x1024]

For each size (H×W, random input in [-1, 1]) three onnxruntime runs are timed, interleaved
round by round: the whole float32 graph (what ran before the split), the encoder + decoder
without bands, and the encoder + decoder in bands (the default for large images:
``animecli.inference.ort_session.BAND_PIXELS`` pixels per band, ``BAND_HALO`` rows of context). It prints the
median ms of each and the largest difference of the banded output from the whole graph's.
Peak memory is ``bench/bench_memory.py``'s job (it needs one process per run).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from animecli.inference import ort_session as ort
from animecli.inference.backends.onnx_export import export_onnx, export_onnx_split
from animecli.inference.ort_session import OrtSession, SplitGraph
from animecli.options import Backend, ModelChoice
from animecli.weights.resolve import load_generator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="hayao")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--size", action="append", default=[], help="HxW, multiples of 4 (repeatable)")
    args = ap.parse_args()
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.size] or [(512, 512), (684, 1024),
                                                                                 (1024, 1024)]
    model = load_generator(ModelChoice(args.model)).model
    whole = OrtSession(export_onnx(model), Backend.ONNX, args.threads)
    split = OrtSession(SplitGraph(*export_onnx_split(model)), Backend.ONNX, args.threads)
    band_pixels = ort.BAND_PIXELS
    print(f"model {args.model}, {args.repeat} rounds after a warm-up, bands of {band_pixels:,} pixels "
          f"with {ort.BAND_HALO} rows of context\n")
    print("| H×W | whole graph ms | split, no bands ms | split, bands ms | bands / whole | max abs diff |")
    print("|---|---:|---:|---:|---:|---:|")
    for h, w in sizes:
        x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32) * 2 - 1
        times: dict[str, list[float]] = {"whole": [], "nobands": [], "bands": []}
        outputs: dict[str, np.ndarray] = {}  # type: ignore[type-arg]
        for round_ in range(args.repeat + 1):
            for name in times:
                ort.BAND_PIXELS = 1 << 40 if name == "nobands" else band_pixels
                session = whole if name == "whole" else split
                t0 = time.perf_counter()
                y = session.run_array(x)
                if round_:  # round 0 warms up
                    times[name].append((time.perf_counter() - t0) * 1000)
                outputs[name] = y
        ort.BAND_PIXELS = band_pixels
        med = {k: statistics.median(v) for k, v in times.items()}
        diff = float(np.abs(outputs["bands"] - outputs["whole"]).max())
        print(f"| {h}×{w} | {med['whole']:.0f} | {med['nobands']:.0f} | {med['bands']:.0f} "
              f"| {med['bands'] / med['whole']:.2f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
