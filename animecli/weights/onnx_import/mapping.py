"""Which of our generators a file's facts describe, and its initializers as that module's state dict.

A candidate module is built from the facts (family, base width, eps); its
convs, in registration order (= the order the files run them), must have
exactly the file's conv signatures (shapes, strides, groups, padding). Then
the weights are copied over one to one and loaded with ``strict=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from animecli.models.animeganv3 import AnimeGANv3Generator, AnimeGANv3TinyGenerator, GeneratorV2TF
from animecli.models.norm import FastGroupNorm
from animecli.models.spec import Arch
from animecli.weights.onnx_import.graph import refuse
from animecli.weights.onnx_import.recognise import ConvFact, GraphFacts, NormKind


@dataclass(frozen=True)
class Choice:
    """A family and the constructor arguments read from the file."""

    arch: Arch
    base: int
    eps: float
    attn_eps: float
    final_norm: bool

    def build(self) -> nn.Module:
        """The untrained module, in eval mode."""
        model: nn.Module
        if self.arch is Arch.V3:
            model = AnimeGANv3Generator(self.base, self.eps, self.attn_eps)
        elif self.arch is Arch.V3_TINY:
            model = AnimeGANv3TinyGenerator(self.base, self.final_norm, self.eps)
        else:
            model = GeneratorV2TF(self.base / 32.0, self.eps)
        return model.eval()


def module_conv_signatures(model: nn.Module) -> list[tuple[int, ...]]:
    """:meth:`ConvFact.signature` of each conv of ``model``, in registration order.

    A conv's reflect padding is that of an ``nn.ReflectionPad2d`` registered
    right before it (ours and ``GeneratorV2`` always put it there).
    """
    sigs: list[tuple[int, ...]] = []
    previous: nn.Module | None = None
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            pad = (0, 0, 0, 0)
            if isinstance(previous, nn.ReflectionPad2d):
                left, right, top, bottom = (int(v) for v in previous.padding)
                pad = (left, right, top, bottom)
            own = m.padding if isinstance(m.padding, tuple) else (0, 0)
            zero = any(int(p) for p in own)
            if zero:
                pad = (int(own[1]), int(own[1]), int(own[0]), int(own[0]))
            o, i, kh, kw = m.weight.shape
            sigs.append((o, i, kh, kw, int(m.stride[0]), m.groups, *pad, int(zero)))
        previous = m
    return sigs


def _family(facts: GraphFacts) -> Arch | None:
    slopes_ok = facts.leaky_slopes == frozenset({0.2})
    if not (facts.tanh_out and slopes_ok and facts.upsamples == facts.downsamples > 0):
        return None
    if facts.attention and facts.norm is NormKind.INSTANCE and facts.downsamples == 3:
        return Arch.V3
    if not facts.attention and facts.norm in (NormKind.INSTANCE, NormKind.NONE) and facts.downsamples == 4:
        return Arch.V3_TINY
    if not facts.attention and facts.norm is NormKind.LAYER and facts.downsamples == 2:
        return Arch.V2_TF
    return None


def _describe(facts: GraphFacts) -> str:
    return (f"{len(facts.convs)} convs ({facts.downsamples} stride-2), {facts.upsamples} resizes, "
            f"norms: {facts.norm.value}, attention: {'yes' if facts.attention else 'no'}, "
            f"tanh output: {'yes' if facts.tanh_out else 'no'}")


def choose(facts: GraphFacts, path: Path | str) -> Choice:
    """The generator ``facts`` describe.

    Raises:
        WeightsError: no family fits, or the convs differ from that family's (one line).
    """
    arch = _family(facts)
    if arch is None:
        raise refuse(path, f"found {_describe(facts)}: not a known generator")
    base = int(facts.convs[0].weight.shape[0])
    default_eps = 1e-12 if arch is Arch.V2_TF else 1e-5
    choice = Choice(arch, base,
                    default_eps if facts.norm_eps is None else facts.norm_eps,
                    1e-9 if facts.attn_eps is None else facts.attn_eps,
                    final_norm=facts.norm is NormKind.INSTANCE)
    want = module_conv_signatures(choice.build())
    got = [c.signature() for c in facts.convs]
    if len(want) != len(got):
        raise refuse(path, f"found {_describe(facts)}; {arch.value} with base {base} has {len(want)} convs")
    for i, (w, f) in enumerate(zip(want, got, strict=True)):
        if w != f:
            raise refuse(path, f"conv {i} is {_sig(f)}, {arch.value} with base {base} has {_sig(w)} there")
    return choice


def _sig(s: tuple[int, ...]) -> str:
    o, i, kh, kw, stride, groups, left, right, top, bottom, _zero = s
    return f"{o}x{i}x{kh}x{kw} stride {stride} groups {groups} pad l{left} r{right} t{top} b{bottom}"


def state_dict_for(model: nn.Module, facts: GraphFacts, path: Path | str) -> dict[str, torch.Tensor]:
    """The file's parameters under ``model``'s state-dict keys (float32, detached copies).

    A file conv without a bias gets zeros where our conv has one; a file bias
    where our conv has none must be all zeros (exporters add them).

    Raises:
        WeightsError: a nonzero bias has nowhere to go, or the layer norms' affine
            parameters do not match the module's norms (one line).
    """
    sd: dict[str, torch.Tensor] = {}
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    for (name, m), fact in zip(convs, facts.convs, strict=True):
        sd[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(fact.weight)).clone()
        _bias(sd, name, m, fact, path)
    norms = [(name, m) for name, m in model.named_modules() if isinstance(m, (FastGroupNorm, nn.GroupNorm))]
    if norms:
        if len(norms) != len(facts.layer_norm_affine):
            raise refuse(path, f"found {len(facts.layer_norm_affine)} layer-norm scale/shift pairs, "
                               f"the generator has {len(norms)} norms")
        for (name, norm), (gamma, beta) in zip(norms, facts.layer_norm_affine, strict=True):
            channels = norm.weight.numel()
            if gamma.size != channels or beta.size != channels:
                raise refuse(path, f"layer norm {name} has {gamma.size} scales, {channels} channels expected")
            sd[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(gamma, np.float32)).clone()
            sd[f"{name}.bias"] = torch.from_numpy(np.ascontiguousarray(beta, np.float32)).clone()
    return sd


def _bias(sd: dict[str, torch.Tensor], name: str, m: nn.Conv2d, fact: ConvFact, path: Path | str) -> None:
    if m.bias is not None:
        b = np.zeros(m.out_channels, np.float32) if fact.bias is None else fact.bias
        sd[f"{name}.bias"] = torch.from_numpy(np.ascontiguousarray(b, np.float32)).clone()
    elif fact.bias is not None and np.any(fact.bias != 0):
        raise refuse(path, f"conv {name} has a nonzero bias in the file, and this generator's conv has none")
