"""Generator architectures, the fast normalisation, and the arch registry."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from animecli.models.norm import FastGroupNorm, pooled_stats, whole_image_stats
from animecli.models.registry import (
    build_generator,
    convert_layout,
    count_macs,
    detect_arch,
    lite2_to_lite,
    lite_to_lite2,
)
from animecli.models.spec import Arch, ArchSpec, describe
from tests.conftest import SHARED, needs_shared


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(1, 8, 16, 16), (3, 16, 37, 41), (2, 4, 5, 300)])
def test_fast_norm_matches_groupnorm(shape: tuple[int, int, int, int], channels_last: bool) -> None:
    torch.manual_seed(0)
    ref = nn.GroupNorm(1, shape[1])
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    fast = FastGroupNorm(shape[1])
    fast.load_state_dict(ref.state_dict(), strict=True)
    # An offset mean makes E[x²] - E[x]² cancellation visible if the statistics were sloppy.
    x = torch.randn(shape) * 3.0 + 5.0
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = ref(x)
    got = fast(x)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5), (got - expected).abs().max()
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_fast_norm_inplace_only_without_grad() -> None:
    norm = FastGroupNorm(4)
    norm.inplace = True
    x = torch.randn(1, 4, 8, 8)
    with torch.inference_mode():
        y = norm(x.clone())
    x_grad = x.clone().requires_grad_()
    y2 = norm(x_grad)
    y2.sum().backward()  # would raise if the autograd input had been overwritten
    assert x_grad.grad is not None
    assert torch.allclose(y, y2.detach(), atol=1e-6)


def test_whole_image_stats_float32_under_half_precision() -> None:
    x = (torch.randn(2, 8, 32, 32) * 50).to(torch.bfloat16)
    mean, var = whole_image_stats(x)
    assert mean.dtype == torch.float32 and var.dtype == torch.float32
    ref_var, ref_mean = torch.var_mean(x.float(), dim=(1, 2, 3), correction=0, keepdim=True)
    assert torch.allclose(mean, ref_mean, atol=1e-3)
    assert torch.allclose(var, ref_var, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_half_precision_stats_in_chunks_match_float64(
    dtype: torch.dtype, channels_last: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Half-precision inputs on the CPU are summed a few rows at a time (norm._half_row_sums);
    # a small chunk makes this map span many chunks, with a ragged last one.
    import animecli.models.norm as norm

    monkeypatch.setattr(norm, "_CHUNK_VALUES", 1000)
    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(3, 12, 20, 28, generator=gen) * 4 + 1.5).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    mean, var = whole_image_stats(x)
    ref_var, ref_mean = torch.var_mean(x.double(), dim=(1, 2, 3), correction=0, keepdim=True)
    assert mean.dtype == torch.float32 and var.dtype == torch.float32
    assert torch.allclose(mean.double(), ref_mean, rtol=1e-5, atol=1e-5)
    assert torch.allclose(var.double(), ref_var, rtol=1e-5)
    # And the fast norm built on them matches GroupNorm computed in float64.
    fast = FastGroupNorm(12)
    with torch.inference_mode():
        y = fast(x.clone())
    ref = torch.nn.functional.group_norm(x.double(), 1, eps=fast.eps)
    assert y.dtype == dtype
    assert (y.double() - ref).abs().max() < 0.02  # one half-precision rounding of values within ±4


def test_frozen_stats_are_used() -> None:
    norm = FastGroupNorm(2)
    x = torch.randn(1, 2, 4, 4)
    norm.set_fixed_stats((torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1) - norm.eps))
    assert torch.allclose(norm(x), x, atol=1e-6)


@pytest.mark.parametrize("arch", list(Arch))
@pytest.mark.parametrize("size", [(32, 32), (36, 52), (64, 20)])
def test_generators_keep_shape_and_range(arch: Arch, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = build_generator(ArchSpec(arch, width=0.125))
    m = describe(arch).size_multiple  # the converter pads to it; the v3 skips need it
    x = torch.rand(2, 3, *(-(-s // m) * m for s in size)) * 2 - 1
    with torch.inference_mode():
        y = model(x)
    assert y.shape == x.shape
    assert float(y.abs().max()) <= 1.0


@pytest.mark.parametrize("arch", list(Arch))
def test_fast_and_stock_norm_give_same_output(arch: Arch) -> None:
    torch.manual_seed(1)
    stock = build_generator(ArchSpec(arch, width=0.25, fast_norm=False))
    fast = build_generator(ArchSpec(arch, width=0.25, fast_norm=True))
    fast.load_state_dict(stock.state_dict(), strict=True)
    m = describe(arch).size_multiple
    x = torch.rand(1, 3, -(-40 // m) * m, 48) * 2 - 1
    with torch.inference_mode():
        assert torch.allclose(fast(x.clone()), stock(x.clone()), atol=1e-5)


def test_v2_full_size_parameter_count_and_cost() -> None:
    model = build_generator(ArchSpec(Arch.V2))
    assert sum(p.numel() for p in model.parameters()) == 2_143_552
    lite = build_generator(ArchSpec(Arch.LITE))
    v2_params = sum(p.numel() for p in model.parameters())
    lite_params = sum(p.numel() for p in lite.parameters())
    # The lite targets: at most 1/3 of v2's parameters and 1/5 of its multiply-adds.
    assert lite_params * 3 <= v2_params
    assert count_macs(lite, 128, 128) * 5 <= count_macs(model, 128, 128)


def _full_res_channels(model: nn.Module, size: int) -> list[int]:
    """Channel counts of every conv input that has the full input resolution."""
    seen: list[int] = []

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if inp[0].shape[-1] == size:
            seen.append(int(inp[0].shape[1]))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.inference_mode():
        model(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return seen


def test_lite2_has_no_64_channel_map_at_full_resolution() -> None:
    lite, lite2 = build_generator(ArchSpec(Arch.LITE)), build_generator(ArchSpec(Arch.LITE2))
    assert max(_full_res_channels(lite, 32)) == 64  # the check can see the difference
    assert max(_full_res_channels(lite2, 32)) == 32
    assert sum(p.numel() for p in lite2.parameters()) == sum(p.numel() for p in lite.parameters())
    assert count_macs(lite2, 128, 128) < count_macs(lite, 128, 128)


def test_lite_weights_rename_into_lite2() -> None:
    torch.manual_seed(0)
    lite = build_generator(ArchSpec(Arch.LITE, width=0.25))
    sd = lite_to_lite2(lite.state_dict())
    lite2 = build_generator(ArchSpec(Arch.LITE2, width=0.25))
    lite2.load_state_dict(sd, strict=True)
    assert torch.equal(lite2.state_dict()["reduce.1.weight"], lite.state_dict()["up2.0.1.weight"])
    assert torch.equal(lite2.state_dict()["up2.1.0.weight"], lite.state_dict()["up2.2.0.weight"])
    assert detect_arch(sd) == (Arch.LITE2, 0.25)
    back = lite2_to_lite(sd)
    assert back.keys() == lite.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in lite.state_dict().items())
    # What distill --init uses: converts between the two layouts, leaves anything else alone.
    assert convert_layout(lite.state_dict(), Arch.LITE2).keys() == sd.keys()
    assert convert_layout(sd, Arch.LITE).keys() == lite.state_dict().keys()
    assert convert_layout(sd, Arch.LITE2) is sd
    v2_sd = build_generator(ArchSpec(Arch.V2, width=0.25)).state_dict()
    assert convert_layout(v2_sd, Arch.LITE2) is v2_sd


def test_pooled_stats_are_the_stats_of_the_crops_together() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 3, 20, 20) * 3 + 1
    mean, var = pooled_stats(x, 0.0)
    together = x.permute(1, 0, 2, 3).reshape(1, 3, 4 * 20, 20)  # the four crops side by side
    ref_mean, ref_var = whole_image_stats(together)
    assert torch.allclose(mean, ref_mean, atol=1e-5) and torch.allclose(var, ref_var, atol=1e-4)
    # The margin is left out: make the borders extreme and the interior stats must not move.
    y = x.clone()
    y[:, :, :5], y[:, :, -5:], y[:, :, :, :5], y[:, :, :, -5:] = 100.0, 100.0, 100.0, 100.0
    m2, v2 = pooled_stats(y, 0.25)
    inner_m, inner_v = pooled_stats(x[:, :, 5:15, 5:15], 0.0)
    assert torch.allclose(m2, inner_m, atol=1e-5) and torch.allclose(v2, inner_v, atol=1e-4)


def test_detect_arch_and_width() -> None:
    for arch in Arch:
        sd = build_generator(ArchSpec(arch, width=0.25)).state_dict()
        # The TF-exact v2 has v2's keys and shapes (it differs in upsampling and eps, which
        # a state dict does not hold), so a bare state dict reads as v2; the ONNX importer
        # is what tells them apart.
        assert detect_arch(sd) == (Arch.V2 if arch is Arch.V2_TF else arch, 0.25)
    assert detect_arch({"foo.weight": torch.zeros(1)}) is None


@needs_shared("specs", "animeganv2_state_dict.json")
@pytest.mark.shared
def test_v2_matches_upstream_key_list_and_loads_strict() -> None:
    spec = json.loads((SHARED / "specs" / "animeganv2_state_dict.json").read_text())
    model = build_generator(ArchSpec(Arch.V2))
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    theirs = [(e["key"], e["shape"]) for e in spec["keys"]]
    assert ours == theirs
    torch.manual_seed(0)
    sd = {e["key"]: torch.randn(e["shape"]) for e in spec["keys"]}
    fresh = build_generator(ArchSpec(Arch.V2))
    fresh.load_state_dict(sd, strict=True)
    assert torch.equal(fresh.state_dict()["out_layer.0.weight"], sd["out_layer.0.weight"])
    assert sum(v.numel() for v in sd.values()) == spec["total_parameters"]


def test_v3_with_eps_zero_stays_finite_on_a_flat_image() -> None:
    """The fp16 Hayao file stores LADE eps 0: a one-colour image gave NaN (0/0) in every pixel."""
    from animecli.models.animeganv3 import AnimeGANv3Generator

    torch.manual_seed(0)
    zero = AnimeGANv3Generator(base=8, eps=0.0, attn_eps=0.0).eval()
    near = AnimeGANv3Generator(base=8, eps=1e-30, attn_eps=0.0).eval()  # no guard, eps ~ 0
    near.load_state_dict(zero.state_dict())
    with torch.inference_mode():
        for value in (-1.0, 0.0, 0.5):
            flat = zero(torch.full((1, 3, 32, 32), value))
            assert torch.isfinite(flat).all()
        x = torch.rand(1, 3, 32, 48) * 2 - 1
        assert torch.allclose(zero(x), near(x), atol=1e-5)  # the guard changes nothing elsewhere
