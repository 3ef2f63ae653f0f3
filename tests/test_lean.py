"""The torch-free CPU engine (animecli.inference.ort_engine): the onnx backend's pixels, without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from animecli.inference.device import torch_has_gpu_build
from animecli.inference.ort_engine import LEAN_ENV, OrtEngine, plan_lean
from animecli.inference.tensors import pad_batch
from animecli.io.transforms import pad_array
from animecli.options import Backend, EngineOptions, ModelChoice, Precision
from tests.conftest import ROOT, make_photo

pytest.importorskip("onnxruntime")



def _torch_engine(opts: EngineOptions):  # type: ignore[no-untyped-def]
    from animecli.inference.select import load_torch_engine

    return load_torch_engine(ModelChoice(), opts)[1]


def _cpu(**kw: object) -> EngineOptions:
    return EngineOptions(**{"device": "cpu", "threads": 1, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (13, 22), (40, 30), (64, 64)])
def test_pad_array_matches_pad_batch(size: tuple[int, int]) -> None:
    h, w = size
    rgb = np.random.default_rng(h * 100 + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    for multiple in (4, 16):
        ours = pad_array(rgb, multiple)
        theirs = pad_batch(torch.from_numpy(rgb).permute(2, 0, 1)[None].float(), multiple)[0].permute(1, 2, 0)
        assert ours.shape == tuple(theirs.shape)
        assert np.array_equal(ours, theirs.to(torch.uint8).numpy())
        # at least two multiples: the deepest level keeps 2 px for its reflect pads (tiny AnimeGANv3: 1/16)
        assert min(ours.shape[:2]) >= max(16, 2 * multiple) and ours.shape[0] % multiple == 0


def test_torch_build_read_without_importing_torch() -> None:
    gpu = torch.version.cuda is not None or getattr(torch.version, "hip", None) is not None
    assert torch_has_gpu_build() is gpu


def test_plan_needs_the_cached_graph_and_a_plain_cpu_run(
    tiny_weights_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert plan_lean(ModelChoice(), _cpu()) is None  # nothing exported yet: the first run uses torch
    _torch_engine(_cpu(backend=Backend.ONNX))  # exports and caches the graph
    plan = plan_lean(ModelChoice(), _cpu())
    assert plan is not None and plan.graph.is_file() and plan.spec.arch.value == "lite"
    assert plan_lean(ModelChoice(), EngineOptions(device="auto")) is not None or torch_has_gpu_build()
    for opts in (_cpu(backend=Backend.EAGER), _cpu(backend=Backend.INT8), _cpu(precision=Precision.BF16),
                 _cpu(compile=True), EngineOptions(device="cuda")):
        assert plan_lean(ModelChoice(), opts) is None, opts
    assert plan_lean(ModelChoice(weights=tiny_weights_dir / "tiny.pt", arch="lite"), _cpu()) is None
    monkeypatch.setenv(LEAN_ENV, "0")
    assert plan_lean(ModelChoice(), _cpu()) is None


def test_same_pixels_as_the_torch_onnx_engine(tiny_weights_dir: Path) -> None:
    torch_engine = _torch_engine(_cpu(backend=Backend.ONNX))
    plan = plan_lean(ModelChoice(), _cpu())
    assert plan is not None
    called = []
    lean = OrtEngine(plan, _cpu(), lambda: called.append(1) or torch_engine)  # type: ignore[func-returns-value]
    rng = np.random.default_rng(0)
    for shape in [(37, 50), (64, 48), (5, 9)]:  # padded by reflection, by reflection, by repetition
        batch = [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for _ in range(2)]
        got, want = lean.run_batch(batch), torch_engine.run_batch(batch)
        assert got.errors == [None, None]
        for a, b in zip(got.images, want.images, strict=True):
            assert a is not None and b is not None and a.shape == (*shape, 3) and a.dtype == np.uint8
            assert np.array_equal(a, b)
    assert not called  # nothing here needed tiling


def test_images_to_tile_go_to_the_torch_engine(tiny_weights_dir: Path) -> None:
    opts = _cpu(tile=32)
    torch_engine = _torch_engine(opts)
    plan = plan_lean(ModelChoice(), opts)
    assert plan is not None
    built = []

    def fallback():  # type: ignore[no-untyped-def]
        built.append(1)
        return torch_engine

    lean = OrtEngine(plan, opts, fallback)
    small = [np.full((24, 32, 3), 90, np.uint8)]
    assert lean.run_batch(small).errors == [None] and not built
    big = [np.random.default_rng(1).integers(0, 256, (48, 72, 3), dtype=np.uint8)]
    got = lean.run_batch(big)
    assert built == [1]
    want = torch_engine.run_batch(big)
    assert got.images[0] is not None and want.images[0] is not None
    assert np.array_equal(got.images[0], want.images[0])


def test_convert_runs_without_importing_torch(tmp_path: Path, tiny_weights_dir: Path) -> None:
    """A second CPU run of the default backend never imports torch, and writes the same files."""
    src = tmp_path / "in"
    for i in range(3):
        make_photo(src / f"p{i}.jpg", (70 + 9 * i, 41), seed=i)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = (
        "import json, sys\n"
        "from animecli.cli.app import app\n"
        "code = app(sys.argv[1:], standalone_mode=False)\n"
        "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules}))\n"
    )

    def run(out: Path, lean: str) -> dict[str, object]:
        cmd = [sys.executable, "-c", script, "convert", str(src), str(out), "--device", "cpu", "--threads", "1",
               "--report", str(out.with_suffix(".json"))]
        done = subprocess.run(cmd, env={**env, LEAN_ENV: lean}, capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    first = run(tmp_path / "first", "1")  # exports the graph: this one needs torch
    assert first == {"code": 0, "torch": True}
    lean = run(tmp_path / "lean", "1")
    assert lean == {"code": 0, "torch": False}
    plain = run(tmp_path / "plain", "0")
    assert plain == {"code": 0, "torch": True}
    report = json.loads((tmp_path / "lean.json").read_text())
    assert report["summary"]["backend"] == "onnx" and report["summary"]["precision"] == "float32"
    for i in range(3):
        with Image.open(tmp_path / "lean" / f"p{i}.jpg") as a, Image.open(tmp_path / "plain" / f"p{i}.jpg") as b:
            assert np.array_equal(np.asarray(a), np.asarray(b))


def test_empty_cached_graph_is_not_used(tiny_weights_dir: Path) -> None:
    _torch_engine(_cpu(backend=Backend.ONNX))
    plan = plan_lean(ModelChoice(), _cpu())
    assert plan is not None
    plan.graph.write_bytes(b"")  # e.g. a disk that filled while the graph was written
    assert plan_lean(ModelChoice(), _cpu()) is None
    _torch_engine(_cpu(backend=Backend.ONNX))  # the PyTorch path writes it again
    assert plan.graph.stat().st_size > 0 and plan_lean(ModelChoice(), _cpu()) is not None


def test_out_of_memory_is_reported_per_image(tiny_weights_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _torch_engine(_cpu(backend=Backend.ONNX))
    plan = plan_lean(ModelChoice(), _cpu())
    assert plan is not None
    lean = OrtEngine(plan, _cpu(), lambda: pytest.fail("no tiling expected"))  # type: ignore[arg-type,return-value]
    real = lean.session.run_array

    def run_array(x: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
        if x.shape[0] > 1:
            raise MemoryError  # the batch of two does not fit; each image alone does
        return real(x)

    monkeypatch.setattr(lean.session, "run_array", run_array)
    batch = [np.full((20, 24, 3), 40 * i, np.uint8) for i in range(2)]
    got = lean.run_batch(batch)
    assert got.errors == [None, None] and all(a is not None for a in got.images)
    monkeypatch.setattr(lean.session, "run_array", lambda x: (_ for _ in ()).throw(MemoryError()))
    got = lean.run_batch(batch)
    assert got.images == [None, None]
    assert all(e is not None and e.startswith("out of memory at 24×20") for e in got.errors)


@pytest.mark.parametrize("backend", ["auto", "int8"])  # the torch-free and the PyTorch paths
def test_a_damaged_cached_graph_is_compiled_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """A cached graph that onnxruntime refuses (a disk error, a cut copy) is deleted and made
    again, on both engines' paths: the run converts and the next one finds a good cache."""
    from animecli.inference import graph_cache
    from animecli.models.spec import Arch
    from tests.conftest import cli_convert, make_weights_dir

    make_weights_dir(tmp_path, monkeypatch, (("tiny3", Arch.LITE3), ("tiny", Arch.LITE)))
    src = tmp_path / "in"
    make_photo(src / "a.png", (48, 40))
    model = ["--model", "tiny3"] if backend == "auto" else ["--model", "tiny", "--backend", backend]
    first = cli_convert(src, tmp_path / "first", *model, "--threads", "1")
    assert first.exit_code == 0, first.output
    graphs = sorted((tmp_path / "home").rglob("*.onnx"))
    assert graphs
    for g in graphs:
        g.write_bytes(g.read_bytes()[:5000])
    graph_cache.forget_all()  # what a new process starts with: the graphs come from the disk
    again = cli_convert(src, tmp_path / "again", *model, "--threads", "1")
    assert again.exit_code == 0, again.output
    assert (tmp_path / "again" / "a.png").read_bytes() == (tmp_path / "first" / "a.png").read_bytes()
    assert all(g.stat().st_size > 5000 for g in graphs if g.exists())


def test_a_damaged_cached_tiling_graph_is_compiled_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixed-statistics graph that tiles run through is cached too; damaged, it is remade
    (it used to fail every tiled image with 'delete the cache')."""
    from animecli.inference import graph_cache
    from animecli.models.spec import Arch
    from tests.conftest import cli_convert, make_weights_dir

    make_weights_dir(tmp_path, monkeypatch, (("tiny", Arch.LITE),))
    src = tmp_path / "in"
    make_photo(src / "a.png", (150, 100))
    args = ("--model", "tiny", "--backend", "onnx", "--tile", "64", "--threads", "1")
    first = cli_convert(src, tmp_path / "first", *args)
    assert first.exit_code == 0, first.output
    (fixed,) = (tmp_path / "home").rglob("*-stats.onnx")
    fixed.write_bytes(fixed.read_bytes()[:3000])
    graph_cache.forget_all()
    again = cli_convert(src, tmp_path / "again", *args)
    assert again.exit_code == 0, again.output
    assert (tmp_path / "again" / "a.png").read_bytes() == (tmp_path / "first" / "a.png").read_bytes()
    assert fixed.stat().st_size > 3000


def test_a_cache_that_cannot_be_written_is_said_once(tmp_path: Path, tiny_weights_dir: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """An ANIMECLI_HOME that cannot hold the compiled graph costs every run a compile: say so
    (also with --quiet), and the run still converts."""
    from tests.conftest import cli_convert

    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    monkeypatch.setenv("ANIMECLI_HOME", str(blocker))
    make_photo(tmp_path / "in" / "a.png")
    for run in range(2):
        r = cli_convert(tmp_path / "in", tmp_path / f"out{run}", "-q", "--threads", "1")
        assert r.exit_code == 0, r.output
        assert r.stderr.count("warning: could not cache the compiled model in") == 1, r.stderr
        assert "set ANIMECLI_HOME to a writable folder" in r.stderr
        assert (tmp_path / f"out{run}" / "a.png").is_file()
    monkeypatch.setenv("ANIMECLI_HOME", str(tmp_path / "home"))  # a writable cache: nothing to say
    ok = cli_convert(tmp_path / "in", tmp_path / "out_ok", "-q", "--threads", "1")
    assert ok.exit_code == 0 and "warning" not in ok.stderr


def test_discarding_a_lean_plan_forgets_its_graphs_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A graph onnxruntime refused is deleted from the disk and from this process's memory: the
    PyTorch engine that takes over must not write the same bytes back (it did: the memo kept them)."""
    from animecli.inference import graph_cache
    from animecli.inference.ort_engine import LeanPlan, discard
    from animecli.models.spec import Arch, ArchSpec
    from animecli.weights.resolve import WeightsFile

    graph_cache.forget_all()
    monkeypatch.setattr(graph_cache, "_MEMO_SIZE", 8)
    enc, dec, whole = tmp_path / "m.enc.onnx", tmp_path / "m.dec.onnx", tmp_path / "m.onnx"
    for path in (enc, dec, whole):
        assert graph_cache.cached(path, lambda: b"damaged") == b"damaged"
        assert path.exists() and graph_cache.remembered(path)
    spec = ArchSpec(Arch.LITE3)
    weights = WeightsFile("m", tmp_path / "m.pt", spec, 4, "0" * 64)
    discard(LeanPlan(weights, spec, whole, (enc, dec)))
    for path in (enc, dec, whole):
        assert not path.exists()
        assert not graph_cache.remembered(path)
    assert graph_cache.cached(whole, lambda: b"made again") == b"made again"
    graph_cache.forget_all()
