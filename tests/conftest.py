"""Shared fixtures and helpers: a tiny seeded generator with its own manifest, small test photos,
``animecli convert`` through Typer's runner, and readers for its reports and outputs."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner, Result

from animecli.inference.ort_engine import LEAN_ENV
from animecli.models.registry import build_generator
from animecli.models.spec import Arch, ArchSpec, describe
from animecli.weights.manifest import Manifest, ModelEntry, load_manifest, save_manifest, sha256_of

ROOT = Path(__file__).resolve().parents[1]  # this checkout
SHARED = ROOT.parent / "shared"


def tiny_state_dict(arch: Arch = Arch.LITE, seed: int = 0) -> dict[str, torch.Tensor]:
    """A few-KB generator, random init, seeded (width 1/8)."""
    torch.manual_seed(seed)
    model = build_generator(ArchSpec(arch, width=0.125))
    return {k: v.clone() for k, v in model.state_dict().items()}


def tiny_checkpoint(arch: Arch = Arch.LITE) -> bytes:
    """``tiny_state_dict(arch)`` as ``torch.save`` writes it: the body of a good download."""
    buf = io.BytesIO()
    torch.save(tiny_state_dict(arch), buf)
    return buf.getvalue()


@pytest.fixture
def tiny_weights_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A weights folder with tiny ``lite`` (default) and ``v2`` models, used via ANIMECLI_WEIGHTS_DIR."""
    return make_weights_dir(tmp_path, monkeypatch, (("tiny", Arch.LITE), ("tiny_v2", Arch.V2)))


def make_weights_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, models: tuple[tuple[str, Arch], ...]) -> Path:
    """A weights folder with tiny seeded models (the first one the default), used via ANIMECLI_WEIGHTS_DIR."""
    folder = tmp_path / "weights"
    folder.mkdir()
    entries = {}
    for name, arch in models:
        sd = tiny_state_dict(arch)
        path = folder / f"{name}.pt"
        torch.save(sd, path)
        entries[name] = ModelEntry(
            name=name, file=path.name, arch=arch, width=0.125, sha256=sha256_of(path),
            input_multiple=describe(arch).size_multiple,
            size=path.stat().st_size, parameters=sum(v.numel() for v in sd.values()),
            style="test", licence="test", source="random init, seed 0",
        )
    save_manifest(Manifest(default=models[0][0], models=entries), folder)
    monkeypatch.setenv("ANIMECLI_WEIGHTS_DIR", str(folder))
    monkeypatch.setenv("ANIMECLI_HOME", str(tmp_path / "home"))
    return folder


def add_upstream_entry(folder: Path, name: str, url: str, arch: Arch = Arch.V2) -> Manifest:
    """Add an upstream entry (tiny width, no SHA-256) downloaded from ``url`` to ``folder``'s manifest."""
    manifest = load_manifest(folder)
    entry = ModelEntry(name, f"{name}.pt", arch, width=0.125, url=url)
    manifest = Manifest(manifest.default, {**manifest.models, name: entry}, folder)
    save_manifest(manifest, folder)
    return manifest


def make_photo(path: Path, size: tuple[int, int] = (40, 30), mode: str = "RGB", seed: int = 0, **save: object) -> Path:
    """Write a smooth, deterministic test image (a gradient with a seeded tint)."""
    w, h = size
    g = torch.Generator().manual_seed(seed)
    tint = torch.randint(0, 255, (3,), generator=g)
    xs = torch.linspace(0, 255, w).view(1, 1, w).expand(3, h, w)
    ys = torch.linspace(0, 255, h).view(1, h, 1).expand(3, h, w)
    rgb = ((xs + ys) / 2 * 0.5 + tint.view(3, 1, 1) * 0.5).to(torch.uint8)
    from animecli.inference.tensors import tensor_to_image

    img = tensor_to_image(rgb)
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **save)  # type: ignore[arg-type]
    return path


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    # Tests run tiny models; more threads only add contention on small CI machines.
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def needs_shared(*parts: str) -> pytest.MarkDecorator:
    """Skip unless ``../shared/<parts>`` exists."""
    path = SHARED.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"needs {path}")


def cli_convert(*args: object, cpu: bool = True) -> Result:
    """``animecli convert ARGS`` through Typer's runner (on CPU unless told otherwise, so results are deterministic)."""
    from animecli.cli.app import app

    argv = ["convert", *(str(a) for a in args)]
    if cpu:
        argv += ["--device", "cpu"]
    return CliRunner().invoke(app, argv)


def read_report(path: Path) -> dict[str, Any]:
    """A ``--report`` JSON file, parsed."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def rows_by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A parsed report's file rows by input file name."""
    return {Path(r["src"]).name: r for r in report["files"]}


def report_rows(path: Path) -> dict[str, dict[str, Any]]:
    """The file rows of the ``--report`` JSON file at ``path``, by input file name."""
    return rows_by_name(read_report(path))


def files_under(folder: Path) -> set[str]:
    """The files below ``folder``, without animecli's own bookkeeping (resume state, lock)."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".animecli.")}


def pixels(path: Path, mode: str = "RGB") -> np.ndarray:
    """An image's pixels in ``mode``, as int16 (so differences of two images do not wrap around)."""
    with Image.open(path) as img:
        return np.asarray(img.convert(mode)).astype(np.int16)


def size_of(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


def assert_lean_convert_matches(src: Path, tmp_path: Path, setup: str, names: tuple[str, ...]) -> None:
    """Convert ``src`` three times in fresh processes (``setup``: Python run first, e.g. smaller
    bands): the first run (with torch) fills the graph cache, the second must not import torch,
    the third (``ANIMECLI_LEAN=0``, the PyTorch engine) must give the second's pixels for ``names``."""
    script = (
        "import json, sys\n"
        f"{setup}\n"
        "from animecli.cli.app import app\n"
        "code = app(sys.argv[1:], standalone_mode=False)\n"
        "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules}))\n"
    )

    def run(out: Path, lean: str) -> dict[str, object]:
        cmd = [sys.executable, "-c", script, "convert", str(src), str(out), "--device", "cpu", "--threads", "1"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", LEAN_ENV: lean}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    assert run(tmp_path / "first", "1") == {"code": 0, "torch": True}  # exports the graphs
    assert run(tmp_path / "lean", "1") == {"code": 0, "torch": False}
    assert run(tmp_path / "plain", "0") == {"code": 0, "torch": True}
    for name in names:
        with Image.open(tmp_path / "lean" / name) as a, Image.open(tmp_path / "plain" / name) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b))
