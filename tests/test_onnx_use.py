"""ONNX generator files as models: ``convert --weights x.onnx``, ``models add``, the import cache,
refusals, and every converter path (backends, tiling, batch) on small generated graphs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from animecli.cli.app import app  # noqa: E402
from animecli.weights.onnx_import import Layout, psnr, run_onnxruntime  # noqa: E402
from tests import onnx_graphs as graphs  # noqa: E402
from tests.conftest import SHARED, cli_convert  # noqa: E402

TEACHERS = SHARED / "teachers"
PHOTOS = SHARED / "photos" / "val"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home"
    monkeypatch.setenv("ANIMECLI_HOME", str(folder))
    return folder


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def _photo(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    """A smooth seeded photo-like image (W, H)."""
    w, h = size
    coarse = torch.rand(1, 3, max(2, h // 16), max(2, w // 16), generator=torch.Generator().manual_seed(seed))
    img = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    arr = (img.clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _read(path: Path) -> torch.Tensor:
    arr = np.asarray(Image.open(path).convert("RGB"), np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0) / 127.5 - 1.0


def _ort_on_photo(onnx_path: Path, photo: Path, layout: Layout = Layout.NHWC) -> torch.Tensor:
    ref = run_onnxruntime(onnx_path, _read(photo), layout)
    return ((ref.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1.0  # what an 8-bit PNG of it holds


def test_convert_weights_onnx_matches_onnxruntime_and_caches(tmp_path: Path, home: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    model = _save(graphs.v3_graph(base=2), tmp_path / "v3.onnx")
    photo = _photo(tmp_path / "in" / "a.png", (48, 40))
    r = cli_convert(tmp_path / "in", tmp_path / "out", "--weights", model, "--report", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    assert "non-commercial" in r.stdout
    assert psnr(_read(tmp_path / "out" / "a.png"), _ort_on_photo(model, photo)) > 45.0
    report = json.loads((tmp_path / "r.json").read_text())
    assert "non-commercial" in report["summary"]["licence"]
    assert len(list((home / "imported").glob("*.pt"))) == 1
    # The second run reads the cached state dict: the importer is not needed any more.
    from animecli.weights import onnx_import

    def no_import(path: object) -> None:
        raise AssertionError("imported again")

    monkeypatch.setattr(onnx_import, "import_onnx", no_import)
    r = cli_convert(tmp_path / "in", tmp_path / "out2", "--weights", model)
    assert r.exit_code == 0, r.output
    assert torch.equal(_read(tmp_path / "out2" / "a.png"), _read(tmp_path / "out" / "a.png"))


def test_unknown_onnx_is_refused_exit_2_nothing_written(tmp_path: Path, home: Path) -> None:
    model = _save(graphs.classifier_graph(), tmp_path / "cls.onnx")
    _photo(tmp_path / "in" / "a.png", (32, 32))
    r = cli_convert(tmp_path / "in", tmp_path / "out", "--weights", model)
    assert r.exit_code == 2, r.output
    assert str(model) in r.stderr and "supported" in r.stderr
    assert not (tmp_path / "out").exists()
    assert not list(home.rglob("*.pt"))
    r = CliRunner().invoke(app, ["models", "add", str(model), "--name", "cls"])
    assert r.exit_code == 2, r.output
    assert not (home / "models").exists()


def test_onnx_without_the_onnx_package_names_the_extra(tmp_path: Path, home: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    model = _save(graphs.v3_tiny_graph(), tmp_path / "tiny.onnx")
    _photo(tmp_path / "in" / "a.png", (32, 32))
    for name in [m for m in sys.modules if m == "onnx" or m.startswith(("onnx.", "animecli.weights.onnx_import"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "onnx", None)
    r = cli_convert(tmp_path / "in", tmp_path / "out", "--weights", model)
    assert r.exit_code == 2, r.output
    assert "animecli[onnx]" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_models_add_registers_and_lists_with_licence(tmp_path: Path, home: Path, tiny_weights_dir: Path) -> None:
    model = _save(graphs.v3_tiny_graph(base=1), tmp_path / "tiny.onnx")
    runner = CliRunner()
    r = runner.invoke(app, ["models", "add", str(model), "--name", "mytiny"])
    assert r.exit_code == 0, r.output
    assert "animeganv3-tiny" in r.stdout and "size multiple 16" in r.stdout
    r = runner.invoke(app, ["models", "list"])
    row = next(line for line in r.stdout.splitlines() if line.startswith("mytiny\t"))
    assert "animeganv3-tiny" in row and "non-commercial" in row and row.endswith("\tyes")
    info = json.loads(runner.invoke(app, ["models", "info", "mytiny"]).stdout)
    from animecli.weights.manifest import sha256_of

    assert info["sha256"] == sha256_of(home / "models" / "mytiny.pt")
    assert info["onnx_sha256"] == sha256_of(model)
    photo = _photo(tmp_path / "in" / "a.png", (48, 32))
    r = cli_convert(tmp_path / "in", tmp_path / "out", "-m", "mytiny")
    assert r.exit_code == 0, r.output
    assert psnr(_read(tmp_path / "out" / "a.png"), _ort_on_photo(model, photo)) > 45.0
    # A shipped model's name is refused.
    r = runner.invoke(app, ["models", "add", str(model), "--name", "tiny"])
    assert r.exit_code == 2 and "shipped" in r.stderr


@pytest.mark.parametrize("backend", ["eager", "traced", "onnx"])
def test_backends_and_batch_agree_on_an_imported_generator(tmp_path: Path, home: Path, backend: str) -> None:
    model = _save(graphs.v3_graph(base=2, seed=3), tmp_path / "v3.onnx")
    for i in range(2):
        _photo(tmp_path / "in" / f"{i}.png", (40, 24), seed=i)
    r = cli_convert(tmp_path / "in", tmp_path / "ref", "--weights", model, "--backend", "eager")
    assert r.exit_code == 0, r.output
    r = cli_convert(tmp_path / "in", tmp_path / "out", "--weights", model, "--backend", backend, "--batch-size", "2")
    assert r.exit_code == 0, r.output
    for i in range(2):
        assert psnr(_read(tmp_path / "out" / f"{i}.png"), _read(tmp_path / "ref" / f"{i}.png")) > 50.0


@pytest.mark.parametrize("build", [lambda: graphs.v3_graph(base=2, seed=4), lambda: graphs.v3_tiny_graph(base=1)])
def test_tiles_match_the_whole_image(tmp_path: Path, home: Path, build: object) -> None:
    assert callable(build)
    model = _save(build(), tmp_path / "g.onnx")
    _photo(tmp_path / "in" / "a.png", (192, 128))
    r = cli_convert(tmp_path / "in", tmp_path / "whole", "--weights", model, "--tile", "0", "--backend", "eager")
    assert r.exit_code == 0, r.output
    r = cli_convert(tmp_path / "in", tmp_path / "tiles", "--weights", model, "--tile", "64", "--backend", "eager")
    assert r.exit_code == 0, r.output
    assert psnr(_read(tmp_path / "tiles" / "a.png"), _read(tmp_path / "whole" / "a.png")) > 40.0


def test_arch_option_is_refused_for_onnx(tmp_path: Path, home: Path) -> None:
    model = _save(graphs.v3_graph(), tmp_path / "v3.onnx")
    _photo(tmp_path / "in" / "a.png", (32, 32))
    r = cli_convert(tmp_path / "in", tmp_path / "out", "--weights", model, "--arch", "v2")
    assert r.exit_code == 2 and "drop --arch" in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.shared
@pytest.mark.skipif(not TEACHERS.is_dir() or not PHOTOS.is_dir(), reason=f"needs {TEACHERS} and {PHOTOS}")
@pytest.mark.parametrize("name", ["animeganv3_hayao_512.onnx", "animeganv3_shinkai.onnx", "animeganv3_cute.onnx"])
def test_real_file_through_convert_matches_onnxruntime(name: str, tmp_path: Path, home: Path) -> None:
    model = TEACHERS / name
    src = sorted(PHOTOS.iterdir())[0]
    with Image.open(src) as img:
        side = min(img.size)
        img.convert("RGB").crop((0, 0, side, side)).resize((512, 512), Image.Resampling.LANCZOS).save(
            tmp_path / "in.png")
    (tmp_path / "in").mkdir()
    (tmp_path / "in.png").rename(tmp_path / "in" / "a.png")
    r = cli_convert(tmp_path / "in", tmp_path / "out", "--weights", model, "--format", "png")
    assert r.exit_code == 0, r.output
    assert psnr(_read(tmp_path / "out" / "a.png"), _ort_on_photo(model, tmp_path / "in" / "a.png")) >= 45.0
