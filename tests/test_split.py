"""lite3 in two graphs: the encoder on the whole image, the norm-free decoder band by band.

The bands must give exactly the whole image's output (each carries rows of context
that are computed and dropped), the torch-free engine must use the two graphs once the
first run has cached them, and its pixels must equal the PyTorch engine's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from animecli.inference import ort_session as ort
from animecli.inference.backends.onnx_export import can_split, export_onnx, export_onnx_split
from animecli.inference.ort_engine import OrtEngine, plan_lean
from animecli.inference.ort_session import OrtSession, SplitGraph
from animecli.models.registry import build_generator
from animecli.models.spec import Arch, ArchSpec, has_local_decoder
from animecli.options import Backend, EngineOptions, ModelChoice
from tests.conftest import assert_lean_convert_matches, make_photo, make_weights_dir, tiny_state_dict

pytest.importorskip("onnxruntime")



@pytest.fixture
def lite3_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_weights_dir(tmp_path, monkeypatch, (("tiny3", Arch.LITE3), ("tiny", Arch.LITE)))


def _tiny_lite3() -> torch.nn.Module:
    model = build_generator(ArchSpec(Arch.LITE3, width=0.125))
    model.load_state_dict(tiny_state_dict(Arch.LITE3, seed=3))
    return model.eval()


def _cpu(**kw: object) -> EngineOptions:
    return EngineOptions(**{"device": "cpu", "threads": 1, **kw})  # type: ignore[arg-type]


def _small_bands(monkeypatch: pytest.MonkeyPatch, rows: int, width: int) -> None:
    monkeypatch.setattr(ort, "MIN_BAND_ROWS", 4)
    monkeypatch.setattr(ort, "BAND_PIXELS", rows * width)


def test_only_lite3_splits() -> None:
    for arch in Arch:
        model = build_generator(ArchSpec(arch, width=0.125))
        assert can_split(model) is has_local_decoder(arch) is (arch is Arch.LITE3)
    with pytest.raises(ValueError, match="norm-free decoder"):
        export_onnx_split(build_generator(ArchSpec(Arch.LITE2, width=0.125)))


def test_decode_of_encode_is_forward() -> None:
    model = _tiny_lite3()
    x = torch.rand(2, 3, 36, 52, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model(x), model.decode(model.encode(x), x))


@pytest.mark.parametrize(("height", "width", "rows"), [(36, 52, 8), (100, 44, 12), (64, 64, 32), (20, 28, 64)])
def test_bands_give_the_whole_image(monkeypatch: pytest.MonkeyPatch, height: int, width: int, rows: int) -> None:
    model = _tiny_lite3()
    whole = OrtSession(export_onnx(model), Backend.ONNX, threads=1)
    split = OrtSession(SplitGraph(*export_onnx_split(model)), Backend.ONNX, threads=1)
    x = (np.random.default_rng(height).random((2, 3, height, width), dtype=np.float32) * 2 - 1)
    want = whole.run_array(x)
    _small_bands(monkeypatch, rows, width)
    assert ort.band_rows(height, width) == rows
    got = split.run_array(x)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    with torch.no_grad():
        eager = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, eager, rtol=0, atol=1e-5)


def test_a_batch_larger_than_a_band_runs_image_by_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """--batch-size N must not hold N images' maps on a CPU: a batch larger than a band runs
    one image (and one band of it) at a time, with the same result."""
    model = _tiny_lite3()
    split = OrtSession(SplitGraph(*export_onnx_split(model)), Backend.ONNX, threads=1)
    x = (np.random.default_rng(5).random((3, 3, 32, 40), dtype=np.float32) * 2 - 1)
    want = split.run_array(x)  # the default band is far larger: one call for the batch
    seen: dict[str, list[tuple[int, ...]]] = {"encoder": [], "decoder": []}
    for part, session in (("encoder", split.session), ("decoder", split._decoder)):
        def spy(names: list[str], feed: dict[str, np.ndarray], *args: object,
                _real: Any = session.run, _part: str = part) -> Any:
            seen[_part].append(feed["input"].shape)
            return _real(names, feed, *args)

        monkeypatch.setattr(session, "run", spy)
    monkeypatch.setattr(ort, "MIN_BAND_ROWS", 4)
    for band_pixels, decoder_calls in ((3 * 32 * 40, 1), (32 * 40, 3), (16 * 40, 6)):
        monkeypatch.setattr(ort, "BAND_PIXELS", band_pixels)
        seen["encoder"].clear()
        seen["decoder"].clear()
        np.testing.assert_allclose(split.run_array(x), want, rtol=0, atol=1e-6)
        assert len(seen["decoder"]) == decoder_calls, seen
        if decoder_calls > 1:  # the batch did not fit: one image at a time, through both graphs
            assert [s[0] for s in seen["encoder"]] == [1, 1, 1], seen
            assert all(s[0] == 1 and s[2] <= band_pixels // 40 + 2 * ort.BAND_HALO for s in seen["decoder"])


def test_too_little_context_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    """The margin matters: with 8 rows of context instead of BAND_HALO, band edges differ
    from the whole image by more than the tolerance above (here ~6e-6; 16 rows and more
    give exactly the whole image's values with these weights)."""
    model = _tiny_lite3()
    whole = OrtSession(export_onnx(model), Backend.ONNX, threads=1)
    split = OrtSession(SplitGraph(*export_onnx_split(model)), Backend.ONNX, threads=1)
    x = (np.random.default_rng(7).random((1, 3, 96, 48), dtype=np.float32) * 2 - 1)
    want = whole.run_array(x)
    _small_bands(monkeypatch, 16, 48)
    np.testing.assert_allclose(split.run_array(x), want, rtol=0, atol=1e-6)
    monkeypatch.setattr(ort, "BAND_HALO", 8)
    assert float(np.abs(split.run_array(x) - want).max()) > 1e-6


def test_lean_plan_uses_the_two_graphs(lite3_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from animecli.inference.torch_engine import Engine
    from animecli.weights.resolve import load_generator

    assert plan_lean(ModelChoice(), _cpu()) is None  # nothing cached yet
    loaded = load_generator(ModelChoice())
    engine = Engine(loaded.model, loaded.input_multiple, _cpu(backend=Backend.ONNX), loaded.spec.arch.value,
                    weights_sha256=loaded.sha256, arch_key=loaded.spec.key)
    plan = plan_lean(ModelChoice(), _cpu())
    assert plan is not None and plan.split is not None and all(p.stat().st_size > 0 for p in plan.split)
    lean = OrtEngine(plan, _cpu(), lambda: pytest.fail("no tiling expected"))  # type: ignore[arg-type,return-value]
    assert lean.session.split and engine.runner.split  # type: ignore[attr-defined]
    _small_bands(monkeypatch, 8, 60)
    rng = np.random.default_rng(0)
    for shape in [(37, 58), (64, 60), (5, 9)]:
        batch = [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for _ in range(2)]
        got, want = lean.run_batch(batch), engine.run_batch(batch)
        for a, b in zip(got.images, want.images, strict=True):
            assert a is not None and b is not None and a.shape == (*shape, 3)
            assert np.array_equal(a, b)
    plan.split[1].write_bytes(b"")  # a decoder graph cut short (a full disk): not used, made again
    assert plan_lean(ModelChoice(), _cpu()) is None
    Engine(loaded.model, loaded.input_multiple, _cpu(backend=Backend.ONNX), loaded.spec.arch.value,
           weights_sha256=loaded.sha256, arch_key=loaded.spec.key)
    assert plan.split[1].stat().st_size > 0 and plan_lean(ModelChoice(), _cpu()) is not None


def test_both_engines_tile_lite3_by_its_banded_memory(lite3_dir: Path) -> None:
    """The banded lite3 graph needs ~254 B/px, not the whole graph's 640: with the same budget
    it runs larger images whole, and both engines draw the line at the same size."""
    from animecli.inference.torch_engine import Engine
    from animecli.models.spec import activation_bytes_per_pixel
    from animecli.weights.resolve import load_generator

    opts = _cpu(backend=Backend.ONNX, max_memory_mb=1)
    loaded = load_generator(ModelChoice())
    engine = Engine(loaded.model, loaded.input_multiple, opts, loaded.spec.arch.value,
                    weights_sha256=loaded.sha256, arch_key=loaded.spec.key)
    plan = plan_lean(ModelChoice(), opts)
    assert plan is not None
    lean = OrtEngine(plan, opts, lambda: pytest.fail("not run"))  # type: ignore[arg-type,return-value]
    bpp = activation_bytes_per_pixel("lite3", graph="onnx-split")
    assert bpp < activation_bytes_per_pixel("lite3", graph="onnx")
    side = int((2**20 / bpp) ** 0.5) // 4 * 4  # the largest square under the 1 MB budget, to 4 px
    assert side * side * activation_bytes_per_pixel("lite3", graph="onnx") > 2**20  # tiled before
    for h, w, tiled in ((side, side, False), (side + 8, side + 8, True)):
        assert lean.needs_tiling(h, w) is tiled
        assert (engine.tile_plan_for(h, w) is not None) is tiled


def test_lite3_convert_without_torch(tmp_path: Path, lite3_dir: Path) -> None:
    """The default model's path: a second run converts without torch, in bands, same JPEGs."""
    src = tmp_path / "in"
    make_photo(src / "tall.jpg", (44, 150), seed=1)
    make_photo(src / "small.png", (30, 20), seed=2)
    setup = "from animecli.inference import ort_session as ort\nort.BAND_PIXELS, ort.MIN_BAND_ROWS = 16 * 44, 4"
    assert_lean_convert_matches(src, tmp_path, setup, ("tall.jpg", "small.png"))  # bands of 16 rows
