"""``animecli convert``: where the outputs go. The input tree mirrored (non-images ignored, --no-recursive),
several input folders, an output folder inside the input, name collisions, glob inputs.

Every test uses the tiny seeded generators of ``tiny_weights_dir`` on images of a few dozen pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from animecli.io.discovery import Discovery, Ignored, Job
from animecli.options import OutputFormat
from tests.conftest import cli_convert as convert
from tests.conftest import files_under, make_photo, pixels, read_report, report_rows, size_of

# Every test here runs against the tiny seeded models of conftest, never the shipped ones.
pytestmark = pytest.mark.usefixtures("tiny_weights_dir")


# tree mirroring, non-images, --no-recursive, several inputs


def _tree(root: Path) -> None:
    make_photo(root / "a.png", (40, 30), seed=1)
    make_photo(root / "sub" / "b.jpg", (24, 36), seed=2)
    make_photo(root / "sub" / "deep" / "c.png", (20, 20), seed=3)
    (root / "notes.txt").write_text("not an image")
    (root / "sub" / "readme.md").write_text("# nor this")


def test_tree_is_mirrored_and_non_images_are_ignored(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    _tree(src)
    r = convert(src, out, "--report", rep)
    assert r.exit_code == 0, r.output
    assert files_under(out) == {"a.png", "sub/b.jpg", "sub/deep/c.png"}
    assert size_of(out / "a.png") == (40, 30)
    assert size_of(out / "sub" / "b.jpg") == (24, 36)
    assert size_of(out / "sub" / "deep" / "c.png") == (20, 20)
    report = read_report(rep)
    assert report["summary"]["converted"] == 3
    assert report["summary"]["ignored_non_images"] == 2
    assert {Path(r["src"]).name for r in report["files"]} == {"a.png", "b.jpg", "c.png"}
    assert "2 non-image files ignored" in r.output


def test_no_recursive_does_not_descend(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    _tree(src)
    r = convert(src, out, "--no-recursive", "--report", rep)
    assert r.exit_code == 0, r.output
    assert files_under(out) == {"a.png"}
    summary = read_report(rep)["summary"]
    assert summary["converted"] == 1
    assert summary["ignored_non_images"] == 1  # only the top-level notes.txt was seen


def test_several_input_folders_get_their_own_subfolders(tmp_path: Path) -> None:
    one, two, out = tmp_path / "x" / "photos", tmp_path / "y" / "photos", tmp_path / "out"
    make_photo(one / "a.png", (20, 16), seed=1)
    make_photo(two / "a.png", (20, 16), seed=2)
    r = convert(one, two, out)
    assert r.exit_code == 0, r.output
    # same-named folders are told apart by their parents, whatever the order they are given in
    assert files_under(out) == {"photos_x/a.png", "photos_y/a.png"}
    assert np.abs(pixels(out / "photos_x" / "a.png") - pixels(out / "photos_y" / "a.png")).max() > 0
    r = convert(two, one, out, "--report", tmp_path / "again.json")
    assert r.exit_code == 0, r.output
    assert read_report(tmp_path / "again.json")["summary"]["skipped"] == 2


# output folder inside the input folder


def test_output_inside_input_is_never_rediscovered(tmp_path: Path) -> None:
    src = tmp_path / "in"
    out = src / "out"
    make_photo(src / "a.png", seed=1)
    make_photo(src / "b.png", seed=2)
    for i, extra in enumerate((["--overwrite"], ["--overwrite"], [])):
        rep = tmp_path / f"r{i}.json"
        r = convert(src, out, "--report", rep, *extra)
        assert r.exit_code == 0, r.output
        report = read_report(rep)
        srcs = [Path(row["src"]) for row in report["files"]]
        assert sorted(p.name for p in srcs) == ["a.png", "b.png"]
        assert all(out not in p.parents for p in srcs)
        key = "converted" if extra else "skipped"
        assert report["summary"][key] == 2
        assert report["summary"]["failed"] == 0
        assert files_under(out) == {"a.png", "b.png"}  # never out/out/...


# name collisions


def test_name_collision_gets_distinct_names_and_a_note(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    make_photo(src / "a.jpg", seed=1)
    make_photo(src / "a.png", seed=2)
    make_photo(src / "b.jpg", seed=3)
    r = convert(src, out, "--format", "png", "--report", rep)
    assert r.exit_code == 0, r.output
    assert files_under(out) == {"a_jpg.png", "a_png.png", "b.png"}
    assert np.abs(pixels(out / "a_jpg.png") - pixels(out / "a_png.png")).max() > 0  # two different results
    rows = report_rows(rep)
    assert Path(rows["a.jpg"]["dst"]).name == "a_jpg.png"
    assert Path(rows["a.png"]["dst"]).name == "a_png.png"
    assert "name collision with a.png" in rows["a.jpg"]["notes"]
    assert "name collision with a.jpg" in rows["a.png"]["notes"]
    assert "collision" not in rows["b.jpg"]["notes"]


def test_collision_names_are_deterministic_and_avoid_existing_names(tmp_path: Path) -> None:
    files = [tmp_path / "a.jpg", tmp_path / "a.png", tmp_path / "a_jpg.png", tmp_path / "c.txt"]
    disc = Discovery((), tmp_path / "out", True, OutputFormat.PNG, "")

    def plan(order: list[Path]) -> dict[str, str]:
        found = list(disc._plan_dir(order, tmp_path / "out"))
        assert [f.src.name for f in found if isinstance(f, Ignored)] == ["c.txt"]
        return {j.src.name: j.dst.name for j in found if isinstance(j, Job)}

    expected = {"a.jpg": "a_jpg_2.png", "a.png": "a_png.png", "a_jpg.png": "a_jpg.png"}
    assert plan(files) == expected
    assert plan(list(reversed(files))) == expected
    assert len(set(expected.values())) == 3


# glob inputs


def test_glob_converts_only_matching_files(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    make_photo(src / "a.png", seed=1)
    make_photo(src / "b.png", seed=2)
    make_photo(src / "c.jpg", seed=3)
    make_photo(src / "sub" / "d.png", seed=4)
    r = convert(str(src / "*.png"), out, "--suffix", "_anime")
    assert r.exit_code == 0, r.output
    assert files_under(out) == {"a_anime.png", "b_anime.png"}
    assert size_of(out / "a_anime.png") == (40, 30)
