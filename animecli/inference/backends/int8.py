"""int8: calibration photos and the static quantisation of an exported graph's convolutions."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from animecli.errors import SetupError
from animecli.inference.ort_session import ONNX_HINT, require_onnxruntime
from animecli.options import Backend

__all__ = ["CALIBRATION_SIZE", "calibration_images", "calibration_key", "quantize_int8"]

CALIBRATION_SIZE = 512


def calibration_images(
    folder: Path | None, size: int = CALIBRATION_SIZE, multiple: int = 4, limit: int = 16
) -> list[torch.Tensor]:
    """Photos for int8 calibration, as model inputs.

    Args:
        folder: a folder of photos (``None`` = the bundled examples).
        size: long side they are scaled to (LANCZOS).
        multiple: H and W are padded to a multiple of this.
        limit: at most this many photos (sorted by name).

    Returns:
        (1, 3, H, W) float32 tensors in [-1, 1].

    Raises:
        SetupError: no folder or no readable photos in it.
    """
    from animecli.inference.tensors import array_to_tensor, pad_batch, to_model_range
    from animecli.io.photos import bundled_photos_dir, photo_files, read_photos
    from animecli.io.transforms import prepare

    if folder is not None and not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise SetupError(f"--calibration {folder} {what}; pass a folder of a few of your photos")
    folder = folder if folder is not None else bundled_photos_dir()
    if folder is None or not folder.is_dir():
        raise SetupError(
            "--backend int8 calibrates on real photos, and the bundled examples/ folder is not installed "
            "here; pass --calibration DIR (a few of your photos)"
        )
    out = []
    # The first `limit` photo files, of which the unreadable ones are passed over.
    for _, rgb in read_photos(photo_files(folder)[:limit], lambda img: array_to_tensor(prepare(img, size).rgb)):
        out.append(pad_batch(to_model_range(rgb.unsqueeze(0), torch.float32), multiple))
    if not out:
        raise SetupError(f"no readable photos in {folder} for int8 calibration; pass --calibration DIR")
    return out


def calibration_key(images: Sequence[torch.Tensor]) -> str:
    """A short digest of the calibration inputs (shapes and values), part of the int8 graph's cache key."""
    h = hashlib.sha256()
    for x in images:
        h.update(str(tuple(x.shape)).encode())
        h.update(x.contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def quantize_int8(fp32_onnx: bytes, images: Sequence[torch.Tensor], workdir: Path) -> bytes:
    """Statically quantise every convolution of an exported generator.

    QDQ format, int8 symmetric per-channel weights, uint8 activations, min/max
    calibration over ``images``. ``reduce_range`` (7-bit weights) because on CPUs
    without VNNI (AVX2, AVX-512 before Cascade Lake) the u8×s8 multiply-add instruction
    saturates with full-range weights and costs several dB (measured: docs/speed.md).
    Norms, activations and resizes stay float32.

    Args:
        fp32_onnx: the float32 model from :func:`~animecli.inference.backends.onnx_export.export_onnx`.
        images: (1, 3, H, W) float32 calibration inputs in [-1, 1].
        workdir: a folder for the intermediate files.

    Returns:
        The quantised ONNX model.
    """
    require_onnxruntime(Backend.INT8)
    try:
        from onnxruntime import quantization as q
    except ImportError:  # the quantiser needs the onnx package, which onnxruntime does not pull in
        raise SetupError(f"--backend int8 needs the onnx package to quantise the model; {ONNX_HINT}") from None

    class _Reader(q.CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._it = iter(images)

        def get_next(self) -> dict[str, Any] | None:
            x = next(self._it, None)
            return None if x is None else {"input": x.numpy()}

    src = workdir / "fp32.onnx"
    out = workdir / "int8.onnx"
    src.write_bytes(fp32_onnx)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs a "consider pre-processing" warning per call
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            q.quantize_static(
                str(src), str(out), _Reader(), quant_format=q.QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                per_channel=True, reduce_range=True, activation_type=q.QuantType.QUInt8,
                weight_type=q.QuantType.QInt8, calibrate_method=q.CalibrationMethod.MinMax,
                calibration_cache_path=None, extra_options={"CalibTensorRangeSymmetric": False},
            )
    finally:
        root.setLevel(level)
    return out.read_bytes()

