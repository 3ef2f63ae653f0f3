"""``animecli convert``: how it writes. Atomic writes (a failed save leaves nothing behind),
--skip-existing / --overwrite, and --dry-run (which writes nothing).

Every test uses the tiny seeded generators of ``tiny_weights_dir`` on images of a few dozen pixels.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from animecli.atomic import TEMP_PREFIX, TEMP_SUFFIX, atomic_write
from animecli.run.lock import LOCK_NAME
from tests.conftest import cli_convert as convert
from tests.conftest import files_under, make_photo, read_report, report_rows, size_of

# Every test here runs against the tiny seeded models of conftest, never the shipped ones.
pytestmark = pytest.mark.usefixtures("tiny_weights_dir")


# atomic writes


def test_failed_save_leaves_no_output_and_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    make_photo(src / "a.png", seed=1)
    make_photo(src / "b.png", seed=2)
    real_save = Image.Image.save
    calls: list[list[str]] = []

    def flaky_save(self: Image.Image, fp: Any, format: str | None = None, **params: Any) -> None:
        if not calls:
            calls.append(sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME))  # what is on disk mid-save
            fp.write(b"\x89PNG partial data")
            raise OSError("simulated I/O error")
        calls.append([])
        real_save(self, fp, format=format, **params)

    monkeypatch.setattr(Image.Image, "save", flaky_save)
    r = convert(src, out, "--report", rep)
    assert r.exit_code == 1, r.output
    assert len(calls) == 2  # the run went on to the second image
    [mid_save] = calls[0]
    assert mid_save.startswith(TEMP_PREFIX) and mid_save.endswith(TEMP_SUFFIX)  # it did write a temp file
    assert not (out / "a.png").exists()
    assert list(out.glob(f"{TEMP_PREFIX}*")) == []
    assert files_under(out) == {"b.png"}
    assert size_of(out / "b.png") == (40, 30)
    rows = report_rows(rep)
    assert rows["a.png"]["status"] == "failed"
    assert "could not be written" in rows["a.png"]["reason"]
    assert "simulated I/O error" in rows["a.png"]["reason"]
    assert rows["b.png"]["status"] == "converted"


def test_atomic_write_keeps_the_old_file_on_error(tmp_path: Path) -> None:
    folder = tmp_path / "atomic"
    folder.mkdir()
    dest = folder / "x.bin"
    dest.write_bytes(b"old")

    def boom(fh: Any) -> None:
        fh.write(b"new but incomplete")
        raise OSError("disk hiccup")

    with pytest.raises(OSError, match="disk hiccup"):
        atomic_write(dest, boom)
    assert dest.read_bytes() == b"old"
    assert sorted(os.listdir(folder)) == ["x.bin"]
    atomic_write(dest, lambda fh: fh.write(b"new"))
    assert dest.read_bytes() == b"new"
    assert sorted(os.listdir(folder)) == ["x.bin"]


# --skip-existing / --overwrite


def test_skip_existing_then_overwrite(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    make_photo(src / "a.png", seed=1)
    make_photo(src / "b.png", seed=2)
    r = convert(src, out, "--report", tmp_path / "r1.json")
    assert r.exit_code == 0, r.output
    assert read_report(tmp_path / "r1.json")["summary"]["converted"] == 2
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    r = convert(src, out, "--report", tmp_path / "r2.json")
    assert r.exit_code == 0, r.output
    report = read_report(tmp_path / "r2.json")
    assert (report["summary"]["converted"], report["summary"]["skipped"]) == (0, 2)
    assert {row["status"] for row in report["files"]} == {"skipped"}
    assert all("--overwrite" in row["reason"] for row in report["files"])
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps

    (out / "b.png").write_bytes(b"")  # an empty leftover is not a finished output
    r = convert(src, out, "--report", tmp_path / "r3.json")
    assert r.exit_code == 0, r.output
    rows = report_rows(tmp_path / "r3.json")
    assert (rows["a.png"]["status"], rows["b.png"]["status"]) == ("skipped", "converted")
    assert size_of(out / "b.png") == (40, 30)

    r = convert(src, out, "--overwrite", "--report", tmp_path / "r4.json")
    assert r.exit_code == 0, r.output
    assert read_report(tmp_path / "r4.json")["summary"]["converted"] == 2
    assert (out / "a.png").stat().st_mtime_ns != stamps["a.png"]
    assert files_under(out) == {"a.png", "b.png"}


# --dry-run


def test_dry_run_writes_nothing_and_lists_plan(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    make_photo(src / "a.png")
    make_photo(src / "sub" / "b.jpg")
    r = convert(src, out, "--dry-run", "--report", rep)
    assert r.exit_code == 0, r.output
    assert not out.exists()
    assert f"would convert {src / 'a.png'} -> {out / 'a.png'}" in r.stdout
    assert f"would convert {src / 'sub' / 'b.jpg'} -> {out / 'sub' / 'b.jpg'}" in r.stdout
    report = read_report(rep)
    assert [row["status"] for row in report["files"]] == ["planned", "planned"]
    assert report["summary"]["converted"] == 0


def test_dry_run_reports_an_empty_file_as_the_real_run_would(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    make_photo(src / "a.png")
    (src / "empty.jpg").write_bytes(b"")
    dry = convert(src, out, "--dry-run", "--report", rep)
    planned = {Path(row["src"]).name: row for row in read_report(rep)["files"]}
    real = convert(src, out)
    assert dry.exit_code == real.exit_code == 1, (dry.output, real.output)
    assert planned["a.png"]["status"] == "planned"
    assert planned["empty.jpg"]["status"] == "failed"
    assert "empty file (0 bytes)" in planned["empty.jpg"]["reason"]
    assert f"{src / 'empty.jpg'}: empty file (0 bytes)" in dry.stderr
    assert dry.stderr.splitlines()[0] == real.stderr.splitlines()[0]


def test_dry_run_with_nothing_to_do_exits_2(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    r = convert(tmp_path / "in", tmp_path / "out", "--dry-run")
    assert r.exit_code == 2
    assert "no images found" in r.stderr
