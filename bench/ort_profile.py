"""Where an exported graph spends its time: onnxruntime's own profiler, summed per op type.

Usage: python bench/ort_profile.py GRAPH.onnx [GRAPH2.onnx ...] [--size 512] [--runs 3] [--threads 0]

GRAPH is a cached export from ``$ANIMECLI_HOME/compiled/`` (run ``animecli bench`` or a
convert with ``--backend onnx`` / ``int8`` first to create it). Prints, per op type, the
milliseconds per run and the share of the graph's kernel time on one random
(1, 3, SIZE, SIZE) input in [-1, 1]. The profiler adds overhead: compare shares, and
compare graphs measured in the same invocation.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path


def profile(graph: Path, size: int, runs: int, threads: int) -> None:
    """Run ``graph`` ``runs`` times under the profiler and print the per-op table."""
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = "/tmp/animecli-ort-profile"
    if threads:
        opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(graph), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 1.0, (1, 3, size, size)).astype(np.float32)
    name = session.get_inputs()[0].name
    for _ in range(runs):  # all profiled, the first (arena growth) included
        session.run(None, {name: x})
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink(missing_ok=True)
    total_us: collections.Counter[str] = collections.Counter()
    count: collections.Counter[str] = collections.Counter()
    for ev in events:
        if ev.get("cat") == "Node" and str(ev.get("name", "")).endswith("_kernel_time"):
            op = str(ev["args"].get("op_name"))
            total_us[op] += int(ev["dur"])
            count[op] += 1
    calls = runs
    grand = sum(total_us.values())
    print(f"{graph.name}: {size}×{size}, {calls} runs")
    for op, us in total_us.most_common():
        if us / grand < 0.001:
            continue
        print(f"  {op:26s} {us / calls / 1000:9.1f} ms/run {100 * us / grand:5.1f} %  nodes/run {count[op] // calls}")
    print(f"  {'total':26s} {grand / calls / 1000:9.1f} ms/run")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("graphs", type=Path, nargs="+")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    for graph in args.graphs:
        profile(graph, args.size, args.runs, args.threads)


if __name__ == "__main__":
    main()
