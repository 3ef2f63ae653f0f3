"""What is known about each generator architecture without building it (no torch import).

The names and build options of the architectures (:class:`Arch`, :class:`ArchSpec`),
and their measured activation memory per pixel. :mod:`animecli.models.registry` builds the
networks; this module lets the weights layer and the torch-free onnxruntime engine
(:mod:`animecli.inference.ort_engine`) describe a model without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Arch(str, Enum):
    """Generator architectures."""

    V2 = "v2"
    LITE = "lite"
    LITE2 = "lite2"
    LITE3 = "lite3"


@dataclass(frozen=True)
class ArchSpec:
    """Everything needed to build an empty generator.

    Attributes:
        arch: which architecture.
        width: channel multiplier; 1.0 for every shipped model.
        align_corners: v2 upsampling mode (ignored by ``lite``).
        fast_norm: fast normalisation instead of ``nn.GroupNorm`` (same parameters).
    """

    arch: Arch = Arch.LITE
    width: float = 1.0
    align_corners: bool = True
    fast_norm: bool = True

    @property
    def key(self) -> str:
        """What changes the network's output besides its weights, e.g. ``lite2/1.0/noalign``:
        part of the resume fingerprint and of the compiled-graph cache names."""
        return f"{self.arch.value}/{self.width}/{'align' if self.align_corners else 'noalign'}"


def has_local_decoder(arch: Arch) -> bool:
    """Whether the architecture's decoder has no whole-image norms (``lite3``): its ONNX
    export comes in two parts and the decoder runs on bands of rows (:mod:`animecli.inference.ort_session`)."""
    return arch is Arch.LITE3


# Peak activation memory per input pixel, float32, one image, measured on CPU as the rise
# in peak RSS over a model already loaded (docs/models.md, "Memory per pixel"), rounded
# up: eager PyTorch; the onnxruntime graph; onnxruntime's fixed-statistics (tiling) graph.
# The last is the steady state over many tiles: onnxruntime's arena kept growing for the
# first tiles of a photo even at one tile shape, to about 1.9× a single run's peak (lite2,
# 30 tiles of 1512²); for lite and v2 it is that factor times a single run's figure.
# "onnx-split": lite3's encoder graph on the whole image, its decoder in bands: 254 B/px
# measured (peak RSS of whole converts, 1024×768 → 1600×1200 → 2048×1536: 312 → 598 → 907 MB),
# so a 3:2 photo at --max-size 2048 runs whole (untiled 1600×1200 took 8 s and 598 MB; tiled
# in the PyTorch engine, 21 s and 863 MB).
_BYTES_PER_PIXEL = {
    "eager": {"v2": 1536, "lite": 768, "lite2": 640, "lite3": 640},
    "onnx": {"v2": 2176, "lite": 1152, "lite2": 640, "lite3": 640},
    "onnx-split": {"v2": 2176, "lite": 1152, "lite2": 640, "lite3": 272},
    "onnx-fixed": {"v2": 4096, "lite": 2176, "lite2": 640, "lite3": 640},
}


def activation_bytes_per_pixel(arch: str, half: bool = False, graph: str = "eager") -> int:
    """Rough peak activation memory per input pixel for one image (measured, rounded up).

    Args:
        arch: ``v2``, ``lite``, ``lite2`` or ``lite3`` (anything else counts as ``v2``).
        half: computing in float16/bfloat16 (halves it).
        graph: what runs: ``eager`` (PyTorch), ``onnx``, ``onnx-split`` or ``onnx-fixed``
            (onnxruntime's whole, two-part (:func:`has_local_decoder`) or fixed-statistics graph).
    """
    table = _BYTES_PER_PIXEL.get(graph, _BYTES_PER_PIXEL["eager"])
    bpp = table.get(arch, table["v2"])
    return bpp // 2 if half else bpp
