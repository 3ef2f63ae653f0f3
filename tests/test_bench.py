"""``animecli bench`` on the tiny models: every backend row, the upstream row, the table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from animecli.benchmark import UPSTREAM, BenchOptions, run_bench
from animecli.cli.app import app
from animecli.cli.bench_table import COLUMNS, table_rows, to_markdown
from animecli.inference.torch_engine import cpu_has_amx
from animecli.options import Backend
from tests.conftest import make_photo

pytest.importorskip("onnxruntime")


@pytest.fixture(autouse=True)
def no_amx(monkeypatch: pytest.MonkeyPatch) -> None:
    """The row set must not depend on the CI machine's CPU (an AMX CPU adds an eager bf16 row)."""
    monkeypatch.setattr("animecli.inference.torch_engine.cpu_has_amx", lambda: False)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    for i in range(2):
        make_photo(folder / f"p{i}.jpg", (80, 60), seed=i)
    return folder


def test_bench_produces_all_rows(tiny_weights_dir: Path, photos: Path) -> None:
    opts = BenchOptions(images=photos, size=48, models=("tiny_v2",), repeat=1, threads=1, rss=False,
                        calibration=photos)
    result = run_bench(opts)
    got = [(r.model.split(" ")[0], r.backend) for r in result.rows]
    want = [("tiny_v2", b.value) for b in (Backend.EAGER, Backend.TRACED, Backend.ONNX, Backend.INT8)]
    assert got == [*want, ("tiny_v2", UPSTREAM)]
    for r in result.rows:
        assert r.ms_per_image > 0 and r.images_per_s > 0 and r.infer_ms > 0
        assert r.speedup_vs_upstream is not None
        assert r.psnr_db is not None
        if r.backend == "eager":
            assert math.isinf(r.psnr_db)
        elif r.backend in ("traced", "onnx", UPSTREAM):
            assert r.psnr_db > 40.0, r  # the same function (upstream: nn.GroupNorm, same weights)
    md = to_markdown(result)
    assert md.count("\n| tiny") == 5
    assert all(c in md for c in COLUMNS)


def test_bench_cli_with_rss(tiny_weights_dir: Path, photos: Path, tmp_path: Path) -> None:
    md, js = tmp_path / "t.md", tmp_path / "t.json"
    result = CliRunner().invoke(app, [
        "bench", "--model", "tiny", "--backend", "eager", "--images", str(photos), "--size", "32",
        "--repeat", "1", "--threads", "1", "--no-upstream", "--markdown", str(md), "--json", str(js),
    ])
    assert result.exit_code == 0, result.output
    assert "animecli bench" in result.output
    rows = json.loads(js.read_text())["rows"]
    assert [r["backend"] for r in rows] == ["eager"]
    assert rows[0]["peak_rss_mb"] and rows[0]["peak_rss_mb"] > 10  # measured in a child process
    assert "| tiny (lite) | eager |" in md.read_text()


def test_bench_extra_precision_row(tiny_weights_dir: Path, photos: Path, tmp_path: Path) -> None:
    js = tmp_path / "t.json"
    result = CliRunner().invoke(app, [
        "bench", "--model", "tiny", "--backend", "eager", "--extra-precision", "bf16", "--images", str(photos),
        "--size", "32", "--repeat", "1", "--threads", "1", "--no-upstream", "--json", str(js),
    ])
    assert result.exit_code == 0, result.output
    rows = json.loads(js.read_text())["rows"]
    assert [r["backend"] for r in rows] == ["eager", "eager bf16"]
    bf16 = rows[1]
    assert bf16["peak_rss_mb"] and bf16["peak_rss_mb"] > 10  # its child process built the bf16 row
    # Against the float32 eager output: close (bf16 rounding), not identical.
    assert bf16["psnr_db"] is not None and 25.0 < bf16["psnr_db"] < 200.0
    assert bf16["speedup_vs_eager"] is not None


@pytest.mark.parametrize(("amx", "flags", "want"), [
    (True, [], ["eager", "eager bf16"]),  # on AMX the table shows the fastest CPU path unasked
    (True, ["--extra-precision", "fp32"], ["eager"]),  # the opt-out: fp32 repeats the eager row
    (False, [], ["eager"]),
])
def test_bench_adds_a_bf16_row_on_amx(
    tiny_weights_dir: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    amx: bool, flags: list[str], want: list[str],
) -> None:
    monkeypatch.setattr("animecli.inference.torch_engine.cpu_has_amx", lambda: amx)
    js = tmp_path / "t.json"
    result = CliRunner().invoke(app, [
        "bench", "--model", "tiny", "--backend", "eager", "--images", str(photos), "--size", "32",
        "--repeat", "1", "--threads", "1", "--no-upstream", "--no-rss", "--json", str(js), *flags,
    ])
    assert result.exit_code == 0, result.output
    assert [r["backend"] for r in json.loads(js.read_text())["rows"]] == want
    assert ("this CPU has AMX" in result.output) == (want == ["eager", "eager bf16"])


def test_cpu_has_amx_survives_a_changed_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    def broken() -> bool:
        raise RuntimeError("probe changed")

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", broken, raising=False)
    assert cpu_has_amx() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert cpu_has_amx() is True


def test_bench_no_photos(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["bench", "--images", str(tmp_path / "empty"), "--model", "lite"])
    assert result.exit_code == 2
    assert "--images" in result.output


def test_bench_model_errors_name_bench_options(tiny_weights_dir: Path, photos: Path, tmp_path: Path) -> None:
    """bench -m takes a name or a path and has no --weights or --arch: its hints must not send users there."""
    import torch

    keyless = tmp_path / "odd.pt"
    torch.save({"not_a_layer.weight": torch.zeros(1)}, keyless)
    for model, says in (("nosuch", "file to -m"), (str(keyless), "cannot tell the architecture")):
        result = CliRunner().invoke(app, ["bench", "--images", str(photos), "--model", model, "--no-rss"])
        assert result.exit_code == 2, result.output
        line = " ".join(result.output.split())
        assert says in line
        assert "--weights PATH" not in line and "pass --arch" not in line


def test_bench_splits_time_and_batches(tiny_weights_dir: Path, photos: Path) -> None:
    make_photo(photos / "p2.jpg", (70, 90), seed=7)
    base = BenchOptions(images=photos, size=48, models=("tiny",), backends=(Backend.EAGER,), repeat=1, threads=1,
                        rss=False, upstream=True)
    one = run_bench(base)
    two = run_bench(BenchOptions(**{**base.__dict__, "batch_size": 2}))
    for result in (one, two):
        for r in result.rows:
            assert r.load_ms > 0 and r.infer_ms > 0 and r.save_ms > 0
            assert r.load_ms + r.infer_ms + r.save_ms <= r.ms_per_image * 1.05  # the parts of the whole
            assert r.gpu_peak_mb is None  # CPU
        cells = dict(zip(COLUMNS, table_rows(result)[0], strict=True))
        shares = [int(v) for v in cells["load/infer/save %"].split("/")]
        assert 98 <= sum(shares) <= 102
    assert "batch 2" in to_markdown(two) and "batch" not in to_markdown(one).split("\n")[0]
    # Batching three images as 2 + 1 gives the same pixels as one at a time.
    eager_two = next(r for r in two.rows if r.backend == "eager")
    assert eager_two.psnr_db is not None and math.isinf(eager_two.psnr_db)


def test_bench_on_cuda_without_a_gpu_is_a_setup_error(photos: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = CliRunner().invoke(app, ["bench", "--device", "cuda", "--images", str(photos), "--model", "lite",
                                      "--repeat", "1", "--no-rss"])
    assert result.exit_code == 2
    assert "CUDA" in result.output and "--device cpu" in result.output


def test_bench_max_images_caps_the_photo_set(tiny_weights_dir: Path, photos: Path, tmp_path: Path) -> None:
    # A GPU run with --batch-size 32 needs --max-images 32 or more: the set is capped at 8 by default.
    captions = []
    for extra in ([], ["--max-images", "1"]):
        js = tmp_path / f"t{len(extra)}.json"
        result = CliRunner().invoke(app, [
            "bench", "--model", "tiny", "--backend", "eager", "--images", str(photos), "--size", "32",
            "--repeat", "1", "--threads", "1", "--no-upstream", "--no-rss", "--json", str(js), *extra,
        ])
        assert result.exit_code == 0, result.output
        captions.append(json.loads(js.read_text())["caption"])
    assert captions[0].startswith("2 photos") and captions[1].startswith("1 photo"), captions


def test_max_images_counts_readable_photos_only(tmp_path: Path) -> None:
    """A broken photo sorted first made `--max-images 1` fail with "no readable photos"."""
    from animecli.benchmark import load_images

    (tmp_path / "0_broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    for i in range(3):
        make_photo(tmp_path / f"p{i}.jpg", size=(40, 30), seed=i)
    assert len(load_images(tmp_path, 32, 1)) == 1
    assert len(load_images(tmp_path, 32, 2)) == 2
    assert len(load_images(tmp_path, 32, 8)) == 3
