"""Atomic writes: permissions like any new file, and stale temp files from killed runs removed."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from animecli.atomic import TEMP_PREFIX, TEMP_SUFFIX, atomic_write_bytes, remove_stale_temps
from animecli.cli.app import app
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


_SHORT_WRITE = """
import io, resource, signal, sys
from pathlib import Path
import numpy as np
from PIL import Image
from animecli.options import WriteOptions
from animecli.errors import AnimecliError
from animecli.io.writer import save_image
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing us
dest, fmt = Path(sys.argv[1]), sys.argv[2]
y, x = np.mgrid[0:300, 0:300]
rgb = np.stack([(x * 0.8) % 256, (y * 0.8) % 256, ((x + y) * 0.4) % 256], -1).astype("uint8")
params = {"quality": 92, "subsampling": 0} if fmt == "JPEG" else {}
buf = io.BytesIO()
Image.fromarray(rgb).save(buf, format=fmt, **params)
limit = len(buf.getvalue()) - 50  # room for all but the end of the last block: one short write()
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    save_image(rgb, dest, WriteOptions(quality=92))
    print("saved")
except AnimecliError as exc:
    print("refused:", exc)
"""


@pytest.mark.parametrize(("name", "fmt"), [("out.jpg", "JPEG"), ("out.png", "PNG")])
def test_a_short_write_at_the_end_is_an_error_not_a_cut_image(tmp_path: Path, name: str, fmt: str) -> None:
    """The disk fills during the last block of an image: the file must not be saved cut short.

    Pillow's JPEG encoder wrote to the file descriptor itself and ignored a short write(), so
    the cut file was renamed into place, reported converted, and skipped as up to date after.
    (RLIMIT_FSIZE gives the same short write a full disk does, without a mount.)
    """
    dest = tmp_path / name
    run = subprocess.run([sys.executable, "-c", _SHORT_WRITE, str(dest), fmt], capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("refused:") and "could not be written" in run.stdout, run.stdout
    assert not dest.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]
