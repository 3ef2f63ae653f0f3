"""Activation memory of one cached graph in onnxruntime, per session option (issue 23).

Usage (one fresh process per row, so that ``ru_maxrss`` is that configuration's):

    for cfg in "all 0 1" "ext 0 1" "basic 0 1" "all 0 0" "all 1 1"; do
        python bench/ort_memory.py GRAPH.onnx $cfg --size 1024x688
    done

Arguments after the graph: optimisation level (``all``, ``ext``, ``basic``), memory patterns
(1/0), CPU arena (1/0). Prints the session's base RSS, the peak over three runs of one random
input of ``--size`` and the rise in bytes per input pixel, and the run times (ms).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import onnxruntime as ort


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("graph")
    ap.add_argument("level", choices=["all", "ext", "basic"])
    ap.add_argument("pattern", choices=["0", "1"])
    ap.add_argument("arena", choices=["0", "1"])
    ap.add_argument("--size", default="1024x688", help="input WxH")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    o = ort.SessionOptions()
    o.intra_op_num_threads = args.threads
    o.enable_mem_pattern = args.pattern == "1"
    o.enable_cpu_mem_arena = args.arena == "1"
    o.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                  "ext": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                  "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}[args.level]
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    s = ort.InferenceSession(args.graph, o, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32) * 2 - 1
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        s.run(None, {name: x})
        times.append(round((time.perf_counter() - t0) * 1000))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.level:5s} patterns={args.pattern} arena={args.arena}: base {base:.0f} MB, peak {peak:.0f} MB "
          f"(+{(peak - base) * 2**20 / (h * w):.0f} B/px), ms {times}")


if __name__ == "__main__":
    main()
