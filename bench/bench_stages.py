"""AnimeGANv3 (full size or tiny) in stages against the whole graph: model-only time, peak RSS and the difference.

Usage: python bench/bench_stages.py [--model hayao] [--sizes 512x512,688x1024,1024x1024]
       [--repeat 5] [--threads 0]

Issue 23. Exports (once per process, torch) the model's whole ONNX graph and its stage graphs
(:mod:`animecli.inference.staged`) into a temporary folder, then, per size, runs each in a
*fresh* torch-free process (``python -c``: onnxruntime, numpy), alternating whole and staged
``--repeat`` times after one warm-up run, the input a real photo from ``../shared/photos/val``
(else the bundled astronaut) resized to that size. Prints, per size: the median model time of
each, their ratio, the peak RSS of each process (``ru_maxrss``, MiB; the process's own base
included), and the largest difference and PSNR of the staged output against the whole graph's
(float32 in [-1, 1], and after rounding to 8 bits: the share of values that differ).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import numpy as np
from PIL import Image
from animecli.inference.ort_session import OrtSession
from animecli.inference.staged import TINY_PLAN, V3_PLAN, StagedGraph
from animecli.options import Backend
folder, kind, photo, h, w, repeat, threads, out, plan_name = sys.argv[1:10]
plan = {"v3": V3_PLAN, "tiny": TINY_PLAN}[plan_name]
h, w, repeat, threads = int(h), int(w), int(repeat), int(threads)
if kind == "whole":
    session = OrtSession(Path(folder, "whole.onnx").read_bytes(), Backend.ONNX, threads)
else:
    graphs = {s.name: Path(folder, f"stage-{s.name}.onnx").read_bytes() for s in plan}
    session = OrtSession(StagedGraph(graphs, None, plan), Backend.ONNX, threads)
img = Image.open(photo).convert("RGB").resize((w, h), Image.LANCZOS)
x = np.ascontiguousarray((np.asarray(img, np.float32).transpose(2, 0, 1)[None] / 127.5 - 1.0))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
y = session.run_array(x)
times = []
for _ in range(repeat):
    t = time.perf_counter(); y = session.run_array(x); times.append(time.perf_counter() - t)
np.save(out, y)
print(json.dumps({"times": times, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "base_kb": base}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="hayao")
    ap.add_argument("--sizes", default="512x512,688x1024,1024x1024")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()

    import numpy as np

    from animecli.inference.backends.onnx_export import export_onnx, export_onnx_staged
    from animecli.inference.staged import V3_PLAN
    from animecli.options import ModelChoice
    from animecli.weights.resolve import load_generator

    val = sorted((ROOT.parent / "shared" / "photos" / "val").glob("*.jpg"))
    photo = val[0] if val else ROOT / "examples" / "astronaut.jpg"
    model = load_generator(ModelChoice(args.model)).model
    with tempfile.TemporaryDirectory(prefix="bench-stages-") as tmp:
        folder = Path(tmp)
        (folder / "whole.onnx").write_bytes(export_onnx(model))
        staged = export_onnx_staged(model)
        plan_name = "v3" if staged.plan is V3_PLAN else "tiny"
        for name, data in staged.graphs.items():
            (folder / f"stage-{name}.onnx").write_bytes(data)
        print(f"model {args.model}, photo {photo.name}, {args.repeat} runs each after a warm-up, "
              f"threads {args.threads or 'default'}; fresh process per run set, alternating\n")
        print("| H×W | whole ms | staged ms | staged / whole | whole peak MiB | staged peak MiB "
              "| max abs diff | PSNR dB | 8-bit values differing |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for size in args.sizes.split(","):
            h, w = (int(v) for v in size.split("x"))
            res: dict[str, dict[str, float]] = {}
            times: dict[str, list[float]] = {"whole": [], "staged": []}
            peaks: dict[str, list[int]] = {"whole": [], "staged": []}
            for _ in range(2):  # two alternating pairs of processes, half the runs each
                for kind in ("whole", "staged"):
                    out = folder / f"{kind}.npy"
                    done = subprocess.run([sys.executable, "-c", CHILD, str(folder), kind, str(photo), str(h), str(w),
                                           str(max(1, args.repeat // 2)), str(args.threads), str(out), plan_name],
                                          capture_output=True, text=True, cwd=ROOT, check=True)
                    r = json.loads(done.stdout.strip().splitlines()[-1])
                    times[kind] += r["times"]
                    peaks[kind].append(int(r["peak_kb"]) // 1024)
            for kind in times:
                ts = sorted(times[kind])
                res[kind] = {"ms": 1000 * ts[len(ts) // 2], "peak": max(peaks[kind])}
            a, b = np.load(folder / "whole.npy"), np.load(folder / "staged.npy")
            diff = float(np.abs(a - b).max())
            mse = float(((a - b) ** 2).mean()) * 127.5**2
            psnr = 10 * np.log10(255**2 / mse) if mse > 0 else float("inf")
            q = lambda v: np.clip(np.rint((v + 1) * 127.5), 0, 255)  # noqa: E731
            differing = float((q(a) != q(b)).mean())
            print(f"| {h}×{w} | {res['whole']['ms']:.0f} | {res['staged']['ms']:.0f} | "
                  f"{res['staged']['ms'] / res['whole']['ms']:.3f} | {res['whole']['peak']:.0f} | "
                  f"{res['staged']['peak']:.0f} | {diff:.1e} | {psnr:.1f} | {100 * differing:.2f} % |")


if __name__ == "__main__":
    main()
