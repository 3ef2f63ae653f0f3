"""Structured channel pruning of the AnimeGANv3 generators (full and tiny), ranked by measured output sensitivity.

Removing a channel means removing one output filter of the conv that makes it
(and, under a :class:`~animecli.models.animeganv3.LADE`, that channel of the
norm's 1×1 projection, both ways) and the matching input slice of every conv
that reads it. Channels that meet in an addition must go together: a
**group** is a set of layer outputs that are summed (the encoder feature and
the decoder conv of the same U-Net level; the residual stream through the
external attention or the tiny model's bottleneck blocks), and a channel is
kept or dropped in all of them at once. The result is a normal module of the
same class, built with narrower ``widths`` and the kept slices of the weights.

Criterion (why not filter norms): every conv of the full v3 generator is
followed by an instance-norm-like :class:`LADE`, which divides the filter's
scale away, so an L1/L2 filter ranking says little (removing the 12.5 % of
filters with the smallest L1 norm took ``captured`` on Shinkai to −3.2).
Instead each channel gets a multiplicative gate ``m_c = 1`` wherever its
values are read (after the block's activation, before a LADE too, after
every addition of its group), and the score is the linearised increase of the
squared error to the unpruned output when the gate goes to 0:
``‖∂y/∂m_c‖²`` summed over output pixels and photos (a Gauss–Newton estimate;
the first-order Taylor term ``a·∂L/∂a`` of MSE(y, teacher) is exactly zero at
the unpruned model, whose output *is* the teacher's). The squared norm of the
Jacobian column is estimated without one backward pass per channel by random
projections: for ``r ~ N(0, I)``, ``E[(rᵀ ∂y/∂m_c)²] = ‖∂y/∂m_c‖²``, so each
photo costs one forward and ``probes`` backward passes for all channels at
once. Scores are comparable within a group; every prunable group keeps the
same share of its channels (``1 - ratio``, rounded to ``multiple``).

Not pruned: the first conv's output channels and the last conv's input
channels (``keep_ends``; the RGB in/out convs stay whole) and the external
attention's memory units (the attention map is normalised across units, so
one unit cannot be removed without changing the others; at 1/8 resolution
they cost little).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from animecli.models.animeganv3 import LADE, AnimeGANv3Generator, AnimeGANv3TinyGenerator, ConvLReLU

__all__ = [
    "PrunableGenerator",
    "PrunePlan",
    "Spec",
    "apply_plan",
    "channel_importance",
    "compose",
    "feature_points",
    "filter_l1",
    "gated",
    "plan_pruning",
    "prune",
    "spec_for",
]

PrunableGenerator = AnimeGANv3Generator | AnimeGANv3TinyGenerator


@dataclass(frozen=True)
class Spec:
    """How one generator's channels hang together.

    Attributes:
        slot_groups: the group of each entry of ``model.widths``.
        slot_modules: per width slot, the module whose output carries that
            slot's channels, or ``""`` for a slot with no such module (memory units).
        extra_outputs: group → more modules whose outputs carry the group (the
            outputs of residual blocks, which add their input back).
        convs: (conv name, group of its output channels or ``None`` = RGB,
            group of its input channels or ``None`` = RGB), for every conv.
        fixed: groups never pruned.
        ends: the groups of the first conv's outputs and the last conv's inputs.
    """

    slot_groups: tuple[str, ...]
    slot_modules: tuple[str, ...]
    extra_outputs: dict[str, tuple[str, ...]]
    convs: tuple[tuple[str, str | None, str | None], ...]
    fixed: frozenset[str]
    ends: frozenset[str]

    def groups(self) -> list[str]:
        """Group names in width-slot order, each once."""
        return list(dict.fromkeys(self.slot_groups))

    def width(self, widths: Sequence[int], group: str) -> int:
        """The group's channel count in ``widths``."""
        return int(widths[self.slot_groups.index(group)])


def _block_convs(name: str, out: str, inp: str | None, norm: bool) -> list[tuple[str, str | None, str | None]]:
    convs: list[tuple[str, str | None, str | None]] = [(f"{name}.1", out, inp)]
    if norm:
        convs.append((f"{name}.2.proj", out, out))
    return convs


def _spec_v3() -> Spec:
    enc = ("s1", "enc1", "s2", "enc3", "s4", "enc5", "h")
    dec = ("s4", "dec1", "s2", "dec3", "s1", "dec5")
    slot_groups = (*enc, *dec, "attn_inner", "attn_memory", "attn_value")
    slot_modules = (*(f"enc.{i}" for i in range(7)), *(f"dec.{i}" for i in range(6)),
                    "attention.inp", "", "attention.value")
    convs: list[tuple[str, str | None, str | None]] = []
    for i, g in enumerate(enc):
        convs += _block_convs(f"enc.{i}", g, enc[i - 1] if i else None, True)
    convs += [("attention.inp", "attn_inner", "h"), ("attention.key", "attn_memory", "attn_inner"),
              ("attention.value", "attn_value", "attn_memory"), ("attention.out", "h", "attn_value")]
    for i, g in enumerate(dec):
        convs += _block_convs(f"dec.{i}", g, dec[i - 1] if i else "h", True)
    convs.append(("out_layer.1", None, "dec5"))
    return Spec(slot_groups, slot_modules, {"h": ("attention",)}, tuple(convs),
                frozenset({"attn_memory"}), frozenset({"s1", "dec5"}))


def _spec_tiny(final_norm: bool) -> Spec:
    enc = ("s1", "enc1", "s2", "enc3", "s4", "enc5", "s8", "enc7", "h")
    res = ("res0_reduce", "res0_conv", "res1_reduce", "res1_conv")
    dec = ("s8", "dec1", "dec2", "s4", "dec4", "dec5", "s2", "dec7", "dec8", "s1", "dec10")
    slot_modules = (*(f"enc.{i}" for i in range(9)), "res.0.reduce", "res.0.conv", "res.1.reduce", "res.1.conv",
                    *(f"dec.{i}" for i in range(11)))
    convs: list[tuple[str, str | None, str | None]] = []
    for i, g in enumerate(enc):
        convs += _block_convs(f"enc.{i}", g, enc[i - 1] if i else None, False)
    for k in range(2):
        red, mid = res[2 * k], res[2 * k + 1]
        convs += [(f"res.{k}.reduce.1", red, "h"), (f"res.{k}.conv.1", mid, red), (f"res.{k}.expand", "h", mid)]
    for i, g in enumerate(dec):
        convs += _block_convs(f"dec.{i}", g, dec[i - 1] if i else "h", final_norm and i == len(dec) - 1)
    convs.append(("out_layer.1", None, "dec10"))
    return Spec((*enc, *res, *dec), slot_modules, {"h": ("res.0", "res.1")}, tuple(convs),
                frozenset(), frozenset({"s1", "dec10"}))


def spec_for(model: nn.Module) -> Spec:
    """The :class:`Spec` of a v3 or tiny v3 generator.

    Raises:
        TypeError: any other module.
    """
    if isinstance(model, AnimeGANv3Generator):
        return _spec_v3()
    if isinstance(model, AnimeGANv3TinyGenerator):
        return _spec_tiny(model.final_norm)
    raise TypeError(f"pruning supports AnimeGANv3Generator and AnimeGANv3TinyGenerator, not {type(model).__name__}")


def _prunable(spec: Spec, keep_ends: bool) -> list[str]:
    skip = spec.fixed | (spec.ends if keep_ends else frozenset())
    return [g for g in spec.groups() if g not in skip]


def _gate_points(model: nn.Module, spec: Spec) -> dict[str, list[nn.Module]]:
    """Group → modules whose outputs carry its channels (a LADE block's conv too: the norm reads it)."""
    points: dict[str, list[nn.Module]] = {g: [] for g in spec.groups()}
    for group, name in zip(spec.slot_groups, spec.slot_modules, strict=False):
        if not name:
            continue
        mod = model.get_submodule(name)
        points[group].append(mod)
        if isinstance(mod, ConvLReLU) and isinstance(mod[2], LADE):
            # Removing the channel also removes it from the LADE projection's input (the other channels' μt, σt).
            points[group].append(mod[1])
    for group, names in spec.extra_outputs.items():
        points[group] += [model.get_submodule(n) for n in names]
    return points


@contextmanager
def gated(model: nn.Module, gates: dict[str, torch.Tensor]) -> Iterator[None]:
    """Multiply each group's channels by ``gates[group]`` ((C,) tensor) wherever they are read, inside the block.

    A gate of 0 gives exactly the output of the model with that channel removed
    (except for the attention's memory units, which are never gated).
    """
    spec = spec_for(model)
    points = _gate_points(model, spec)
    handles = []

    def hook_for(gate: torch.Tensor):  # type: ignore[no-untyped-def]
        def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> torch.Tensor:
            return out * gate.view(1, -1, 1, 1)
        return hook

    try:
        for group, gate in gates.items():
            for mod in points[group]:
                handles.append(mod.register_forward_hook(hook_for(gate)))
        yield
    finally:
        for h in handles:
            h.remove()


def channel_importance(model: PrunableGenerator, photos: Sequence[torch.Tensor], probes: int = 4,
                       seed: int = 0, keep_ends: bool = True) -> dict[str, torch.Tensor]:
    """Each prunable channel's estimated output damage if removed (see the module docstring).

    Args:
        model: the generator (not modified; eval mode is used).
        photos: (N, 3, H, W) tensors in [-1, 1], H and W multiples of ``model.size_multiple``.
        probes: random projections per photo.
        seed: seeds the projections.
        keep_ends: leave out the groups of the first conv's outputs and the last conv's inputs.

    Returns:
        group → (C,) float64 scores: the estimated increase of the summed
        squared output error per output element (i.e. of the MSE), averaged over photos.
    """
    spec = spec_for(model)
    widths = model.widths
    gates = {g: torch.ones(spec.width(widths, g), requires_grad=True) for g in _prunable(spec, keep_ends)}
    scores = {g: torch.zeros(t.shape[0], dtype=torch.float64) for g, t in gates.items()}
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    count = 0
    try:
        with gated(model, gates), torch.enable_grad():
            for x in photos:
                y = model(x.float())
                for k in range(probes):
                    r = torch.randn(y.shape, generator=gen)
                    grads = torch.autograd.grad((y * r).sum(), list(gates.values()), retain_graph=k < probes - 1)
                    for g, gr in zip(gates, grads, strict=False):
                        scores[g] += gr.double() ** 2 / y.numel()
                count += 1
    finally:
        model.train(was_training)
    return {g: s / max(1, count * probes) for g, s in scores.items()}


def filter_l1(model: PrunableGenerator, keep_ends: bool = True) -> dict[str, torch.Tensor]:
    """The baseline criterion: each channel's summed L1 norm of the filters that produce it.

    Only for comparison (``bench/prune_pareto.py --l1-baseline``): behind a LADE
    the norm divides the filter's scale away, so this ranking is close to arbitrary there.
    """
    spec = spec_for(model)
    prunable = set(_prunable(spec, keep_ends))
    scores = {g: torch.zeros(spec.width(model.widths, g), dtype=torch.float64) for g in prunable}
    for name, out_g, in_g in spec.convs:
        conv = model.get_submodule(name)
        if out_g in prunable and out_g != in_g and isinstance(conv, nn.Conv2d):  # producers, not LADE projections
            scores[out_g] += conv.weight.detach().abs().sum(dim=(1, 2, 3)).double()
    return scores


@dataclass(frozen=True)
class PrunePlan:
    """Which channels of each group a pruned model keeps.

    Attributes:
        kept: group → sorted indices (into the model's current channels) kept.
        widths: the pruned model's ``widths``.
        scores: the importance scores the plan was made from (empty for ratio 0).
    """

    kept: dict[str, torch.Tensor]
    widths: tuple[int, ...]
    scores: dict[str, torch.Tensor]


def _target(width: int, reference: int, ratio: float, multiple: int) -> int:
    want = reference * (1.0 - ratio)
    n = round(want / multiple) * multiple if multiple > 1 else round(want)
    return max(1, min(width, max(n, min(width, multiple))))


def plan_pruning(model: PrunableGenerator, ratio: float, photos: Sequence[torch.Tensor], *,
                 keep_ends: bool = True, multiple: int = 1, reference: Sequence[int] | None = None,
                 probes: int = 4, seed: int = 0, criterion: str = "sensitivity") -> PrunePlan:
    """Choose the channels to keep.

    Args:
        model: the generator.
        ratio: share of each prunable group's channels to remove, in [0, 1).
        photos: see :func:`channel_importance` (unused when nothing is removed).
        keep_ends: see :func:`channel_importance`.
        multiple: round kept counts to multiples of this (CPU kernels like 8).
        reference: the widths ``ratio`` is relative to (default: the model's
            own); pass the unpruned widths to prune gradually towards a total ratio.
        probes, seed: see :func:`channel_importance`.
        criterion: ``"sensitivity"`` (:func:`channel_importance`, the default) or
            ``"l1"`` (:func:`filter_l1`, a baseline for comparison).

    Raises:
        ValueError: ``ratio`` outside [0, 1).
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"pruning ratio must be in [0, 1), got {ratio}")
    spec = spec_for(model)
    widths = model.widths
    ref = widths if reference is None else tuple(reference)
    targets = {g: _target(spec.width(widths, g), spec.width(ref, g), ratio, multiple)
               for g in _prunable(spec, keep_ends)}
    kept = {g: torch.arange(spec.width(widths, g)) for g in spec.groups()}
    scores: dict[str, torch.Tensor] = {}
    if any(n < spec.width(widths, g) for g, n in targets.items()):
        if criterion == "l1":
            scores = filter_l1(model, keep_ends)
        elif criterion == "sensitivity":
            scores = channel_importance(model, photos, probes, seed, keep_ends)
        else:
            raise ValueError(f"criterion must be 'sensitivity' or 'l1', got {criterion!r}")
        for g, n in targets.items():
            # Highest scores stay; sorted so the kept channels keep their order (ratio 0 is the identity).
            kept[g] = torch.sort(torch.topk(scores[g], n).indices).values
    new_widths = tuple(int(kept[g].numel()) for g in spec.slot_groups)
    return PrunePlan(kept, new_widths, scores)


def _rebuild(model: PrunableGenerator, widths: tuple[int, ...]) -> PrunableGenerator:
    if isinstance(model, AnimeGANv3Generator):
        return AnimeGANv3Generator(eps=model.eps, attn_eps=model.attn_eps, widths=widths)
    return AnimeGANv3TinyGenerator(final_norm=model.final_norm, eps=model.eps, widths=widths)


@torch.no_grad()
def apply_plan(model: PrunableGenerator, plan: PrunePlan) -> PrunableGenerator:
    """A new model of ``model``'s class with ``plan.widths`` and the kept slices of every conv.

    Raises:
        ValueError: the model has a conv the spec does not describe (a bug, not user input).
    """
    spec = spec_for(model)
    new = _rebuild(model, plan.widths)
    described = {name for name, _, _ in spec.convs}
    actual = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    if described != actual:
        raise ValueError(f"pruning spec and model disagree on convs: {sorted(described ^ actual)}")
    for name, out_g, in_g in spec.convs:
        old_conv = model.get_submodule(name)
        new_conv = new.get_submodule(name)
        assert isinstance(old_conv, nn.Conv2d) and isinstance(new_conv, nn.Conv2d)
        w = old_conv.weight
        b = old_conv.bias
        if out_g is not None:
            w = w[plan.kept[out_g]]
            b = None if b is None else b[plan.kept[out_g]]
        if in_g is not None:
            w = w[:, plan.kept[in_g]]
        new_conv.weight.copy_(w)
        if b is not None and new_conv.bias is not None:
            new_conv.bias.copy_(b)
    return new.train(model.training)


def prune(model: PrunableGenerator, ratio: float, photos: Sequence[torch.Tensor], **kwargs: object
          ) -> PrunableGenerator:
    """Structurally prune ``model``: :func:`plan_pruning` (same keyword arguments) then :func:`apply_plan`.

    Returns:
        a smaller module of the same class (``ratio`` 0: the same weights, the same output).
    """
    plan = plan_pruning(model, ratio, photos, **kwargs)  # type: ignore[arg-type]
    return apply_plan(model, plan)


def compose(first: dict[str, torch.Tensor], then: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Kept indices of two pruning steps in a row, as indices into the original channels."""
    return {g: first[g][then[g]] for g in first}


def feature_points(model: nn.Module) -> list[tuple[str, str]]:
    """(module name, group) of every layer output worth a hint loss: each block's output."""
    spec = spec_for(model)
    return [(name, g) for g, name in zip(spec.slot_groups, spec.slot_modules, strict=False) if name]
