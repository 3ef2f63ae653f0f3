"""AnimeGANv3 in stages (issue 23): every level above 1/8 (the tiny one's: above 1/4) in bands,
whole-image norms exact.

The stages must give the whole graph's output (float32 maps between stages: to rounding;
float16, the default: within 1e-3), however the image is cut into bands; the row bookkeeping
(reflected edges, the upsampling's context) and the pooled moments are checked on their own;
the torch-free engine must use the cached stage graphs and give the PyTorch engine's pixels.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from animecli.inference import staged as stg
from animecli.inference.backends.onnx_export import can_stage, export_onnx, export_onnx_staged
from animecli.inference.ort_engine import OrtEngine, plan_lean
from animecli.inference.ort_session import OrtSession
from animecli.models.animeganv3 import AnimeGANv3Generator, AnimeGANv3TinyGenerator, upsample2x_asymmetric
from animecli.models.registry import build_generator
from animecli.models.spec import Arch, ArchSpec, has_staged_graphs
from animecli.options import Backend, EngineOptions, ModelChoice
from tests.conftest import assert_lean_convert_matches, make_photo, make_weights_dir

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

SIZES = [(64, 64), (72, 136), (200, 48), (128, 256)]
TINY_SIZES = [(64, 64), (80, 144), (208, 48), (128, 256)]  # multiples of 16


def _eps(model: torch.nn.Module, eps: float) -> None:
    model.eps = eps  # type: ignore[assignment]
    for mod in model.modules():
        if hasattr(mod, "proj"):
            mod.eps = eps  # type: ignore[assignment]


def _v3(eps: float = 1e-5, seed: int = 0) -> AnimeGANv3Generator:
    """A seeded AnimeGANv3 of width 1/4 (a few KB): outputs in the tanh's linear range."""
    torch.manual_seed(seed)
    model = build_generator(ArchSpec(Arch.V3, width=0.25)).eval()
    assert isinstance(model, AnimeGANv3Generator)
    _eps(model, eps)
    return model


def _tiny(eps: float = 1e-5, seed: int = 0) -> AnimeGANv3TinyGenerator:
    """A seeded tiny AnimeGANv3 (tiny_Cute's shape) of width 1/4, with its final LADE."""
    torch.manual_seed(seed)
    model = build_generator(ArchSpec(Arch.V3_TINY, width=0.25)).eval()
    assert isinstance(model, AnimeGANv3TinyGenerator) and model.final_norm
    _eps(model, eps)
    return model


def _image(h: int, w: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (1, 3, h, w)).astype(np.float32)


def _cpu(**kw: object) -> EngineOptions:
    return EngineOptions(**{"device": "cpu", "threads": 1, **kw})  # type: ignore[arg-type]


def test_only_animeganv3_runs_in_stages() -> None:
    for arch in Arch:
        spec = ArchSpec(arch, width=0.125)
        assert can_stage(build_generator(spec)) is has_staged_graphs(spec) is (arch in (Arch.V3, Arch.V3_TINY))
        assert (stg.plan_for(spec) is not None) is has_staged_graphs(spec)
    assert stg.plan_for(ArchSpec(Arch.V3_TINY)) is stg.TINY_PLAN and stg.plan_for(ArchSpec(Arch.V3)) is stg.V3_PLAN
    no_norm = ArchSpec(Arch.V3_TINY, width=0.125, final_norm=False)  # a pruned student without its LADE
    assert not has_staged_graphs(no_norm) and not can_stage(build_generator(no_norm))
    with pytest.raises(ValueError, match="AnimeGANv3"):
        export_onnx_staged(build_generator(no_norm))


@pytest.fixture(scope="module", params=[("v3", 1e-5), ("v3", 0.0), ("tiny", 1e-5), ("tiny", 0.0)],
                ids=["v3-eps1e-5", "v3-eps0", "tiny-eps1e-5", "tiny-eps0"])
def graphs(request: pytest.FixtureRequest) -> tuple[OrtSession, OrtSession, OrtSession]:
    """(whole graph, stages with float32 maps, stages with float16 maps) of one seeded model."""
    kind, eps = request.param
    model = _v3(eps=eps) if kind == "v3" else _tiny(eps=eps)
    return (OrtSession(export_onnx(model), Backend.ONNX, 1),
            OrtSession(export_onnx_staged(model, store=torch.float32), Backend.ONNX, 1),
            OrtSession(export_onnx_staged(model), Backend.ONNX, 1))


@pytest.mark.parametrize("size", range(4))
@pytest.mark.parametrize("band_bytes", [0, 30_000, 200_000])
def test_stages_give_the_whole_graph(graphs: tuple[OrtSession, ...], size: int, band_bytes: int) -> None:
    whole, exact, half = graphs
    assert exact.staged is not None and half.staged is not None
    height, width = (TINY_SIZES if exact.staged.plan is stg.TINY_PLAN else SIZES)[size]
    x = _image(height, width)
    want = whole.run_array(x)
    assert float(want.std()) > 0.02 and float(np.abs(want).max()) < 0.99  # not saturated: the test can fail
    got = stg.run_staged(exact._stages, exact.staged, x, band_bytes=band_bytes)
    assert float(np.abs(got - want).max()) < 2e-6
    got16 = stg.run_staged(half._stages, half.staged, x, band_bytes=band_bytes)
    err = float(np.abs(got16 - want).max())
    assert 0 < err < 1e-3  # float16 maps: close, and really float16


def test_bands_really_split_the_image() -> None:
    """With 30 kB of work per band a 128×256 image is cut into many bands at every level."""
    for kind in (stg.StageKind.SAME, stg.StageKind.DOWN, stg.StageKind.UP):
        assert stg.band_rows_for(kind, 16, 16, 256, 30_000) == stg.MIN_BAND_ROWS
    assert stg.band_rows_for(stg.StageKind.SAME, 3, 8, 256, 10**9) > 1000


def test_a_batch_runs_image_by_image(graphs: tuple[OrtSession, ...]) -> None:
    whole, exact, _ = graphs
    x = np.concatenate([_image(64, 96, seed=s) for s in (1, 2)])
    got = exact.run_array(x)
    assert got.shape == x.shape
    assert float(np.abs(got - whole.run_array(x)).max()) < 2e-6


@pytest.mark.parametrize("height", [8, 9, 40])
@pytest.mark.parametrize("halo", [1, 3])
def test_same_and_down_rows_reflect_like_the_network_pads(height: int, halo: int) -> None:
    column = np.arange(height)
    padded = np.pad(column, halo, mode="reflect")
    for top in range(0, height, 3):
        bottom = min(height, top + 3)
        rows = stg.source_rows(stg.StageKind.SAME, top, bottom, height, halo)
        assert rows.tolist() == padded[top : bottom + 2 * halo].tolist()
    if height % 2 == 0:
        down = np.pad(column, (1, 0), mode="reflect")  # ConvLReLU's stride 2: one row on top
        for top in range(0, height // 2, 2):
            bottom = min(height // 2, top + 2)
            rows = stg.source_rows(stg.StageKind.DOWN, top, bottom, height)
            assert rows.tolist() == down[2 * top : 2 * bottom + 1].tolist()


@pytest.mark.parametrize("height", [4, 6, 11])
def test_up_rows_give_the_upsampled_maps_reflected_rows(height: int) -> None:
    """Upsampling the gathered rows and dropping the first and last gives rows top-1 … bottom of
    the whole map's upsampling, reflect-padded by one row: what the next 3×3 conv reads."""
    h = torch.randn(1, 2, height, 5, dtype=torch.float64)
    want = F.pad(upsample2x_asymmetric(h), (0, 0, 1, 1), mode="reflect")
    for top in range(0, 2 * height, 4):
        bottom = min(2 * height, top + 4)
        rows = stg.source_rows(stg.StageKind.UP, top, bottom, height)
        got = upsample2x_asymmetric(h[:, :, torch.from_numpy(rows)])[:, :, 1:-1]
        assert torch.equal(got, want[:, :, top : bottom + 2])


def test_pooled_moments_are_the_whole_images() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 0.5, (4, 1000))
    x[2] = 7.0  # a flat channel
    t = rng.normal(-1.0, 2.0, (4, 1000))
    cuts = [0, 7, 400, 401, 1000]
    parts = []
    for a, b in itertools.pairwise(cuts):
        m = [v[:, a:b].mean(1) for v in (x, t)]
        parts.append((np.stack([m[0], ((x[:, a:b] - m[0][:, None]) ** 2).sum(1),
                                m[1], ((t[:, a:b] - m[1][:, None]) ** 2).sum(1)]), b - a))
    for eps in (1e-5, 0.0):
        scale, shift = stg.combine_moments(parts, eps)
        with np.errstate(divide="ignore"):
            want_scale = np.sqrt(t.var(1) + eps) / np.sqrt(x.var(1) + eps)
        if eps <= 0:
            want_scale[2] = 0.0
        assert np.isfinite(scale).all()
        np.testing.assert_allclose(scale.ravel(), want_scale, rtol=1e-6)
        np.testing.assert_allclose(shift.ravel(), t.mean(1) - x.mean(1) * want_scale, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("plan", "alive"), [(stg.V3_PLAN, 4), (stg.TINY_PLAN, 4)], ids=["v3", "tiny"])
def test_maps_alive_together_never_share_a_slot(plan: tuple[stg.Stage, ...], alive: int) -> None:
    slots = stg.map_slots(plan)
    born = {stage.output: i for i, stage in enumerate(plan) if not stage.final}
    dies = {name: i for i, stage in enumerate(plan) for name in stage.reads()}
    names = list(slots)
    for a in names:
        for b in names:
            overlap = a != b and born[a] <= dies[b] and born[b] <= dies[a]
            assert not (overlap and slots[a] == slots[b]), (a, b)
    # V3: 13 maps, at most 4 alive at once (e0 is recomputed for d5); tiny: 10 maps,
    # 4 alive at once (the skips e0 and e2 beside low's input and output)
    assert max(slots.values()) + 1 == alive


def test_the_pool_keeps_memory_between_images(graphs: tuple[OrtSession, ...]) -> None:
    _, exact, _ = graphs
    pool = stg.MapPool()
    assert exact.staged is not None
    stg.run_staged(exact._stages, exact.staged, _image(64, 96), pool=pool)
    held = pool.resident_bytes
    first = {k: id(v) for k, v in pool._buffers.items()}
    stg.run_staged(exact._stages, exact.staged, _image(64, 96, seed=5), pool=pool)
    stg.run_staged(exact._stages, exact.staged, _image(48, 64), pool=pool)  # smaller: fits
    assert pool.resident_bytes == held > 0 and {k: id(v) for k, v in pool._buffers.items()} == first
    stg.run_staged(exact._stages, exact.staged, _image(128, 96), pool=pool)
    assert pool.resident_bytes > held
    pool.clear()
    assert pool.resident_bytes == 0


def test_graphs_carry_their_eps() -> None:
    sg = export_onnx_staged(_v3(eps=0.0))
    session = OrtSession(stg.StagedGraph(sg.graphs, None), Backend.ONNX, 1)
    assert session.staged is not None and session.staged.eps == 0.0


@pytest.fixture(params=[Arch.V3, Arch.V3_TINY], ids=["v3", "tiny"])
def v3_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Path:
    """A weights folder whose default model is a seeded AnimeGANv3 (full size or tiny) of width 1/8."""
    return make_weights_dir(tmp_path, monkeypatch, (("tinyv3", request.param),))


def test_lean_plan_uses_the_stage_graphs(v3_dir: Path) -> None:
    from animecli.inference.torch_engine import Engine
    from animecli.weights.resolve import load_generator

    assert plan_lean(ModelChoice(), _cpu()) is None  # nothing cached yet
    loaded = load_generator(ModelChoice())
    engine = Engine(loaded.model, loaded.input_multiple, _cpu(backend=Backend.ONNX), loaded.spec.arch.value,
                    weights_sha256=loaded.sha256, arch_key=loaded.spec.key)
    plan = plan_lean(ModelChoice(), _cpu())
    want_plan = stg.plan_for(loaded.spec)
    assert want_plan is not None and plan is not None and plan.staged is not None
    assert len(plan.staged) == len(want_plan)
    lean = OrtEngine(plan, _cpu(), lambda: pytest.fail("no tiling expected"))  # type: ignore[arg-type,return-value]
    assert lean.session.staged is not None and engine.runner.staged is not None  # type: ignore[attr-defined]
    rng = np.random.default_rng(0)
    for shape in [(37, 58), (64, 60), (5, 9)]:
        batch = [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for _ in range(2)]
        got, want = lean.run_batch(batch), engine.run_batch(batch)
        for a, b in zip(got.images, want.images, strict=True):
            assert a is not None and b is not None and a.shape == (*shape, 3)
            assert np.array_equal(a, b)
    plan.staged[3].write_bytes(b"")  # a stage graph cut short (a full disk): not used, made again
    assert plan_lean(ModelChoice(), _cpu()) is None
    Engine(loaded.model, loaded.input_multiple, _cpu(backend=Backend.ONNX), loaded.spec.arch.value,
           weights_sha256=loaded.sha256, arch_key=loaded.spec.key)
    assert plan.staged[3].stat().st_size > 0 and plan_lean(ModelChoice(), _cpu()) is not None


def test_v3_convert_without_torch(tmp_path: Path, v3_dir: Path) -> None:
    """The default model's path: a second run converts without torch, in stages, same pixels
    (full size and tiny; the tall photo is padded to the tiny one's multiple of 16)."""
    src = tmp_path / "in"
    make_photo(src / "tall.png", (48, 150), seed=1)
    make_photo(src / "small.png", (30, 20), seed=2)
    setup = "from animecli.inference import staged\nstaged.BAND_BYTES = 40_000  # many bands"
    assert_lean_convert_matches(src, tmp_path, setup, ("tall.png", "small.png"))
