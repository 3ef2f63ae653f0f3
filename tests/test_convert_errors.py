"""``animecli convert``: usage and setup errors (exit 2, nothing written) and a missing input among
good ones (exit 1): --device cuda without CUDA, fp16 on the CPU, no images, missing, wrong or truncated
weights, an unknown model.

Every test uses the tiny seeded generators of ``tiny_weights_dir`` on images of a few dozen pixels.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import cli_convert as convert
from tests.conftest import files_under, make_photo, report_rows, size_of

# Every test here runs against the tiny seeded models of conftest, never the shipped ones.
pytestmark = pytest.mark.usefixtures("tiny_weights_dir")


# device and precision


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_setup_error(tmp_path: Path) -> None:
    make_photo(tmp_path / "in" / "a.png")
    r = convert(tmp_path / "in", tmp_path / "out", "--device", "cuda", cpu=False)
    assert r.exit_code == 2, r.output
    assert "--device cpu" in r.stderr
    assert not (tmp_path / "out").exists()


def test_fp16_on_cpu_is_a_usage_error(tmp_path: Path) -> None:
    make_photo(tmp_path / "in" / "a.png")
    r = convert(tmp_path / "in", tmp_path / "out", "--precision", "fp16")
    assert r.exit_code == 2, r.output
    assert "fp16" in r.stderr and "CUDA" in r.stderr
    assert not (tmp_path / "out").exists()


# usage and setup errors


def test_no_images_found_exits_2(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("x")
    r = convert(tmp_path / "in", tmp_path / "out")
    assert r.exit_code == 2, r.output
    assert "no images found" in r.stderr


def test_missing_input_is_reported_failed(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    make_photo(src / "a.png")
    missing = tmp_path / "nope.jpg"
    r = convert(src, missing, out, "--report", rep)
    assert r.exit_code == 1, r.output
    assert f"FAILED {missing}" in r.stderr and "no such file" in r.stderr
    rows = report_rows(rep)
    assert rows["nope.jpg"]["status"] == "failed" and "no such file" in rows["nope.jpg"]["reason"]
    assert rows["a.png"]["status"] == "converted"
    assert files_under(out) == {"a.png"}

    r = convert(missing, out)  # nothing at all to convert: a usage error
    assert r.exit_code == 2
    assert str(missing) in r.stderr


def test_output_that_is_a_file_exits_2(tmp_path: Path) -> None:
    make_photo(tmp_path / "in" / "a.png")
    (tmp_path / "out").write_text("x")
    r = convert(tmp_path / "in", tmp_path / "out")
    assert r.exit_code == 2
    assert "is a file" in r.stderr


def test_missing_weights_file_exits_2_naming_it(tmp_path: Path) -> None:
    make_photo(tmp_path / "in" / "a.png")
    w = tmp_path / "no_such_weights.pt"
    r = convert(tmp_path / "in", tmp_path / "out", "--weights", w)
    assert r.exit_code == 2, r.output
    assert str(w) in r.stderr
    assert not (tmp_path / "out").exists()


def test_wrong_architecture_weights_exit_2_listing_keys(tmp_path: Path, tiny_weights_dir: Path) -> None:
    make_photo(tmp_path / "in" / "a.png")
    r = convert(tmp_path / "in", tmp_path / "out", "--weights", tiny_weights_dir / "tiny_v2.pt", "--arch", "lite")
    assert r.exit_code == 2, r.output
    assert "lite architecture" in r.stderr
    assert "missing" in r.stderr and "unexpected" in r.stderr
    assert "stem.0.1.weight" in r.stderr  # a lite key the v2 file lacks
    assert not (tmp_path / "out").exists()


def test_weights_file_with_detected_arch_converts(tmp_path: Path, tiny_weights_dir: Path) -> None:
    make_photo(tmp_path / "in" / "a.png", (33, 21))
    r = convert(tmp_path / "in", tmp_path / "out", "--weights", tiny_weights_dir / "tiny_v2.pt")
    assert r.exit_code == 0, r.output
    assert size_of(tmp_path / "out" / "a.png") == (33, 21)
    assert "model tiny_v2.pt" in r.stdout


def test_truncated_weights_exit_2(tmp_path: Path, tiny_weights_dir: Path) -> None:
    make_photo(tmp_path / "in" / "a.png")
    data = (tiny_weights_dir / "tiny.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    r = convert(tmp_path / "in", tmp_path / "out", "--weights", cut)
    assert r.exit_code == 2, r.output
    assert str(cut) in r.stderr and "truncated or corrupt" in r.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_model_exits_2(tmp_path: Path) -> None:
    make_photo(tmp_path / "in" / "a.png")
    r = convert(tmp_path / "in", tmp_path / "out", "--model", "nonexistent")
    assert r.exit_code == 2, r.output
    assert "unknown model 'nonexistent'" in r.stderr and "tiny" in r.stderr
