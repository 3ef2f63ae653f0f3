"""lite3 and the folding of a lite2 student into it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from animecli.models.norm import FastGroupNorm
from animecli.models.registry import build_generator, count_macs, detect_arch
from animecli.models.spec import Arch, ArchSpec
from animecli.training.fold import FOLDED_LAYERS, fold_lite2_into_lite3


def _lite2(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = build_generator(ArchSpec(Arch.LITE2, width=0.25))
    with torch.no_grad():  # trained norms are not the identity: make the fold do real work
        for mod in model.modules():
            if isinstance(mod, FastGroupNorm):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.3, 0.3)
    return model.eval()


def _photo(seed: int, size: int = 64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, 8, 8, generator=gen) * 1.6 - 0.8
    smooth = nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)
    return (smooth + 0.1 * torch.randn(1, 3, size, size, generator=gen)).clamp(-1, 1)


def test_lite3_normalises_only_in_the_encoder_below_full_resolution() -> None:
    model = build_generator(ArchSpec(Arch.LITE3, width=0.25))
    seen: list[tuple[str, int]] = []
    hooks = [m.register_forward_pre_hook(lambda m, a, name=name: seen.append((name, int(a[0].shape[-1]))))
             for name, m in model.named_modules() if isinstance(m, FastGroupNorm)]
    with torch.inference_mode():
        out = model(_photo(0, 64))
    for h in hooks:
        h.remove()
    assert {size for _, size in seen} == {32, 16}  # half and quarter resolution, never full
    assert {name.split(".")[0] for name, _ in seen} == {"stem", "down", "body"}  # no norm in the decoder
    lite2 = build_generator(ArchSpec(Arch.LITE2, width=0.25))
    assert len(seen) == sum(isinstance(m, FastGroupNorm) for m in lite2.modules()) - len(FOLDED_LAYERS)
    assert out.shape == (1, 3, 64, 64) and float(out.abs().max()) <= 1.0
    assert count_macs(model, 64, 64) == count_macs(lite2, 64, 64)  # same convolutions, fewer norms
    assert detect_arch(model.state_dict()) == (Arch.LITE3, 0.25)
    assert detect_arch(lite2.state_dict()) == (Arch.LITE2, 0.25)


def test_folding_reproduces_lite2_on_a_photo_with_the_typical_statistics() -> None:
    lite2 = _lite2(1)
    photo = _photo(2)
    # Folded at the statistics of this one photo, lite3 must give lite2's output for it exactly.
    sd3 = fold_lite2_into_lite3(lite2.state_dict(), photo)
    lite3 = build_generator(ArchSpec(Arch.LITE3, width=0.25))
    lite3.load_state_dict(sd3, strict=True)
    with torch.inference_mode():
        ref, got = lite2(photo), lite3(photo)
        other = _photo(3)
        ref_other, got_other = lite2(other), lite3(other)
    assert torch.allclose(got, ref, atol=1e-4)
    # Another photo has other statistics: close, not equal (what fine-tuning is for).
    assert not torch.allclose(got_other, ref_other, atol=1e-4)
    assert float((got_other - ref_other).abs().mean()) < 0.2
    # Layers that keep their norm keep their weights.
    kept = [k for k in sd3 if not any(k.startswith(name + ".") for name in FOLDED_LAYERS)]
    assert kept and all(torch.equal(sd3[k], lite2.state_dict()[k]) for k in kept)


def test_folding_refuses_other_layouts() -> None:
    v2 = build_generator(ArchSpec(Arch.V2, width=0.25)).state_dict()
    with pytest.raises(ValueError, match="lite2"):
        fold_lite2_into_lite3(v2, _photo(0))
