"""CPU backends: onnx matches eager, int8 stays close, auto picks sensibly, missing onnxruntime is a SetupError."""

from __future__ import annotations

import builtins
import importlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from animecli.benchmark import psnr
from animecli.cli.app import app
from animecli.errors import SetupError, UsageError
from animecli.inference import backends
from animecli.inference.backends import make_runner, resolve_backend
from animecli.inference.backends.onnx_export import export_onnx, stats_size
from animecli.inference.ort_session import ONNX_HINT
from animecli.inference.tensors import array_to_tensor, from_model_range, image_to_tensor
from animecli.inference.torch_engine import Engine
from animecli.io.transforms import prepare
from animecli.models.norm import FastGroupNorm
from animecli.models.registry import build_generator
from animecli.models.spec import Arch, ArchSpec
from animecli.options import Backend, EngineOptions
from animecli.run.resume import Settings
from tests.conftest import ROOT, SHARED, make_photo, tiny_state_dict

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def _shared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(autouse=True)
def _cache_home(_shared_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # One cache for the module: the tiny models are exported and calibrated once, not per test.
    monkeypatch.setenv("ANIMECLI_HOME", str(_shared_home))


def _tiny(arch: Arch, align_corners: bool = True) -> torch.nn.Module:
    model = build_generator(ArchSpec(arch, width=0.125, align_corners=align_corners))
    model.load_state_dict(tiny_state_dict(arch))
    # Random init leaves the norms at weight 1 / bias 0; perturb them so they are exercised.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("weight", "bias")) and p.dim() == 1:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


@pytest.mark.parametrize(("arch", "align"), [(Arch.LITE, True), (Arch.LITE3, False), (Arch.V2, True)])
def test_onnx_matches_eager_at_two_sizes(arch: Arch, align: bool) -> None:
    model = _tiny(arch, align)
    runner = make_runner(model, Backend.ONNX, threads=1)
    torch.manual_seed(0)
    for shape in ((1, 3, 64, 96), (2, 3, 132, 100)):  # a different size and batch from the export's 64×64
        x = torch.rand(shape) * 2 - 1
        with torch.inference_mode():
            ref = model(x)
            out = runner(x)
        assert out.shape == ref.shape
        assert float((out - ref).abs().max()) < 1e-4


@pytest.mark.parametrize("arch", [Arch.V3, Arch.V3_TINY, Arch.V2_TF])
def test_imported_archs_export_their_upsampling_as_one_resize(arch: Arch) -> None:
    """TF's asymmetric ×2 upsampling is one ``Resize`` node in the export (as in the files),
    not slices and stacks, and the graph still matches eager at sizes other than the export's."""
    import onnx

    model = _tiny(arch, align_corners=False)
    graph = onnx.load_from_string(export_onnx(model))
    resizes = [n for n in graph.graph.node if n.op_type == "Resize"]
    ups = {Arch.V3: 3, Arch.V3_TINY: 4, Arch.V2_TF: 2}[arch]
    assert len(resizes) == ups
    modes = {a.name: a.s for n in resizes for a in n.attribute if a.name in ("coordinate_transformation_mode", "mode")}
    assert modes == {"coordinate_transformation_mode": b"asymmetric", "mode": b"linear"}
    runner = make_runner(model, Backend.ONNX, threads=1)
    torch.manual_seed(0)
    for shape in ((1, 3, 64, 96), (2, 3, 80, 112)):
        x = torch.rand(shape) * 2 - 1
        with torch.inference_mode():
            ref = model(x)
            out = runner(x)
        assert float((out - ref).abs().max()) < 1e-4


def test_export_is_cached_by_digest(_shared_home: Path) -> None:
    model = _tiny(Arch.LITE)
    make_runner(model, Backend.ONNX, threads=1, digest="ab" * 32, arch_key="lite/0.125/align")
    files = list((_shared_home / "compiled").glob("abababab*.onnx"))
    assert len(files) == 1
    # A second runner reads the cached file instead of exporting again.
    called = []
    original = export_onnx

    def spy(m: torch.nn.Module, sample_size: int = 64) -> bytes:
        called.append(1)
        return original(m, sample_size)

    backends.export_onnx = spy  # type: ignore[assignment]  # make_runner looks it up in the package
    try:
        make_runner(model, Backend.ONNX, threads=1, digest="ab" * 32, arch_key="lite/0.125/align")
    finally:
        backends.export_onnx = original
    assert not called


def test_int8_runs_and_stays_close() -> None:
    model = _tiny(Arch.LITE)
    runner = make_runner(model, Backend.INT8, threads=1)
    img = array_to_tensor(prepare(Image.open(ROOT / "examples" / "chelsea.jpg"), 128).rgb)
    x = img.unsqueeze(0).float() / 127.5 - 1
    x = x[..., : x.shape[2] // 4 * 4, : x.shape[3] // 4 * 4]
    with torch.inference_mode():
        ref = from_model_range(model(x))[0]
        out = from_model_range(runner(x))[0]
    assert psnr(out, ref) > 20.0  # random tiny weights: loose; the shipped model is checked below


def test_missing_onnxruntime_is_setup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__
    real_import_module = importlib.import_module

    def no_ort(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "onnxruntime" or name.startswith("onnxruntime."):
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    def no_ort_module(name: str, package: str | None = None) -> Any:
        if name == "onnxruntime" or name.startswith("onnxruntime."):
            raise ImportError("No module named 'onnxruntime'")
        return real_import_module(name, package)

    monkeypatch.setattr(builtins, "__import__", no_ort)
    monkeypatch.setattr(importlib, "import_module", no_ort_module)
    cpu = torch.device("cpu")
    for b in (Backend.ONNX, Backend.INT8):
        with pytest.raises(SetupError, match=r"animecli\[onnx\]"):
            resolve_backend(b, cpu, torch.float32)
    assert resolve_backend(Backend.AUTO, cpu, torch.float32).backend is Backend.EAGER
    with pytest.raises(SetupError) as info:
        Engine(_tiny(Arch.LITE), 4, EngineOptions(device="cpu", backend=Backend.ONNX))
    assert info.value.exit_code == 2


def test_missing_onnxruntime_cli_exit_2(
    tiny_weights_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backends, "onnxruntime_available", lambda: False)

    def fail(backend: Backend) -> Any:
        raise SetupError(f"--backend {backend.value} needs onnxruntime, which is not installed; {ONNX_HINT}")

    monkeypatch.setattr(backends, "require_onnxruntime", fail)
    make_photo(tmp_path / "in" / "a.png")
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "in"), str(tmp_path / "out"), "--backend", "onnx"])
    assert result.exit_code == 2, result.output
    assert "pip install" in result.output


def test_auto_choice() -> None:
    cpu = torch.device("cpu")
    assert resolve_backend(Backend.AUTO, cpu, torch.float32).backend is Backend.ONNX
    assert resolve_backend(Backend.AUTO, cpu, torch.bfloat16).backend is Backend.EAGER
    assert resolve_backend(Backend.EAGER, cpu, torch.float32).backend is Backend.EAGER
    with pytest.raises(UsageError):
        resolve_backend(Backend.ONNX, cpu, torch.bfloat16)
    with pytest.raises(UsageError):
        resolve_backend(Backend.INT8, torch.device("cuda"), torch.float16)


def test_convert_with_onnx_and_int8(tiny_weights_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    for i in range(2):
        make_photo(src / f"p{i}.png", (72, 40), seed=i)
    outs = {}
    for b in ("eager", "onnx", "int8"):
        out = tmp_path / f"out_{b}"
        result = CliRunner().invoke(app, ["convert", str(src), str(out), "--backend", b, "--threads", "1"])
        assert result.exit_code == 0, result.output
        assert f", {b})" in result.output  # "model tiny on cpu (float32, onnx)"
        outs[b] = image_to_tensor(Image.open(out / "p0.png").convert("RGB"))
    assert float((outs["onnx"].float() - outs["eager"].float()).abs().max()) <= 1.0
    # int8 output differs from float, so switching to it redoes the outputs; float backends do not.
    again = CliRunner().invoke(app, ["convert", str(src), str(tmp_path / "out_eager"), "--backend", "int8"])
    assert "settings changed" in again.output
    same = CliRunner().invoke(app, ["convert", str(src), str(tmp_path / "out_onnx"), "--backend", "traced"])
    assert "2 skipped" in same.output


def test_settings_fingerprint_backend() -> None:
    base = Settings("d" * 64, "lite/1.0/noalign", 1024, "same", 92, "", "float32")
    dst = Path("x.png")
    assert Settings(**{**base.__dict__, "backend": ""}).fingerprint(dst) == base.fingerprint(dst)
    assert Settings(**{**base.__dict__, "backend": "int8"}).fingerprint(dst) != base.fingerprint(dst)


def test_tiled_image_with_int8_falls_back_to_eager(tiny_weights_dir: Path, tmp_path: Path) -> None:
    make_photo(tmp_path / "in" / "big.png", (300, 200))
    cli = ["convert", str(tmp_path / "in"), str(tmp_path / "out"), "--tile", "64", "-v", "--backend"]
    result = CliRunner().invoke(app, [*cli, "int8"])
    assert result.exit_code == 0, result.output
    assert "tiled: run in eager PyTorch (the int8 backend cannot tile)" in result.output
    result = CliRunner().invoke(app, [*cli, "onnx", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert "eager PyTorch" not in result.output  # onnx tiles in its fixed-statistics graph


@pytest.mark.parametrize("arch", [Arch.LITE, Arch.LITE2, Arch.V2, Arch.V3, Arch.V3_TINY])
def test_onnx_fixed_statistics_tiles_match_eager_tiles(arch: Arch) -> None:
    from animecli.inference.tiling import TilePlan, tiled_forward

    model = _tiny(arch, align_corners=False)
    multiple = 16 if arch is Arch.V3_TINY else 8 if arch is Arch.V3 else 4
    runner = make_runner(model, Backend.ONNX, threads=1)
    assert isinstance(runner, backends.OrtRunner) and runner.can_tile
    img = (torch.rand(3, 208, 272) * 255).to(torch.uint8)
    cpu = torch.device("cpu")
    for plan in (TilePlan(64, 16, 272), TilePlan(64, 16, 272, samples=2, sample_side=48, sample_margin=16)):
        eager = tiled_forward(model, model, img, plan, multiple, torch.float32, cpu)
        onnx = tiled_forward(model, model, img, plan, multiple, torch.float32, cpu, fixed_forward=runner.run_fixed)
        diff = (eager.float() - onnx.float()).abs()
        assert float(diff.max()) <= 1.0, float(diff.max())  # float32 rounding only
    # The statistics really are an input: different statistics, a different image.
    stats = torch.rand(stats_size(model)) + 0.5
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    a, b = runner.run_fixed(x, stats), runner.run_fixed(x, stats * 2)
    assert float((a - b).abs().max()) > 1e-3


@pytest.mark.parametrize("arch", [Arch.LITE, Arch.V3, Arch.V3_TINY])
def test_onnx_video_graph_carries_statistics_as_the_eager_hooks_do(arch: Arch) -> None:
    """The video graph (statistics in, mixed statistics out) gives the eager carry's frames."""
    from animecli.inference.temporal import StatsCarry
    from animecli.inference.tiling import whole_image_layers

    model = _tiny(arch, align_corners=False)
    runner = make_runner(model, Backend.ONNX, threads=1)
    assert isinstance(runner, backends.OrtRunner) and runner.can_carry
    g = torch.Generator().manual_seed(3)
    # Frames of different brightness and contrast, so that their statistics differ.
    frames = [torch.rand(1, 3, 64, 96, generator=g) * (0.4 + 0.6 * i) - 0.9 + 0.4 * i for i in range(3)]
    carry = StatsCarry(0.7)
    layers = whole_image_layers(model)
    for layer in layers:
        layer.stats_hook = carry if isinstance(layer, FastGroupNorm) else carry.frozen  # type: ignore[assignment]
    eager = []
    try:
        with torch.no_grad():
            for i, f in enumerate(frames):
                carry.begin([i == 0])
                eager.append(model(f))
    finally:
        for layer in layers:
            layer.stats_hook = None
    with torch.no_grad():
        alone = [model(f) for f in frames]
    stats = torch.zeros(stats_size(model))
    for i, f in enumerate(frames):
        y, stats = runner.run_carry(f, stats, 0.0 if i == 0 else 0.7)
        assert float((y - eager[i]).abs().max()) < 1e-4
        if i == 0:  # blend 0: the frame's own statistics, the plain graph's result
            assert float((y - alone[0]).abs().max()) < 1e-4
    # Carried statistics change the later frames (else the test above proves nothing).
    assert float((eager[2] - alone[2]).abs().max()) > 1e-3


def test_lite_colour_skip_exports_as_a_matmul() -> None:
    # The skip as a Conv on the input became a blocked conv that onnxruntime ran first and
    # kept alive through the network (onnx_export._MatMulSkip); as a MatMul it is the same function.
    onnx = pytest.importorskip("onnx")
    model = _tiny(Arch.LITE3, align_corners=False)
    with torch.no_grad():  # a non-symmetric mix, so a transposed weight would show
        model.skip.weight.copy_(torch.tensor([[0.9, 0.2, -0.1], [0.0, 1.1, 0.3], [-0.2, 0.1, 0.8]]).view(3, 3, 1, 1))
    data = export_onnx(model)
    graph = onnx.load_from_string(data).graph
    convs_on_input = [n for n in graph.node if n.op_type == "Conv" and "input" in n.input]
    assert len(convs_on_input) == 1  # the first conv only
    assert any(n.op_type == "MatMul" for n in graph.node)
    runner = make_runner(model, Backend.ONNX, threads=1)
    x = torch.rand(1, 3, 48, 72) * 2 - 1
    with torch.inference_mode():
        assert float((runner(x) - model(x)).abs().max()) < 1e-4


def test_export_bytes_are_valid_onnx() -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load_from_string(export_onnx(_tiny(Arch.LITE)))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version >= 17
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["n", "", "h", "w"]


SHIPPED = {name: ROOT / "weights" / entry["file"]
           for name, entry in json.loads((ROOT / "weights" / "manifest.json").read_text())["models"].items()
           if (ROOT / "weights" / entry["file"]).is_file()}
VAL = SHARED / "photos" / "val"
# Each shipped student's teacher (weights/README.md).
TEACHERS = {"hayao": "animeganv3_hayao_512.onnx", "shinkai": "animeganv3_shinkai.onnx", "cute": "animeganv3_cute.onnx",
            "hayao_lite3": "animeganv3_hayao_512.onnx", "shinkai_lite3": "animeganv3_shinkai.onnx",
            "cute_lite3": "animeganv3_cute.onnx"}


def test_every_shipped_student_has_a_teacher_for_the_quality_guard() -> None:
    assert set(SHIPPED) == set(TEACHERS)  # a new shipped style needs its teacher in TEACHERS


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TEACHERS))
def test_int8_quality_guard_on_shipped_model(tmp_path: Path, name: str) -> None:
    """int8's PSNR against the teacher is within 1.5 dB of float32's, on a few held-out photos at 512 px."""
    from animecli.options import ModelChoice
    from animecli.training.evaluate import evaluate
    from animecli.weights.resolve import load_generator

    teacher = SHARED / "teachers" / TEACHERS[name]
    if not (VAL.is_dir() and teacher.is_file()):
        pytest.skip(f"needs {VAL} and {teacher}")
    loaded = load_generator(ModelChoice(weights=SHIPPED[name]))
    model = loaded.model.eval()
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in sorted(VAL.glob("*.jpg"))[::60][:2]:
        (photos / path.name).symlink_to(path)
    figures = {}
    for b in (Backend.ONNX, Backend.INT8):
        runner = make_runner(model, b, threads=2, digest=loaded.sha256, arch_key=loaded.spec.key,
                             multiple=loaded.input_multiple)  # int8 calibration pads to it (16: tiny v3)
        result = evaluate(runner, teacher, photos, 512, tmp_path / "teacher-cache")
        assert result is not None
        figures[b] = result.psnr_db
    assert figures[Backend.ONNX] - figures[Backend.INT8] <= 1.5, figures


def test_arena_shrinks_only_after_an_outlier() -> None:
    runner = make_runner(_tiny(Arch.LITE), Backend.ONNX, threads=1)
    assert isinstance(runner, backends.OrtRunner)
    same = [runner._shrink_after(1000) for _ in range(20)]
    assert not any(same)  # a folder of same-size photos never pays for shrinking
    assert runner._shrink_after(5000)  # one large photo: give its memory back after it
    assert not runner._shrink_after(1100)
    # And the outputs are unchanged by a shrinking run.
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    small = runner(x)
    big = torch.rand(1, 3, 256, 256) * 2 - 1
    runner(big)
    assert torch.equal(runner(x), small)


def test_a_wrong_calibration_path_is_named_in_the_error(tmp_path: Path) -> None:
    """It blamed a missing bundled examples/ folder, never naming the path the user gave."""
    from animecli.errors import SetupError
    from animecli.inference.backends.int8 import calibration_images

    (tmp_path / "f.jpg").write_bytes(b"x")
    for given, what in ((tmp_path / "typo", "does not exist"), (tmp_path / "f.jpg", "is a file")):
        with pytest.raises(SetupError, match=f"--calibration {given} {what}"):
            calibration_images(given)
