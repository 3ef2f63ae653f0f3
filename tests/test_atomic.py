"""Atomic writes: permissions like any new file, and stale temp files from killed runs removed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from typer.testing import CliRunner

from animecli.atomic import TEMP_PREFIX, TEMP_SUFFIX, atomic_write_bytes, remove_stale_temps
from animecli.cli import app
from tests.conftest import make_photo


def test_atomic_file_gets_umask_permissions(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    atomic_write_bytes(dest, b"abc")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o666 & ~mask
    assert dest.read_bytes() == b"abc"


def test_remove_stale_temps_only_touches_ours(tmp_path: Path) -> None:
    ours = tmp_path / f"{TEMP_PREFIX}abc{TEMP_SUFFIX}"
    ours.write_bytes(b"half")
    other = tmp_path / "keep.part"
    other.write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == 1
    assert not ours.exists() and other.exists()


def test_convert_removes_temps_left_by_a_killed_run(tiny_weights_dir: Path, tmp_path: Path) -> None:
    make_photo(tmp_path / "in" / "sub" / "a.png")
    stale = tmp_path / "out" / "sub" / f"{TEMP_PREFIX}x1y2{TEMP_SUFFIX}"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"\x89PNG half written")
    res = CliRunner().invoke(app, ["convert", str(tmp_path / "in"), str(tmp_path / "out"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert not stale.exists()
    assert (tmp_path / "out" / "sub" / "a.png").is_file()
