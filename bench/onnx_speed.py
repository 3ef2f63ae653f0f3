"""Speed of an imported AnimeGAN file through animecli against onnxruntime running the file itself
(issue 22, item 5), side by side in one run, rounds interleaved.

Rows per teacher file and size (512², and 1024×683 for the size-free files):

* ``ORT on file``: onnxruntime on the original file (its layout, its dtype), as the AnimeGAN
  author's script runs it; at 1024×683 the photo is cut to the file's size multiple (1024×680;
  1024×672 for tiny_Cute), as the author's script resizes to it, since the file takes no other size;
* ``animecli <backend>``: the engine ``animecli convert --weights FILE.onnx --backend <backend>``
  runs (:func:`animecli.inference.select.select_engine`; ``onnx`` is onnxruntime on animecli's
  own export of the imported module, pads folded, each norm one op).

Model only = the forward pass on a ready float tensor (for animecli the engine's runner on the
padded NCHW input); end to end = uint8 RGB in, uint8 RGB out (for the file: scale to [-1, 1],
layout, run, scale back and round, in numpy; for animecli ``Engine.run_batch``).

    PYTHONPATH=. python bench/onnx_speed.py [--threads 2] [--repeat 5] [--backends onnx,eager]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from animecli.inference.select import select_engine
from animecli.io.transforms import pad_array
from animecli.models.spec import describe
from animecli.options import Backend, EngineOptions, ModelChoice
from animecli.weights.onnx_import import Layout, import_onnx

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def photo(path: Path, w: int, h: int) -> np.ndarray:
    """A centre crop of ``path`` scaled to cover (w, h), as (h, w, 3) uint8."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        s = max(w / img.width, h / img.height)
        img = img.resize((max(w, round(img.width * s)), max(h, round(img.height * s))), Image.Resampling.LANCZOS)
        left, top = (img.width - w) // 2, (img.height - h) // 2
        return np.asarray(img.crop((left, top, left + w, top + h)))


class FileRunner:
    """onnxruntime on the original file."""

    def __init__(self, path: Path, layout: Layout, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
        self.sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        info = self.sess.get_inputs()[0]
        self.name, self.nhwc = info.name, layout is Layout.NHWC
        self.dtype = np.float16 if "float16" in info.type else np.float32

    def feed(self, rgb: np.ndarray) -> np.ndarray:
        x = (rgb.astype(np.float32) / 127.5 - 1.0)[None]
        return np.ascontiguousarray(x if self.nhwc else x.transpose(0, 3, 1, 2), self.dtype)

    def model(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.sess.run(None, {self.name: x})[0])

    def end_to_end(self, rgb: np.ndarray) -> np.ndarray:
        y = self.model(self.feed(rgb)).astype(np.float32)[0]
        y = y if self.nhwc else y.transpose(1, 2, 0)
        return np.clip((y + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def time_into(fn: Callable[[], object], times: list[float]) -> None:
    """Run ``fn`` once and append its wall time in ms to ``times``."""
    t0 = time.perf_counter()
    fn()
    times.append((time.perf_counter() - t0) * 1000.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teachers", type=Path, default=SHARED / "teachers")
    ap.add_argument("--photo", type=Path, default=None, help="default: the first photo of ../shared/photos/val")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--backends", default="onnx,eager")
    ap.add_argument("--only", default="", help="substring of the file names to run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    src = args.photo or sorted((SHARED / "photos" / "val").iterdir())[0]
    backends = [Backend(b) for b in args.backends.split(",")]
    rows: list[tuple[str, str, str, list[float], list[float]]] = []
    for path in sorted(args.teachers.glob("*.onnx")):
        if args.only not in path.name:
            continue
        g = import_onnx(path)
        sizes = [(g.fixed_size[1], g.fixed_size[0])] if g.fixed_size else [(512, 512), (1024, 683)]
        file = FileRunner(path, g.layout, args.threads)
        for w, h in sizes:
            # Fresh engines per size, as the file's session sees one size: an engine that ran 512²
            # first takes the first 1024×683 inputs for outliers and gives its arena back after
            # each (ort_session's shrink policy for mixed folders), which is not the steady state.
            engines = {b: select_engine(ModelChoice(weights=path), EngineOptions(
                device="cpu", threads=args.threads, backend=b)).engine for b in backends}
            rgb = photo(src, w, h)
            # The file takes multiples of its size multiple only (8; 16 for the tiny models): the
            # author's script resizes to them; animecli pads instead.
            fm = describe(g.arch).size_multiple
            fw, fh = w - w % fm, h - h % fm
            file_rgb = rgb[:fh, :fw]
            paths: list[tuple[str, Callable[[], object], Callable[[], object]]] = []
            fx = file.feed(file_rgb)
            paths.append(("ORT on file" + ("" if fh == h else f" ({fw}x{fh})"),
                          lambda x=fx, f=file: f.model(x), lambda r=file_rgb, f=file: f.end_to_end(r)))
            for eng in engines.values():
                mult = eng.multiple  # type: ignore[attr-defined]
                padded = torch.from_numpy(pad_array(rgb, mult)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
                runner = eng.runner  # type: ignore[attr-defined]
                x = padded.contiguous(memory_format=torch.channels_last)

                def model(r: object = runner, t: torch.Tensor = x) -> object:
                    with torch.inference_mode():
                        return r(t)  # type: ignore[operator]

                paths.append((f"animecli {eng.backend.value}", model,  # type: ignore[attr-defined]
                              lambda e=eng, r=rgb: e.run_batch([r])))
            model_t: dict[str, list[float]] = {n: [] for n, _, _ in paths}
            e2e_t: dict[str, list[float]] = {n: [] for n, _, _ in paths}
            for rnd in range(args.repeat + 1):  # round 0 warms up
                for name, m, e in paths:
                    # Round 0's times go to a list that is dropped: it warms up.
                    time_into(m, model_t[name] if rnd else [])
                    time_into(e, e2e_t[name] if rnd else [])
            for name, _, _ in paths:
                rows.append((path.name, f"{w}x{h}", name, model_t[name], e2e_t[name]))
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"model only and end to end, one image, {args.threads} threads, median of {args.repeat} interleaved "
          f"rounds; {cpu}, {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f} at the end")
    print("| file | size | path | model ms | end-to-end ms | file / this (model) | file / this (e2e) |")
    print("|---|---|---|---:|---:|---:|---:|")
    base: dict[tuple[str, str], tuple[float, float]] = {}
    for f, size, name, mt, et in rows:
        m, e = statistics.median(mt), statistics.median(et)
        if name.startswith("ORT on file"):
            base[(f, size)] = (m, e)
        bm, be = base[(f, size)]
        print(f"| {f} | {size} | {name} | {m:.0f} | {e:.0f} | {bm / m:.2f}× | {be / e:.2f}× |")


if __name__ == "__main__":
    main()
