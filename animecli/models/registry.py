"""The registry: builds a generator from its :class:`~animecli.models.spec.ArchSpec`, and tells
the architecture of a state dict from its keys (imports torch).

Network classes hold only the network; which file holds which weights is the
business of :mod:`animecli.weights`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
from torch import nn

from animecli.models.animeganv3 import AnimeGANv3Generator, AnimeGANv3TinyGenerator, GeneratorV2TF
from animecli.models.lite import GeneratorLite
from animecli.models.spec import Arch, ArchSpec
from animecli.models.v2 import GeneratorV2

__all__ = [
    "build_generator",
    "convert_layout",
    "count_macs",
    "detect_arch",
    "fit_widths",
    "lite2_to_lite",
    "lite_to_lite2",
    "v3_widths",
]


def build_generator(spec: ArchSpec) -> nn.Module:
    """Build an untrained generator, in eval mode, for ``spec``."""
    model: nn.Module
    if spec.arch is Arch.V2:
        model = GeneratorV2(spec.width, spec.align_corners, spec.fast_norm)
    elif spec.arch is Arch.V3:
        eps = 1e-5 if spec.norm_eps is None else spec.norm_eps
        attn_eps = 1e-9 if spec.attn_eps is None else spec.attn_eps
        model = AnimeGANv3Generator(round(32 * spec.width), eps, attn_eps, widths=spec.widths)
    elif spec.arch is Arch.V3_TINY:
        eps = 1e-5 if spec.norm_eps is None else spec.norm_eps
        model = AnimeGANv3TinyGenerator(round(16 * spec.width), spec.final_norm, eps, widths=spec.widths)
    elif spec.arch is Arch.V2_TF:
        model = GeneratorV2TF(spec.width, 1e-12 if spec.norm_eps is None else spec.norm_eps)
    else:
        model = GeneratorLite(spec.width, spec.fast_norm, slim_head=spec.arch in (Arch.LITE2, Arch.LITE3),
                              lean_norms=spec.arch is Arch.LITE3)
    return model.eval()


# The first conv of each architecture: its key tells the arch, its shape the width.
_STEM_KEYS = {Arch.V2: "block_a.0.1.weight", Arch.LITE: "stem.0.1.weight"}
# lite2 has lite's stem; its half-resolution ``reduce`` layer tells them apart;
# lite3 (lite2 without norms in its first conv and its decoder) has a biased first conv.
_LITE2_KEY = "reduce.0.weight"
_LITE3_KEY = "stem.0.1.bias"
# AnimeGANv3: the attention block (full) or the residual bottlenecks (tiny); the first conv's
# output channels are 32 × width (full) or 16 × width (tiny). animeganv2-tf has v2's keys:
# only its manifest entry (or the ONNX file it came from) tells it apart.
_V3_KEY = "attention.inp.weight"
_V3_TINY_KEY = "res.0.reduce.1.weight"
_V3_STEM = "enc.0.1.weight"


def detect_arch(state_dict: Mapping[str, torch.Tensor]) -> tuple[Arch, float] | None:
    """Guess (arch, width) from a state dict's keys, or ``None`` if it matches none."""
    if _V3_STEM in state_dict and (_V3_KEY in state_dict or _V3_TINY_KEY in state_dict):
        tiny = _V3_TINY_KEY in state_dict
        return (Arch.V3_TINY if tiny else Arch.V3), int(state_dict[_V3_STEM].shape[0]) / (16.0 if tiny else 32.0)
    for arch, key in _STEM_KEYS.items():
        if key in state_dict:
            if arch is Arch.LITE and _LITE2_KEY in state_dict:
                arch = Arch.LITE3 if _LITE3_KEY in state_dict else Arch.LITE2
            return arch, int(state_dict[key].shape[0]) / 32.0
    return None


# The conv whose output channels are each width slot of the AnimeGANv3 generators, in the order of
# their ``default_widths`` (``enc.i.1`` is block i's conv; the pad is ``.0``).
_WIDTH_KEYS = {
    Arch.V3: (*(f"enc.{i}.1.weight" for i in range(7)), *(f"dec.{i}.1.weight" for i in range(6)),
              "attention.inp.weight", "attention.key.weight", "attention.value.weight"),
    Arch.V3_TINY: (*(f"enc.{i}.1.weight" for i in range(9)),
                   *(f"res.{r}.{part}.1.weight" for r in range(2) for part in ("reduce", "conv")),
                   *(f"dec.{i}.1.weight" for i in range(11))),
}


def v3_widths(arch: Arch, state_dict: Mapping[str, torch.Tensor]) -> tuple[int, ...] | None:
    """Every layer's output channels of an ``animeganv3``/``animeganv3-tiny`` state dict (pruned or not),
    read from its conv weights' shapes; ``None`` for other archs or when a key is missing."""
    keys = _WIDTH_KEYS.get(arch)
    if keys is None or any(k not in state_dict or state_dict[k].dim() != 4 for k in keys):
        return None
    return tuple(int(state_dict[k].shape[0]) for k in keys)


def fit_widths(spec: ArchSpec, state_dict: Mapping[str, torch.Tensor]) -> ArchSpec:
    """``spec`` with the layer widths of a structurally pruned AnimeGANv3 state dict, else unchanged.

    A file at the release's widths (for ``spec.width``) keeps ``widths=None``; so does one whose
    keys do not fit (strict loading then explains what is wrong).
    """
    if spec.widths is not None:
        return spec
    found = v3_widths(spec.arch, state_dict)
    if found is None:
        return spec
    default = (AnimeGANv3Generator.default_widths(round(32 * spec.width)) if spec.arch is Arch.V3
               else AnimeGANv3TinyGenerator.default_widths(round(16 * spec.width)))
    return spec if found == default else dataclasses.replace(spec, widths=found)


# The last stage's three layers, by name, in each layout (lite2 runs the first at half resolution).
_LAST_STAGE = {Arch.LITE: ("up2.0.", "up2.1.", "up2.2."), Arch.LITE2: ("reduce.", "up2.0.", "up2.1.")}


def _rename_last_stage(state_dict: Mapping[str, torch.Tensor], src: Arch, dst: Arch) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        for old, new in zip(_LAST_STAGE[src], _LAST_STAGE[dst], strict=True):
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out


def lite_to_lite2(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a ``lite`` state dict's keys for ``lite2`` (a starting point for fine-tuning).

    The two share every layer; lite2 runs the first one of ``up2`` at half
    resolution as ``reduce``, so the same weights give a different (close)
    image until the student is fine-tuned.
    """
    return _rename_last_stage(state_dict, Arch.LITE, Arch.LITE2)


def lite2_to_lite(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`lite_to_lite2` (e.g. to start a ``lite`` student from a ``lite2`` one)."""
    return _rename_last_stage(state_dict, Arch.LITE2, Arch.LITE)


def convert_layout(state_dict: Mapping[str, torch.Tensor], arch: Arch) -> Mapping[str, torch.Tensor]:
    """``state_dict`` renamed for ``arch`` if it is the other one of lite / lite2, else unchanged."""
    found = detect_arch(state_dict)
    if found is not None and found[0] != arch and {found[0], arch} == {Arch.LITE, Arch.LITE2}:
        return _rename_last_stage(state_dict, found[0], arch)
    return state_dict


def count_macs(model: nn.Module, height: int, width: int) -> int:
    """Multiply-accumulates of the convolutions for one (1, 3, height, width) input.

    Only convolutions are counted: they are over 99% of the work.
    """
    total = 0

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(mod, nn.Conv2d)
        k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
        total += int(out.numel()) * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, height, width))
    finally:
        for h in handles:
            h.remove()
    return total
