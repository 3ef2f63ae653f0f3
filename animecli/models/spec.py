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
    # The AnimeGAN author's own generators, imported from their ONNX files (models/animeganv3.py).
    V3 = "animeganv3"
    V3_TINY = "animeganv3-tiny"
    V2_TF = "animeganv2-tf"


@dataclass(frozen=True)
class ArchSpec:
    """Everything needed to build an empty generator.

    Attributes:
        arch: which architecture.
        width: channel multiplier; 1.0 for every shipped model.
        align_corners: v2 upsampling mode (ignored by ``lite``).
        fast_norm: fast normalisation instead of ``nn.GroupNorm`` (same parameters).
        norm_eps: the norms' eps where the file sets it (imported archs; ``None`` = the arch's default:
            1e-5 for LADE, 1e-12 for ``animeganv2-tf``).
        attn_eps: ``animeganv3``'s attention eps (``None`` = 1e-9).
        final_norm: ``animeganv3-tiny``: the LADE on its last decoder conv (tiny_Cute has it).
        widths: ``animeganv3`` / ``animeganv3-tiny`` structurally pruned (``animecli.training.prune``):
            every layer's output channels, in the generator's ``default_widths`` order (``None`` = the
            release's widths for ``width``). Read from a state dict's shapes on loading
            (:func:`animecli.models.registry.fit_widths`), so no file has to record them.
    """

    arch: Arch = Arch.LITE
    width: float = 1.0
    align_corners: bool = True
    fast_norm: bool = True
    norm_eps: float | None = None
    attn_eps: float | None = None
    final_norm: bool = True
    widths: tuple[int, ...] | None = None

    @property
    def key(self) -> str:
        """What changes the network's output besides its weights, e.g. ``lite2/1.0/noalign``:
        part of the resume fingerprint and of the compiled-graph cache names."""
        key = f"{self.arch.value}/{self.width}/{'align' if self.align_corners else 'noalign'}"
        # Only the imported archs have these; the older keys (and their caches) stay as they were.
        if self.norm_eps is not None:
            key += f"/eps{self.norm_eps:g}"
        if self.attn_eps is not None:
            key += f"/aeps{self.attn_eps:g}"
        if not self.final_norm:
            key += "/nofinalnorm"
        # ``widths`` is left out on purpose: they follow from the weights, whose SHA-256 is in every
        # cache name and fingerprint beside this key, and the torch-free engine (which never reads
        # the file) must find the graphs the PyTorch path exported under the same name.
        return key


class NormKind(str, Enum):
    """What a generator's normalisations compute statistics over (all of them whole-image)."""

    NONE = "none"
    GROUP = "group"  # one mean and variance per sample over (C, H, W): v2, lite*, animeganv2-tf
    LADE = "lade"  # per-channel mean/variance of x and of a 1x1 projection of x: AnimeGANv3


@dataclass(frozen=True)
class ArchDescriptor:
    """What the converter needs to know of an architecture before building it.

    Attributes:
        arch: the architecture.
        size_multiple: input H and W are padded to a multiple of this (2 ** stride-2 levels).
        tiling: tiles match the whole image (its whole-image statistics can be frozen).
        norm: the kind of whole-image normalisation.
        global_attention: a softmax over all positions (AnimeGANv3's external attention),
            frozen for tiling like the norms.
        precisions: compute dtypes it runs in (``fp16`` needs CUDA).
        input_range: the (low, high) of its RGB input and output.
        licence: the licence of the weights that exist for it ("" = per model, see the manifest).
    """

    arch: Arch
    size_multiple: int
    tiling: bool
    norm: NormKind
    global_attention: bool = False
    precisions: tuple[str, ...] = ("fp32", "bf16", "fp16")
    input_range: tuple[float, float] = (-1.0, 1.0)
    licence: str = ""


# The AnimeGAN author's weights (the ONNX releases, the AnimeGANv2 checkpoints and their conversions).
NON_COMMERCIAL = ("non-commercial use only (research, teaching, publications), AnimeGAN author's weights; "
                  "commercial use needs the AnimeGAN author's permission")

DESCRIPTORS: dict[Arch, ArchDescriptor] = {
    Arch.V2: ArchDescriptor(Arch.V2, 4, True, NormKind.GROUP),
    Arch.LITE: ArchDescriptor(Arch.LITE, 4, True, NormKind.GROUP),
    Arch.LITE2: ArchDescriptor(Arch.LITE2, 4, True, NormKind.GROUP),
    Arch.LITE3: ArchDescriptor(Arch.LITE3, 4, True, NormKind.GROUP),
    Arch.V3: ArchDescriptor(Arch.V3, 8, True, NormKind.LADE, global_attention=True, licence=NON_COMMERCIAL),
    Arch.V3_TINY: ArchDescriptor(Arch.V3_TINY, 16, True, NormKind.LADE, licence=NON_COMMERCIAL),
    Arch.V2_TF: ArchDescriptor(Arch.V2_TF, 4, True, NormKind.GROUP, licence=NON_COMMERCIAL),
}


def describe(arch: Arch) -> ArchDescriptor:
    """The :class:`ArchDescriptor` of ``arch``."""
    return DESCRIPTORS[arch]


IMPORTED_ARCHS = frozenset({Arch.V3, Arch.V3_TINY, Arch.V2_TF})


def has_local_decoder(arch: Arch) -> bool:
    """Whether the architecture's decoder has no whole-image norms (``lite3``): its ONNX
    export comes in two parts and the decoder runs on bands of rows (:mod:`animecli.inference.ort_session`)."""
    return arch is Arch.LITE3


def has_staged_graphs(spec: ArchSpec) -> bool:
    """Whether the architecture's ONNX export comes as stage graphs cut at its whole-image norms,
    the upper levels run in bands (AnimeGANv3, and the tiny one with its final LADE;
    :mod:`animecli.inference.staged`)."""
    return spec.arch is Arch.V3 or (spec.arch is Arch.V3_TINY and spec.final_norm)


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
# The imported archs (animeganv3*, animeganv2-tf) are estimates until measured the same way:
# v3 keeps three full-resolution 32-channel maps alive (skip, conv, LADE projection, float32:
# ~384 B/px) plus the 1/2 and 1/4 levels; tiny keeps 16 channels; v2-tf is v2.
_BYTES_PER_PIXEL = {
    "eager": {"v2": 1536, "lite": 768, "lite2": 640, "lite3": 640,
              "animeganv3": 1024, "animeganv3-tiny": 512, "animeganv2-tf": 1536},
    # animeganv3 in onnxruntime: peak RSS of `convert --tile 0` (the shipped pruned hayao, 2 threads)
    # 284 MB at 600×400 and 885 MB at 1024², i.e. ~740 B per added pixel. 1536 (the estimate
    # before) tiled every 1024×683 photo, in eager PyTorch (no fixed-statistics graph for LADE):
    # 8.2 s and 1,129 MB peak instead of 2.4 s and 712 MB whole.
    "onnx": {"v2": 2176, "lite": 1152, "lite2": 640, "lite3": 640,
             "animeganv3": 768, "animeganv3-tiny": 768, "animeganv2-tf": 2176},
    "onnx-split": {"v2": 2176, "lite": 1152, "lite2": 640, "lite3": 272,
                   "animeganv3": 768, "animeganv3-tiny": 768, "animeganv2-tf": 2176},
    # animeganv3 in stages (issue 23): the float16 maps between stages, kept in a pool (156 B/px:
    # 164 MiB at 1024²), the float32 output and input (24), and one band's work (a constant).
    # The tiny one: its pool (e0, e2, the 1/4 level's input and output; ~100 B/px) and the input
    # and output; bench/bench_stages.py measured 294 → 320 MiB peak from 688×1024 to 1024², ~78 B
    # per added pixel.
    "onnx-staged": {"v2": 2176, "lite": 1152, "lite2": 640, "lite3": 272,
                    "animeganv3": 320, "animeganv3-tiny": 256, "animeganv2-tf": 2176},
    "onnx-fixed": {"v2": 4096, "lite": 2176, "lite2": 640, "lite3": 640,
                   "animeganv3": 1536, "animeganv3-tiny": 768, "animeganv2-tf": 4096},
}


def activation_bytes_per_pixel(arch: str, half: bool = False, graph: str = "eager") -> int:
    """Rough peak activation memory per input pixel for one image (measured, rounded up).

    Args:
        arch: ``v2``, ``lite``, ``lite2`` or ``lite3`` (anything else counts as ``v2``).
        half: computing in float16/bfloat16 (halves it).
        graph: what runs: ``eager`` (PyTorch), ``onnx``, ``onnx-split``, ``onnx-staged`` or
            ``onnx-fixed`` (onnxruntime's whole, two-part (:func:`has_local_decoder`), staged
            (:func:`has_staged_graphs`) or fixed-statistics graph).
    """
    table = _BYTES_PER_PIXEL.get(graph, _BYTES_PER_PIXEL["eager"])
    bpp = table.get(arch, table["v2"])
    return bpp // 2 if half else bpp
