"""Running a file with onnxruntime next to our module: the importer's proof that the mapping is right."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from animecli.errors import SetupError
from animecli.weights.onnx_import.graph import strip_activation_qdq
from animecli.weights.onnx_import.recognise import Layout


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [-1, 1] (peak-to-peak 2, i.e. the same figure as on 0..255 pixels)."""
    mse = float(torch.mean((a.double() - b.double()) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(4.0 / mse)


def test_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A seeded, smooth (1, 3, H, W) image in [-1, 1]: coarse noise upsampled, photo-like gradients."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(2, height // 32), max(2, width // 32), generator=g) * 2 - 1
    img = nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    return img.clamp(-1, 1)


def run_onnxruntime(path: Path | str, x: torch.Tensor, layout: Layout, threads: int = 2,
                    float_activations: bool = False) -> torch.Tensor:
    """The file's output for ``x`` ((N, 3, H, W) in [-1, 1]) as (N, 3, H, W) float32.

    Args:
        float_activations: run the file with its activation Quantize/Dequantize
            pairs removed (:func:`~animecli.weights.onnx_import.graph.strip_activation_qdq`).
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise SetupError("checking an imported ONNX file needs onnxruntime: pip install 'animecli[onnx]'") from exc
    model = onnx.load(str(path))
    if float_activations:
        model = strip_activation_qdq(model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # The QDQ file leaves unused scales behind; onnxruntime warns about each one.
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    info = sess.get_inputs()[0]
    dtype = np.float16 if "float16" in info.type else np.float32
    arr = x.detach().float().numpy()
    if layout is Layout.NHWC:
        arr = arr.transpose(0, 2, 3, 1)
    (y,) = sess.run(None, {info.name: np.ascontiguousarray(arr, dtype)})[:1]
    out = torch.from_numpy(np.asarray(y, np.float32))
    return out.permute(0, 3, 1, 2).contiguous() if layout is Layout.NHWC else out


def check_against_onnxruntime(path: Path | str, model: nn.Module, size: tuple[int, int] | int,
                              layout: Layout = Layout.NHWC, x: torch.Tensor | None = None,
                              float_activations: bool = False) -> float:
    """PSNR (dB) of ``model`` against onnxruntime running ``path`` on the same image.

    Args:
        path: the ONNX file.
        model: our module (NCHW, [-1, 1] in and out).
        size: (H, W) or a side; a fixed-size file must be checked at its size.
        layout: the file's layout.
        x: (1, 3, H, W) input in [-1, 1]; default a seeded smooth test image.
        float_activations: compare with the file's float graph (activation QDQ removed).
    """
    h, w = (size, size) if isinstance(size, int) else size
    if x is None:
        x = test_image(h, w)
    ref = run_onnxruntime(path, x, layout, float_activations=float_activations)
    with torch.inference_mode():
        ours = model(x.float())
    return psnr(ours, ref)
