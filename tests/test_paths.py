"""Inputs and outputs that overlap: nothing already written may be stylised twice, overwritten
by another input's output, or replace the photo it was made from."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cli_convert as convert
from tests.conftest import make_photo, read_report

# Every test here runs against the tiny seeded models of conftest, never the shipped ones.
pytestmark = pytest.mark.usefixtures("tiny_weights_dir")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def summary(report: Path) -> dict[str, Any]:
    result: dict[str, Any] = read_report(report)["summary"]
    return result


def test_a_glob_over_the_input_leaves_the_output_inside_it_alone(tmp_path: Path) -> None:
    photos = tmp_path / "p"
    make_photo(photos / "m0.png", seed=1)
    out = photos / "anime"
    r = convert(str(photos / "*"), out, "--report", tmp_path / "r1.json")
    assert r.exit_code == 0, r.output
    first = digest(out / "m0.png")
    for run in (2, 3):  # the glob now also matches p/anime: its files are outputs, not inputs
        r = convert(str(photos / "*"), out, "--report", tmp_path / f"r{run}.json")
        assert r.exit_code == 0, r.output
        s = summary(tmp_path / f"r{run}.json")
        assert (s["converted"], s["skipped"], s["failed"]) == (0, 1, 0)
    assert digest(out / "m0.png") == first
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["m0.png"]


def test_an_input_folder_that_is_the_output_is_refused(tmp_path: Path) -> None:
    photos = tmp_path / "s"
    src = make_photo(photos / "sub" / "m0.png")
    before = digest(src)
    r = convert(photos, photos, "--overwrite")
    assert r.exit_code == 2, r.output
    assert "is also the OUTPUT folder" in r.stderr and "different OUTPUT" in r.stderr
    assert digest(src) == before
    r = convert(photos / "sub", photos)  # a folder inside the output is fine: outputs go to the output root
    assert r.exit_code == 0, r.output
    assert digest(src) == before and (photos / "m0.png").is_file()
    r = convert(str(photos / "sub" / "*"), photos)  # so is a glob pointing inside it
    assert r.exit_code == 0, r.output


def test_an_output_that_would_replace_its_input_fails_that_file(tmp_path: Path) -> None:
    photos = tmp_path / "s"
    src = make_photo(photos / "m0.png")
    other = make_photo(tmp_path / "elsewhere" / "m1.png", seed=2)
    before = digest(src)
    r = convert(src, other, photos, "--overwrite", "--report", tmp_path / "r.json")
    assert r.exit_code == 1, r.output
    assert "replace the input file itself" in r.stderr and "--suffix" in r.stderr
    assert digest(src) == before
    assert (photos / "m1.png").is_file()  # the other input was converted
    r = convert(src, photos, "--overwrite", "--suffix", "_anime")
    assert r.exit_code == 0, r.output
    assert digest(src) == before and (photos / "m0_anime.png").is_file()


def test_same_names_from_two_folders_are_both_kept(tmp_path: Path) -> None:
    a = make_photo(tmp_path / "x" / "a.png", seed=1)
    b = make_photo(tmp_path / "y" / "a.png", seed=2)
    out = tmp_path / "both"
    r = convert(a, b, out, "--report", tmp_path / "r1.json")
    assert r.exit_code == 0, r.output
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == {"a_x.png", "a_y.png"}
    assert digest(out / "a_x.png") != digest(out / "a_y.png")
    rows = {row["dst"]: row for row in read_report(tmp_path / "r1.json")["files"]}
    assert "written as a_y.png" in rows[str(out / "a_y.png")]["notes"]
    kept = {name: digest(out / name) for name in ("a_x.png", "a_y.png")}
    r = convert(b, a, out, "--report", tmp_path / "r2.json")  # a rerun, in another order, maps them the same way
    assert r.exit_code == 0, r.output
    s = summary(tmp_path / "r2.json")
    assert (s["converted"], s["skipped"]) == (0, 2)
    assert {name: digest(out / name) for name in kept} == kept


def test_the_same_file_given_twice_is_converted_once(tmp_path: Path) -> None:
    a = make_photo(tmp_path / "p" / "a.png")
    r = convert(a, a, tmp_path / "p", str(tmp_path / "p" / "*.png"), tmp_path / "out", "--report", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    assert summary(tmp_path / "r.json")["converted"] == 1
    assert {p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")} == {"a.png"}


def test_same_name_from_a_folder_and_a_file(tmp_path: Path) -> None:
    make_photo(tmp_path / "photos" / "a.png", seed=1)
    extra = make_photo(tmp_path / "extra" / "a.png", seed=2)
    out = tmp_path / "out"
    r = convert(extra, tmp_path / "photos", out, "--report", tmp_path / "r1.json")
    assert r.exit_code == 0, r.output
    # the folder's file keeps the name; the file named on its own is renamed after its folder
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == {"a.png", "a_extra.png"}
    r = convert(tmp_path / "photos", extra, out, "--report", tmp_path / "r2.json")  # either order
    assert r.exit_code == 0, r.output
    assert summary(tmp_path / "r2.json")["skipped"] == 2


def test_an_output_never_lands_on_a_photo_named_as_an_input(tmp_path: Path) -> None:
    v4 = tmp_path / "v4"
    make_photo(v4 / "sub" / "s.png", seed=1)
    mine = make_photo(v4 / "s.png", seed=2)
    before = digest(mine)
    r = convert(v4 / "sub", mine, v4, "--overwrite", "--report", tmp_path / "r.json")
    assert digest(mine) == before  # sub/s.png's output went elsewhere
    assert (v4 / "s_sub.png").is_file()
    assert r.exit_code == 1 and "replace the input file itself" in r.stderr  # v4/s.png -> v4/s.png


@pytest.mark.parametrize("missing", ["nope", "nomatch*.jpg"])
def test_inputs_that_do_not_exist_at_all_exit_2(tmp_path: Path, missing: str) -> None:
    r = convert(tmp_path / missing, tmp_path / "out")
    assert r.exit_code == 2, r.output
    assert "no such file or folder" in r.stderr and "check the INPUT paths" in r.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was made


def test_a_report_that_cannot_be_written_is_refused_before_converting(tmp_path: Path) -> None:
    src = make_photo(tmp_path / "in" / "a.png")
    (tmp_path / "file").write_text("x")
    for report, says in ((tmp_path, "is a folder"), (tmp_path / "r.txt", "end the name in .json, .csv or .jsonl"),
                         (tmp_path / "file" / "r.json", "is a file, not a folder"),
                         (tmp_path / "out" / ".animecli.state.jsonl", "animecli's own files")):
        r = convert(src, tmp_path / "out", "--report", report)
        assert r.exit_code == 2, r.output
        assert says in r.stderr
        assert not (tmp_path / "out").exists()


def test_hidden_files_and_folders_are_passed_over_unless_asked(tmp_path: Path) -> None:
    """A macOS ``._a.jpg`` resource fork is not an image: walked, it failed every cron run (exit 1)."""
    photos = tmp_path / "p"
    make_photo(photos / "a.jpg", seed=1)
    (photos / "._a.jpg").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    make_photo(photos / ".thumbs" / "t.jpg", seed=2)
    make_photo(photos / ".hidden.png", seed=3)
    r = convert(photos, tmp_path / "o1", "--report", tmp_path / "r1.json")
    assert r.exit_code == 0, r.output
    assert (summary(tmp_path / "r1.json")["converted"], summary(tmp_path / "r1.json")["failed"]) == (1, 0)
    assert sorted(p.name for p in (tmp_path / "o1").iterdir() if not p.name.startswith(".animecli")) == ["a.jpg"]
    # Named on its own, a hidden file is taken.
    r = convert(photos / ".hidden.png", tmp_path / "o2")
    assert r.exit_code == 0 and (tmp_path / "o2" / ".hidden.png").is_file(), r.output
    # --hidden walks them all: the resource fork fails (exit 1), the others are converted.
    r = convert(photos, tmp_path / "o3", "--hidden", "--report", tmp_path / "r3.json")
    assert r.exit_code == 1, r.output
    s = summary(tmp_path / "r3.json")
    assert (s["converted"], s["failed"]) == (3, 1)
    assert (tmp_path / "o3" / ".thumbs" / "t.jpg").is_file()


@pytest.mark.parametrize("why", ["unknown model", "lock held", "damaged weights"])
def test_a_run_that_fails_before_starting_replaces_an_earlier_report(tmp_path: Path, why: str,
                                                                    tiny_weights_dir: Path) -> None:
    """A monitor reads the report: a previous run's success left at that path hid the failure."""
    from animecli.run.lock import me

    photos, out, report = tmp_path / "p", tmp_path / "o", tmp_path / "last.json"
    make_photo(photos / "a.jpg", seed=1)
    assert convert(photos, out, "--report", report).exit_code == 0
    assert summary(report)["converted"] == 1 and not summary(report)["fatal"]
    make_photo(photos / "b.jpg", seed=2)
    args: list[object] = [photos, out, "--report", report]
    if why == "unknown model":
        args += ["-m", "nosuch"]
        code, says = 2, "unknown model"
    elif why == "lock held":
        (out / ".animecli.lock").write_text(me().to_line())
        code, says = 3, "another"
    else:  # found after the lock is taken and the resume state read
        bad = tmp_path / "bad.pt"
        bad.write_bytes(b"not a checkpoint")
        args += ["--weights", bad]
        code, says = 2, "bad.pt"
    r = convert(*args)
    assert r.exit_code == code, r.output
    s = summary(report)
    assert says in s["fatal"] and s["converted"] == 0, s


def test_one_folder_given_twice_goes_to_the_output_root(tmp_path: Path) -> None:
    photos = tmp_path / "p"
    make_photo(photos / "a.png", seed=1)
    (tmp_path / "link").symlink_to(photos)
    for run, args in enumerate(((photos, f"{photos}/"), (photos, tmp_path / "link"), (photos,))):
        out = tmp_path / f"out{run}"
        r = convert(*args, out, "--report", tmp_path / f"r{run}.json")
        assert r.exit_code == 0, r.output
        assert summary(tmp_path / f"r{run}.json")["converted"] == 1
        assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["a.png"]


def test_a_new_same_named_input_notes_the_output_it_leaves_behind(tmp_path: Path) -> None:
    """a.jpg → a.png; then a.png appears: both are renamed (a_jpg.png, a_png.png) and the old a.png,
    which neither writes any more, is named in the notes instead of lying there unexplained."""
    photos, out = tmp_path / "p", tmp_path / "o"
    make_photo(photos / "a.jpg", seed=1)
    assert convert(photos, out, "-f", "png").exit_code == 0
    make_photo(photos / "a.png", seed=2)
    r = convert(photos, out, "-f", "png", "--report", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    rows = read_report(tmp_path / "r.json")["files"]
    assert sorted(Path(row["dst"]).name for row in rows) == ["a_jpg.png", "a_png.png"]
    assert all("a.png there is from an earlier run" in row["notes"] for row in rows), rows


def test_an_empty_output_argument_is_refused_not_the_current_folder(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`animecli convert in "$OUT"` with OUT unset wrote into (and over files in) the current folder."""
    photos, cwd = tmp_path / "p", tmp_path / "cwd"
    make_photo(photos / "a.jpg", seed=1)
    make_photo(cwd / "a.jpg", seed=2)
    before = digest(cwd / "a.jpg")
    monkeypatch.chdir(cwd)
    r = convert(photos, "", "--overwrite")
    assert r.exit_code == 2, r.output
    assert "OUTPUT is an empty string" in r.output
    assert digest(cwd / "a.jpg") == before and sorted(p.name for p in cwd.iterdir()) == ["a.jpg"]


def test_an_output_that_is_a_file_writes_the_report_too(tmp_path: Path) -> None:
    photos, out, report = tmp_path / "p", tmp_path / "o", tmp_path / "last.json"
    make_photo(photos / "a.jpg", seed=1)
    assert convert(photos, out, "--report", report).exit_code == 0
    for child in out.iterdir():
        child.unlink()
    out.rmdir()
    out.write_text("oops")
    r = convert(photos, out, "--report", report)
    assert r.exit_code == 2, r.output
    assert "is a file" in r.output
    s = summary(report)
    assert "is a file" in s["fatal"] and s["converted"] == 0, s  # not the earlier run's success


def test_a_missing_input_folder_does_not_change_where_the_others_go(tmp_path: Path) -> None:
    """`A B out` writes out/A/ and out/B/; with B missing (a share not mounted) A's files went to
    out/ itself: converted again, as duplicates beside out/A/."""
    a, b, out = tmp_path / "A", tmp_path / "B", tmp_path / "o"
    make_photo(a / "p0.png", seed=1)
    make_photo(b / "p1.png", seed=2)
    assert convert(a, b, out).exit_code == 0
    b.rename(tmp_path / "B.away")
    r = convert(a, b, out, "--report", tmp_path / "r.json")
    assert r.exit_code == 1, r.output  # B is missing: reported
    s = summary(tmp_path / "r.json")
    assert (s["converted"], s["skipped"]) == (0, 1), s
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["A", "B"]


def test_a_folder_where_an_output_goes_is_a_failure_not_an_existing_output(tmp_path: Path) -> None:
    photos, out = tmp_path / "p", tmp_path / "o"
    make_photo(photos / "a.png", seed=1)
    (out / "a.png").mkdir(parents=True)
    r = convert(photos, out, "--report", tmp_path / "r.json")
    assert r.exit_code == 1, r.output  # was exit 0: "skipped: output exists"
    s = summary(tmp_path / "r.json")
    assert (s["failed"], s["skipped"]) == (1, 0), s
    assert "folder" in r.output
