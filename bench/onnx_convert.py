"""`animecli convert --weights FILE.onnx` against onnxruntime on the file itself (issue 22, items 3-4).

For each ONNX file in ../shared/teachers: PSNR of the PNGs `animecli convert --weights FILE --format png`
writes for crops of ../shared/photos/val, against onnxruntime running the file on the same crops
(its float output rounded to 8 bits, as a PNG holds it); at 512×512 (a fixed-size file at its own
size), and at 768×512 for the size-free files; tiles (--tile 512) vs whole (--tile 0) on a 1536×1024
crop; --backend int8 vs --backend onnx (float) on the 512² crops; model-only time at 512² of the
imported module (eager) and onnxruntime on the file. Prints one table.

    PYTHONPATH=. python bench/onnx_convert.py [--photos 4] [--threads 2] [--skip-tiles]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

from animecli.cli.app import app
from animecli.weights.onnx_import import import_onnx, run_onnxruntime

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def crops(folder: Path, n: int, size: tuple[int, int], out: Path) -> list[Path]:
    """Centre crops of the first n photos, scaled to cover ``size`` (W, H), as PNGs in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for src in sorted(folder.iterdir())[:n]:
        with Image.open(src) as img:
            img = img.convert("RGB")
            w, h = size
            s = max(w / img.width, h / img.height)
            img = img.resize((math.ceil(img.width * s), math.ceil(img.height * s)), Image.Resampling.LANCZOS)
            left, top = (img.width - w) // 2, (img.height - h) // 2
            dst = out / f"{src.stem}.png"
            img.crop((left, top, left + w, top + h)).save(dst)
            paths.append(dst)
    return paths


def read(path: Path) -> torch.Tensor:
    arr = np.asarray(Image.open(path).convert("RGB"), np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0) / 127.5 - 1.0


def psnr_set(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    mse = sum(float(torch.mean((a.double() - b.double()) ** 2)) for a, b in pairs) / len(pairs)
    return math.inf if mse == 0 else 10 * math.log10(4.0 / mse)


def convert(src: Path, dst: Path, onnx_file: Path, *extra: str) -> None:
    r = CliRunner().invoke(app, ["convert", str(src), str(dst), "--weights", str(onnx_file), "--format", "png",
                                 "--device", "cpu", "--max-size", "0", "--overwrite", "-q", *extra])
    if r.exit_code != 0:
        raise SystemExit(f"convert failed ({r.exit_code}): {r.output}")


def vs_ort(onnx_file: Path, photos: list[Path], out: Path, layout: object, float_graph: bool = False) -> float:
    pairs = []
    for p in photos:
        ref = run_onnxruntime(onnx_file, read(p), layout, float_activations=float_graph)  # type: ignore[arg-type]
        ref8 = ((ref.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1
        pairs.append((read(out / p.name), ref8))
    return psnr_set(pairs)


def vs_dir(a: Path, b: Path, photos: list[Path]) -> float:
    return psnr_set([(read(a / p.name), read(b / p.name)) for p in photos])


def model_ms(fn: object, reps: int = 3) -> float:
    assert callable(fn)
    fn()
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def ort_session(path: Path, x: torch.Tensor, threads: int) -> object:
    """A callable running the file on ``x`` (NCHW, laid out as the file wants) with a session made once."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    info = sess.get_inputs()[0]
    arr = x.numpy()
    if len(info.shape) == 4 and info.shape[-1] == 3:
        arr = arr.transpose(0, 2, 3, 1)
    feed = {info.name: np.ascontiguousarray(arr, np.float16 if "float16" in info.type else np.float32)}
    return lambda: sess.run(None, feed)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teachers", type=Path, default=SHARED / "teachers")
    ap.add_argument("--photos", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-tiles", action="store_true")
    ap.add_argument("--skip-int8", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    val = SHARED / "photos" / "val"
    rows = []
    with tempfile.TemporaryDirectory(prefix="animecli-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for f in sorted(args.teachers.glob("*.onnx")):
            g = import_onnx(f)
            fixed = g.fixed_size
            side = (fixed[1], fixed[0]) if fixed else (512, 512)
            row: dict[str, str] = {"file": f.name, "arch": g.arch.value, "multiple": str(g.size_multiple)}
            src = crops(val, args.photos, side, tmp / f"in{side[0]}x{side[1]}")
            out = tmp / f"{f.stem}_out"
            convert(src[0].parent, out, f)
            label = f"{side[0]}x{side[1]}"
            row["vs ORT " + "512²"] = f"{vs_ort(f, src, out, g.layout):.1f} ({label})"
            if g.quantized:
                row["vs ORT float graph"] = f"{vs_ort(f, src, out, g.layout, float_graph=True):.1f}"
            if fixed is None:
                src2 = crops(val, args.photos, (768, 512), tmp / "in768x512")
                out2 = tmp / f"{f.stem}_out768"
                convert(src2[0].parent, out2, f)
                row["vs ORT 768×512"] = f"{vs_ort(f, src2, out2, g.layout):.1f}"
            if not args.skip_int8:
                o_f, o_q = tmp / f"{f.stem}_onnx", tmp / f"{f.stem}_int8"
                convert(src[0].parent, o_f, f, "--backend", "onnx")
                convert(src[0].parent, o_q, f, "--backend", "int8")
                row["int8 vs float"] = f"{vs_dir(o_q, o_f, src):.1f}"
            if not args.skip_tiles and g.arch.value != "animeganv2-tf":
                big = crops(val, 1, (1536, 1024), tmp / "in1536")
                whole, tiles = tmp / f"{f.stem}_whole", tmp / f"{f.stem}_tiles"
                convert(big[0].parent, whole, f, "--tile", "0", "--backend", "eager")
                convert(big[0].parent, tiles, f, "--tile", "512", "--backend", "eager")
                row["tiles vs whole 1536×1024"] = f"{vs_dir(tiles, whole, big):.1f}"
            h, w = (fixed or (512, 512))
            x = torch.rand(1, 3, h, w) * 2 - 1
            with torch.inference_mode():
                eager = model_ms(lambda m=g.module, t=x: m(t))
            ort = model_ms(ort_session(f, x, args.threads))
            row[f"model ms eager / ORT ({h}²)"] = f"{eager:.0f} / {ort:.0f}"
            rows.append(row)
            print(row, flush=True)
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(r.get(k, "") for k in keys) + " |")


if __name__ == "__main__":
    main()
