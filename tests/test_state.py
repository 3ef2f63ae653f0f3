"""Resume state: reruns skip only outputs made from the same input with the same settings."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from animecli.errors import OutputError
from animecli.run.resume import STATE_NAME, RunState, Settings, Stamp, Verdict
from tests.conftest import cli_convert as convert
from tests.conftest import make_photo, report_rows

# Every test here runs against the tiny seeded models of conftest, never the shipped ones.
pytestmark = pytest.mark.usefixtures("tiny_weights_dir")


def statuses(src: Path, out: Path, rep: Path, *extra: object) -> dict[str, dict[str, Any]]:
    """Run a conversion and return the report's rows by input file name."""
    r = convert(src, out, "--report", rep, *extra)
    assert r.exit_code == 0, r.output
    return report_rows(rep)


def state_lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / STATE_NAME).read_text().splitlines()]


@pytest.fixture
def converted(tmp_path: Path) -> tuple[Path, Path]:
    src, out = tmp_path / "in", tmp_path / "out"
    make_photo(src / "a.png", seed=1)
    make_photo(src / "sub" / "b.png", seed=2)
    r = convert(src, out)
    assert r.exit_code == 0, r.output
    return src, out


def test_state_records_each_output(converted: tuple[Path, Path]) -> None:
    src, out = converted
    lines = state_lines(out)
    assert sorted(line["dst"] for line in lines) == ["a.png", "sub/b.png"]
    a = next(line for line in lines if line["dst"] == "a.png")
    st = (src / "a.png").stat()
    assert (a["size"], a["mtime_ns"], a["sha256"]) == (st.st_size, st.st_mtime_ns, None)
    assert len(a["fp"]) == 32


def test_changed_input_is_converted_again(converted: tuple[Path, Path], tmp_path: Path) -> None:
    src, out = converted
    rows = statuses(src, out, tmp_path / "r1.json")
    assert {r["status"] for r in rows.values()} == {"skipped"}
    assert "up to date" in rows["a.png"]["reason"] and "--overwrite" in rows["a.png"]["reason"]

    make_photo(src / "a.png", (50, 20), seed=3)  # new content
    rows = statuses(src, out, tmp_path / "r2.json")
    assert (rows["a.png"]["status"], rows["b.png"]["status"]) == ("converted", "skipped")
    assert "input changed" in rows["a.png"]["notes"]
    with Image.open(out / "a.png") as img:
        assert img.size == (50, 20)
    assert not list(out.rglob(".animecli-*.part"))

    rows = statuses(src, out, tmp_path / "r3.json")
    assert {r["status"] for r in rows.values()} == {"skipped"}


def test_changed_settings_convert_again(converted: tuple[Path, Path], tmp_path: Path) -> None:
    src, out = converted
    rows = statuses(src, out, tmp_path / "r1.json", "--max-size", "32")
    assert {r["status"] for r in rows.values()} == {"converted"}
    assert "settings changed" in rows["a.png"]["notes"]
    rows = statuses(src, out, tmp_path / "r2.json", "--max-size", "32")
    assert {r["status"] for r in rows.values()} == {"skipped"}
    rows = statuses(src, out, tmp_path / "r3.json", "--max-size", "32", "--model", "tiny_v2")
    assert {r["status"] for r in rows.values()} == {"converted"}
    # quality does not change a PNG: still up to date
    rows = statuses(src, out, tmp_path / "r4.json", "--max-size", "32", "--model", "tiny_v2", "--quality", "50")
    assert {r["status"] for r in rows.values()} == {"skipped"}


def test_quality_counts_for_jpeg_outputs(converted: tuple[Path, Path], tmp_path: Path) -> None:
    src, out = converted
    assert statuses(src, out, tmp_path / "r1.json", "-f", "jpg")["a.png"]["status"] == "converted"
    assert statuses(src, out, tmp_path / "r2.json", "-f", "jpg")["a.png"]["status"] == "skipped"
    assert statuses(src, out, tmp_path / "r3.json", "-f", "jpg", "--quality", "60")["a.png"]["status"] == "converted"


def test_deleted_state_falls_back_to_existing_outputs(converted: tuple[Path, Path], tmp_path: Path) -> None:
    src, out = converted
    (out / STATE_NAME).unlink()
    make_photo(src / "a.png", (50, 20), seed=3)  # changed, but nothing records the old input
    rows = statuses(src, out, tmp_path / "r.json", "--max-size", "32")
    assert {r["status"] for r in rows.values()} == {"skipped"}
    assert "no record of animecli making it" in rows["a.png"]["reason"]
    assert "left alone; --overwrite replaces it" in rows["a.png"]["reason"]
    rows = statuses(src, out, tmp_path / "r2.json", "--overwrite")
    assert {r["status"] for r in rows.values()} == {"converted"}
    assert sorted(line["dst"] for line in state_lines(out)) == ["a.png", "sub/b.png"]


def test_verify_compares_content_not_mtime(converted: tuple[Path, Path], tmp_path: Path) -> None:
    src, out = converted
    # No digest recorded yet: --verify cannot vouch for the outputs, so it redoes them once.
    rows = statuses(src, out, tmp_path / "r1.json", "--verify")
    assert {r["status"] for r in rows.values()} == {"converted"}
    assert "--verify" in rows["a.png"]["notes"]
    assert all(line["sha256"] for line in state_lines(out)[-2:])
    os.utime(src / "a.png", ns=(0, 0))  # touched, same content
    rows = statuses(src, out, tmp_path / "r2.json", "--verify")
    assert {r["status"] for r in rows.values()} == {"skipped"}
    # same size and mtime, other content (an uncompressed BMP with one pixel changed): only --verify notices
    path = make_photo(src / "c.bmp", seed=4)
    statuses(src, out, tmp_path / "r3.json", "--verify")
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert statuses(src, out, tmp_path / "r4.json")["c.bmp"]["status"] == "skipped"
    row = statuses(src, out, tmp_path / "r5.json", "--verify")["c.bmp"]
    assert row["status"] == "converted" and "input changed" in row["notes"]


def test_torn_and_garbled_lines_are_ignored(converted: tuple[Path, Path], tmp_path: Path) -> None:
    src, out = converted
    with (out / STATE_NAME).open("a") as fh:
        # Junk that parses as JSON but not as numbers (int(1e400) overflows), then a crash mid-append.
        fh.write('{"dst": "zz.png", "size": 1e400, "mtime_ns": 1, "fp": "x"}\n')
        fh.write('garbage\n{"dst": "a.png", "size": 1, "mt')
    rows = statuses(src, out, tmp_path / "r.json")
    assert {r["status"] for r in rows.values()} == {"skipped"}


def test_dry_run_uses_the_state_for_inputs(converted: tuple[Path, Path]) -> None:
    src, out = converted
    make_photo(src / "a.png", (50, 20), seed=3)
    r = convert(src, out, "--dry-run")
    assert r.exit_code == 0, r.output
    assert "would convert" in r.output and "a.png" in r.output and "input changed" in r.output
    assert "b.png" not in r.output.split("would convert", 1)[1].split("\n")[0]


def test_compaction_keeps_the_latest_line(tmp_path: Path) -> None:
    settings = Settings("x" * 64, "lite/1.0/align", 1024, "same", 92, "", "float32")
    dst = tmp_path / "a.png"
    dst.write_bytes(b"png")
    state = RunState(tmp_path)
    for i in range(1100):
        state.record(dst, Stamp(i, i), settings.fingerprint(dst))
    state.close()
    state = RunState(tmp_path)
    assert len(state) == 1
    state.compact()
    assert len((tmp_path / STATE_NAME).read_text().splitlines()) == 1
    assert RunState(tmp_path).verdict(dst, Stamp(1099, 1099), settings.fingerprint(dst)) is Verdict.UP_TO_DATE
    assert RunState(tmp_path).verdict(dst, Stamp(1098, 1098), None) is Verdict.INPUT_CHANGED


def test_a_record_after_a_torn_last_line_starts_on_its_own_line(tmp_path: Path) -> None:
    # A crash (or full disk) mid-append leaves a last line without its newline; appending
    # straight onto it glued the next record to it, so that record was lost and an older line
    # for the same output won: a stale output counted as up to date.
    settings = Settings("x" * 64, "lite/1.0/align", 1024, "same", 92, "", "float32")
    old, new = settings.fingerprint(tmp_path / "a.png"), Settings(
        "y" * 64, "lite/1.0/align", 1024, "same", 92, "", "float32").fingerprint(tmp_path / "a.png")
    dst = tmp_path / "a.png"
    dst.write_bytes(b"png")
    state = RunState(tmp_path)
    state.record(dst, Stamp(1, 2), old)
    state.close()
    with (tmp_path / STATE_NAME).open("a") as fh:
        fh.write('{"dst": "b.png", "si')
    state = RunState(tmp_path)
    state.record(dst, Stamp(1, 2), new)
    state.close()
    assert RunState(tmp_path).verdict(dst, Stamp(1, 2), new) is Verdict.UP_TO_DATE
    assert RunState(tmp_path).verdict(dst, Stamp(1, 2), old) is Verdict.SETTINGS_CHANGED


def test_undecodable_names_round_trip(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9.png")  # not UTF-8: a surrogate escape in Python
    dst = tmp_path / name
    dst.write_bytes(b"png")
    settings = Settings("x", "lite", 0, "same", 92, "", "float32")
    state = RunState(tmp_path)
    state.record(dst, Stamp(1, 2), settings.fingerprint(dst))
    state.close()
    assert RunState(tmp_path).verdict(dst, Stamp(1, 2), settings.fingerprint(dst)) is Verdict.UP_TO_DATE


def test_a_state_file_that_is_a_link_is_refused_not_followed(tmp_path: Path) -> None:
    src, out, other = tmp_path / "in", tmp_path / "out", tmp_path / "photo.png"
    make_photo(src / "a.png")
    make_photo(other, seed=4)
    before = other.read_bytes()
    out.mkdir()
    (out / STATE_NAME).symlink_to(other)
    r = convert(src, out)
    assert r.exit_code == 2, r.output
    assert STATE_NAME in r.stderr and "symbolic link" in r.stderr and "remove the link" in r.stderr
    assert other.read_bytes() == before
    assert not (out / "a.png").exists()


def test_a_link_made_after_the_check_is_not_followed(tmp_path: Path) -> None:
    out, other = tmp_path / "out", tmp_path / "victim.txt"
    out.mkdir()
    other.write_text("keep me\n")
    state = RunState(out)
    (out / STATE_NAME).symlink_to(other)
    with pytest.raises(OutputError):
        state.record(out / "a.png", Stamp(1, 2, None), "f" * 32)
    assert other.read_text() == "keep me\n"


def test_dry_run_says_what_it_compared(converted: tuple[Path, Path]) -> None:
    """--dry-run loads no model, so it cannot compare settings: it must not call an output
    made with other settings "up to date with these settings"; its summary counts the plan."""
    src, out = converted
    make_photo(src / "c.png", seed=4)
    r = convert(src, out, "--dry-run", "--quality", "50", "-f", "png")
    assert r.exit_code == 0, r.output
    assert "a real run also compares the settings" in r.output and "these settings" not in r.output
    assert "1 would be converted, 2 skipped, 0 failed" in r.output
