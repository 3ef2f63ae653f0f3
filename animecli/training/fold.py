"""Start a ``lite3`` student from a trained ``lite2`` one by folding norms into convolutions.

``lite3`` is ``lite2`` without the whole-image norms of its first conv and its
decoder. A norm computes ``(x - mean) / std * weight + bias`` with the image's own
``mean`` and ``std``; with the *typical* mean and std of that layer over real photos
in their place it is an affine map per channel, which the convolution before it
absorbs (scaled weights and a bias). The folded network reproduces the ``lite2``
student exactly for a photo whose statistics are typical, closely for the others;
a short fine-tuning against the teacher (``animecli distill --arch lite3 --init
LITE2.pt``) does the rest.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from animecli.models.norm import FastGroupNorm
from animecli.models.registry import build_generator, detect_arch
from animecli.models.spec import Arch, ArchSpec

# The lite2 layers that lose their norm in lite3: (conv, norm) are entries 1 and 2 of each.
FOLDED_LAYERS = ("stem.0", "up1.0", "up1.1", "reduce", "up2.0", "up2.1")


def _typical_stats(model: nn.Module, images: torch.Tensor) -> dict[str, tuple[float, float]]:
    """Mean over ``images`` of each folded norm's input mean and standard deviation."""
    sums: dict[str, list[float]] = {name: [0.0, 0.0] for name in FOLDED_LAYERS}
    handles = []
    for name in FOLDED_LAYERS:
        layer = model.get_submodule(name)
        assert isinstance(layer, nn.Sequential)
        norm = layer[2]
        assert isinstance(norm, FastGroupNorm | nn.GroupNorm)
        eps = float(norm.eps)

        def pre_hook(mod: nn.Module, args: tuple[torch.Tensor, ...], name: str = name, eps: float = eps) -> None:
            var, mean = torch.var_mean(args[0].detach().flatten(1), dim=1, correction=0)
            sums[name][0] += float(mean.double().sum())
            sums[name][1] += float((var.double() + eps).sqrt().sum())

        handles.append(norm.register_forward_pre_hook(pre_hook))
    try:
        with torch.inference_mode():
            for x in images:
                model(x.unsqueeze(0))
    finally:
        for h in handles:
            h.remove()
    n = float(images.shape[0])
    return {name: (s[0] / n, s[1] / n) for name, s in sums.items()}


def fold_lite2_into_lite3(state_dict: Mapping[str, torch.Tensor], images: torch.Tensor) -> dict[str, torch.Tensor]:
    """A ``lite3`` state dict that approximates the ``lite2`` student ``state_dict``.

    Args:
        state_dict: a trained ``lite2`` generator's weights.
        images: (P, 3, H, W) float32 photos in [-1, 1] whose statistics are typical
            of use (e.g. the distillation cache's inputs at the size that ships).

    Returns:
        The ``lite3`` weights: every folded conv's weight scaled by ``weight / std``
        per output channel and given the bias ``bias - mean * weight / std``.

    Raises:
        ValueError: ``state_dict`` is not a ``lite2`` state dict.
    """
    found = detect_arch(state_dict)
    if found is None or found[0] is not Arch.LITE2:
        raise ValueError("folding into lite3 needs a lite2 state dict (convert lite with convert_layout first)")
    width = found[1]
    lite2 = build_generator(ArchSpec(Arch.LITE2, width=width))
    lite2.load_state_dict(state_dict, strict=True)
    stats = _typical_stats(lite2, images.float())
    out = {k: v.detach().clone() for k, v in state_dict.items()}
    for name, (mean, std) in stats.items():
        gamma = out.pop(f"{name}.2.weight").double()
        beta = out.pop(f"{name}.2.bias").double()
        weight = out[f"{name}.1.weight"].double()
        scale = gamma / std
        out[f"{name}.1.weight"] = (weight * scale.view(-1, 1, 1, 1)).float()
        # A conv that already had a bias (none of these do) would add it before the norm.
        old_bias = out.pop(f"{name}.1.bias", None)
        shift = beta - mean * scale
        if old_bias is not None:
            shift = shift + old_bias.double() * scale
        out[f"{name}.1.bias"] = shift.float()
    return out
