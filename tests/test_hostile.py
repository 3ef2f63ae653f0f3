"""Hostile inputs: bombs, animations, link loops, odd names, unreadable files, unwritable outputs.

Each must end in a clean per-file failure (one line, with the fix) or a clean
stop (exit 1 and a message), never a hang, a crash or a half-written file.
"""

from __future__ import annotations

import errno
import os
import struct
import sys
import tempfile
import threading
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import Result

from animecli.atomic import TEMP_SUFFIX
from animecli.io.discovery import GIF_NOTE
from tests.conftest import cli_convert as convert
from tests.conftest import make_photo, pixels, read_report, report_rows

as_root = pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                             reason="root can read and write regardless of permissions")


# Every test here runs against the tiny seeded models of conftest, never the shipped ones.
pytestmark = pytest.mark.usefixtures("tiny_weights_dir")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(path: Path, side: int = 100_000) -> Path:
    """A 60-byte PNG that claims to be side×side pixels (10 gigapixels by default)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
                     + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))
    return path


def test_decompression_bomb_is_refused_in_one_line(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    src.mkdir()
    bomb_png(src / "bomb.png")
    make_photo(src / "ok.png", (40, 30))
    r = convert(src, out, "--report", rep)
    assert r.exit_code == 1, r.output
    rows = report_rows(rep)
    reason = rows["bomb.png"]["reason"]
    assert rows["bomb.png"]["status"] == "failed"
    assert "decompression bomb" in reason and "--max-pixels" in reason and "\n" not in reason
    assert [line for line in r.stderr.splitlines() if "bomb.png" in line] == [f"FAILED {src / 'bomb.png'}: {reason}"]
    assert rows["ok.png"]["status"] == "converted"
    assert not (out / "bomb.png").exists()
    # the limit is the option's: a small one refuses an ordinary photo, 0 lifts it
    r = convert(src / "ok.png", tmp_path / "out2", "--max-pixels", "1000")
    assert r.exit_code == 1 and "40×30 = 1,200 pixels is over the --max-pixels limit of 1,000" in r.stderr


def _frames(size: tuple[int, int] = (32, 24)) -> list[Image.Image]:
    colours = [(250, 20, 20), (20, 250, 20), (20, 20, 250)]
    return [Image.new("RGB", size, c) for c in colours]


def test_animated_gif_and_webp_convert_their_first_frame(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    src.mkdir()
    frames = _frames()
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[0].save(src / "anim.webp", save_all=True, append_images=frames[1:], duration=100, lossless=True)
    frames[0].save(tmp_path / "first.png")
    r = convert(src, out, "--report", rep)
    assert r.exit_code == 0, r.output
    rows = report_rows(rep)
    for name in ("anim.gif", "anim.webp"):
        assert rows[name]["status"] == "converted"
        assert "animated (3 frames): first frame converted" in rows[name]["notes"]
    assert GIF_NOTE in rows["anim.gif"]["notes"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["anim.png", "anim.webp"]
    with Image.open(out / "anim.png") as img:
        assert (img.format, img.size, getattr(img, "n_frames", 1)) == ("PNG", (32, 24), 1)
    # the first frame, exactly: the same as converting that frame on its own
    r = convert(tmp_path / "first.png", tmp_path / "ref")
    assert r.exit_code == 0, r.output
    assert np.array_equal(pixels(out / "anim.png"), pixels(tmp_path / "ref" / "first.png"))


def test_symlink_loops_do_not_hang(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    make_photo(src / "sub" / "a.png")
    try:
        os.symlink("..", src / "sub" / "up")  # folder loop
        os.symlink("self.png", src / "self.png")  # file link to itself
        os.symlink("missing.png", src / "dangling.png")
    except (OSError, NotImplementedError):
        pytest.skip("symlinks not supported here")
    result: list[Result] = []
    worker = threading.Thread(target=lambda: result.append(convert(src, out, "--report", rep)), daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "convert hung on a symlink loop"
    r = result[0]
    assert r.exit_code == 1, r.output
    rows = report_rows(rep)
    assert rows["a.png"]["status"] == "converted"
    assert "symbolic link loop" in rows["self.png"]["reason"]
    assert "broken symbolic link" in rows["dangling.png"]["reason"]
    assert {p.relative_to(out).as_posix() for p in out.rglob("*.png")} == {"sub/a.png"}


def test_non_utf8_file_name_converts(tmp_path: Path) -> None:
    if sys.platform in ("darwin", "win32"):
        pytest.skip("file names must be valid Unicode on this platform")
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    src.mkdir()
    raw = os.path.join(os.fsencode(src), b"caf\xe9 \xff.png")  # Latin-1 é and a stray byte
    try:
        make_photo(Path(os.fsdecode(raw)))
    except (OSError, UnicodeError):
        pytest.skip("the file system refuses non-UTF-8 names")
    r = convert(src, out, "--report", rep, "-v")
    assert r.exit_code == 0, r.output
    assert os.listdir(os.fsencode(out)).count(b"caf\xe9 \xff.png") == 1
    assert "caf\\xe9 \\xff.png" in r.output  # shown with the bytes escaped, not a crash
    [row] = read_report(rep)["files"]
    assert os.fsencode(row["src"]) == raw  # the report round-trips the exact bytes
    r = convert(src, out, "--report", rep)  # the resume state does too
    assert read_report(rep)["summary"]["skipped"] == 1


@as_root
def test_unreadable_file_is_reported(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    make_photo(src / "ok.png")
    locked = make_photo(src / "secret.png")
    locked.chmod(0)
    try:
        r = convert(src, out, "--report", rep)
    finally:
        locked.chmod(0o644)
    assert r.exit_code == 1, r.output
    rows = report_rows(rep)
    assert rows["ok.png"]["status"] == "converted"
    assert rows["secret.png"]["status"] == "failed"
    assert "permission denied" in rows["secret.png"]["reason"] and "chmod" in rows["secret.png"]["reason"]


@as_root
def test_read_only_output_folder_stops_with_exit_1(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    make_photo(src / "a.png")
    out.mkdir()
    out.chmod(0o555)
    try:
        r = convert(src, out)
    finally:
        out.chmod(0o755)
    assert r.exit_code == 1, r.output
    msg = " ".join(r.stderr.split())
    assert "cannot write to the output folder" in msg and "writable" in msg
    assert list(out.iterdir()) == []


def test_output_turning_read_only_mid_run_stops_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs as root too: the file system "becomes" read-only after the first image."""
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    for i in range(4):
        make_photo(src / f"p{i}.png", seed=i)
    real_mkstemp = tempfile.mkstemp
    made: list[str] = []

    def mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        if kwargs.get("dir") != out:  # e.g. the exported graph written to the cache
            return real_mkstemp(*args, **kwargs)
        if made:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        fd, name = real_mkstemp(*args, **kwargs)
        made.append(name)
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)  # what animecli.atomic calls
    r = convert(src, out, "--report", rep)
    assert r.exit_code == 1, r.output
    msg = " ".join(r.stderr.split())
    assert "cannot write to" in msg and "choose a writable OUTPUT" in msg
    summary = read_report(rep)["summary"]
    assert summary["converted"] == 1 and summary["fatal"]
    assert sorted(p.name for p in out.glob("*.png")) == ["p0.png"]
    assert not list(out.glob(f"*{TEMP_SUFFIX}"))


@pytest.mark.parametrize("mode", ["L", "CMYK", "I", "F", "RGB", "I;16"])
def test_tiff_inputs_of_any_mode_give_readable_rgb_tiffs(tmp_path: Path, mode: str) -> None:
    """A TIFF's first directory (size, samples, sample format) must not be copied as EXIF."""
    src = make_photo(tmp_path / "in" / "p.png", (64, 48))
    with Image.open(src) as img:
        grey = img.convert("L")
        pic = {"L": grey, "CMYK": img.convert("CMYK"), "RGB": img.convert("RGB"),
               "I": grey.convert("I"), "F": grey.convert("F"), "I;16": grey.convert("I").convert("I;16")}[mode]
    pic.save(tmp_path / "in" / "t.tif", compression="tiff_lzw" if mode == "RGB" else None)
    src.unlink()
    r = convert(tmp_path / "in", tmp_path / "out", "--report", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    with Image.open(tmp_path / "out" / "t.tif") as out:
        out.load()
        assert out.mode == "RGB" and out.size == (64, 48)
        assert int(out.tag_v2.get(262, 2)) == 2  # PhotometricInterpretation: RGB


def test_tiff_orientation_is_applied_like_any_other_format(tmp_path: Path) -> None:
    src = make_photo(tmp_path / "p.png", (60, 40), seed=3)
    (tmp_path / "rot").mkdir()
    (tmp_path / "up").mkdir()
    with Image.open(src) as img:
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90° clockwise to view
        img.convert("RGB").save(tmp_path / "rot" / "r.tif", exif=exif)
        upright = img.convert("RGB").transpose(Image.Transpose.ROTATE_270)
    upright.save(tmp_path / "up" / "r.tif")
    notes = {}
    for name in ("rot", "up"):
        r = convert(tmp_path / name, tmp_path / f"{name}_out", "--report", tmp_path / f"{name}.json")
        assert r.exit_code == 0, r.output
        notes[name] = read_report(tmp_path / f"{name}.json")["files"][0]["notes"]
    assert np.array_equal(pixels(tmp_path / "rot_out" / "r.tif"), pixels(tmp_path / "up_out" / "r.tif"))
    # Pillow rotates a TIFF itself while loading it; the report says so as it does for a JPEG.
    assert notes == {"rot": "EXIF rotated", "up": ""}
    with Image.open(tmp_path / "rot_out" / "r.tif") as out:
        assert out.size == (40, 60) and out.getexif().get(0x0112, 1) == 1


def test_a_cmyk_icc_profile_is_not_put_on_an_rgb_output(tmp_path: Path) -> None:
    from PIL import ImageCms

    src = make_photo(tmp_path / "p.png", (40, 30))
    fake_cmyk = bytes(16) + b"CMYK" + bytes(108)  # only the header field that names the colour space
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    (tmp_path / "in").mkdir()
    with Image.open(src) as img:
        img.convert("CMYK").save(tmp_path / "in" / "c.jpg", icc_profile=fake_cmyk)
        img.convert("RGB").save(tmp_path / "in" / "s.jpg", icc_profile=srgb)
    r = convert(tmp_path / "in", tmp_path / "out", "--report", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    with Image.open(tmp_path / "out" / "c.jpg") as c, Image.open(tmp_path / "out" / "s.jpg") as s:
        assert "icc_profile" not in c.info and s.info.get("icc_profile") == srgb
    assert "CMYK ICC profile not kept" in report_rows(tmp_path / "r.json")["c.jpg"]["notes"]


def test_an_image_over_the_formats_size_limit_fails_alone(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    Image.new("RGB", (17000, 8), (90, 120, 30)).save(tmp_path / "in" / "pano.png")
    make_photo(tmp_path / "in" / "ok.png")
    r = convert(tmp_path / "in", tmp_path / "out", "--max-size", "0", "--format", "webp",
                "--report", tmp_path / "r.json")
    assert r.exit_code == 1, r.output
    rows = report_rows(tmp_path / "r.json")
    assert rows["pano.png"]["status"] == "failed" and "limit of 16383 pixels" in rows["pano.png"]["reason"]
    assert rows["pano.png"]["infer_ms"] == 0  # refused before the model ran
    assert rows["ok.png"]["status"] == "converted"
    assert not list((tmp_path / "out").glob("*pano*")) and not list((tmp_path / "out").glob(".animecli-*.part"))


def test_a_multi_page_tiff_is_not_called_animated(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    frames = _frames()
    frames[0].save(tmp_path / "in" / "pages.tif", save_all=True, append_images=frames[1:])
    r = convert(tmp_path / "in", tmp_path / "out", "--report", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    assert "multi-page (3 pages): first page converted" in report_rows(tmp_path / "r.json")["pages.tif"]["notes"]


def test_a_newline_in_a_file_name_stays_on_one_log_line(tmp_path: Path) -> None:
    make_photo(tmp_path / "in" / "two\nlines.png")
    (tmp_path / "in" / "bad\nname.png").write_bytes(b"not a png")
    r = convert(tmp_path / "in", tmp_path / "out", "--verbose")
    assert r.exit_code == 1
    assert any(line.startswith("FAILED ") and "bad\\nname.png" in line for line in r.stderr.splitlines())
    assert any(line.startswith("converted ") and "two\\nlines.png" in line for line in r.stdout.splitlines())


def test_a_tiff_with_large_metadata_still_becomes_a_jpeg(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    src = make_photo(tmp_path / "p.png", (40, 30))
    with Image.open(src) as img:
        # 70 KB of XMP in the TIFF's directory (a JPEG's EXIF block holds 64 KB)
        img.convert("RGB").save(tmp_path / "in" / "big.tif", tiffinfo={700: b"<x>" + b" " * 70_000 + b"</x>"})
    r = convert(tmp_path / "in", tmp_path / "out", "--format", "jpg")
    assert r.exit_code == 0, r.output
    with Image.open(tmp_path / "out" / "big.jpg") as out:
        out.load()


def test_exif_too_large_for_a_jpeg_is_left_out_with_a_note() -> None:
    from animecli.io.writer import save_image
    from animecli.options import OutputFormat, WriteOptions

    with tempfile.TemporaryDirectory() as tmp:
        exif = Image.Exif()
        exif[0x010E] = "x" * 70_000  # ImageDescription: 70 KB
        saved = save_image(np.zeros((8, 8, 3), np.uint8), Path(tmp) / "o.jpg", WriteOptions(OutputFormat.JPG),
                           exif=exif.tobytes())
        assert any(n.startswith("EXIF not kept") for n in saved.notes)
        with Image.open(Path(tmp) / "o.jpg") as out:
            out.load()


def test_a_suffix_with_a_path_separator_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "in"
    make_photo(src / "a.png", seed=1)
    make_photo(src / "b.png", seed=2)
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    for suffix in ("/../../in/b", "/x", "_a/b"):
        r = convert(src, tmp_path / "out", "--suffix", suffix, "--overwrite")
        assert r.exit_code == 2, r.output
        assert "--suffix" in r.stderr and "separator" in r.stderr
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "weights"]  # nothing written anywhere


def test_ray_options_without_the_ray_engine_are_refused(tmp_path: Path) -> None:
    make_photo(tmp_path / "in" / "a.png")
    for option in (["--workers", "4"], ["--address", "auto"], ["--num-gpus-per-worker", "1"]):
        r = convert(tmp_path / "in", tmp_path / "out", *option)
        assert r.exit_code == 2, r.output
        assert f"{option[0]}: for --engine ray only" in r.stderr
    assert not (tmp_path / "out").exists()


def test_a_log_that_cannot_hold_unicode_gets_escapes(tmp_path: Path) -> None:
    """cron with PYTHONIOENCODING=ascii (or an odd locale): "40×30" in the log must not end the run."""
    import subprocess

    src = tmp_path / "in"
    for i in range(3):
        make_photo(src / f"p{i}.png", seed=i)
    make_photo(src / "café.png", seed=5)
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "animecli", "convert", str(src), str(tmp_path / "out"), "-v",
                        "--device", "cpu", "--threads", "1"], capture_output=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert b"40\\xd730" in r.stdout and b"caf\\xe9.png" in r.stdout
    assert len(list((tmp_path / "out").glob("*.png"))) == 4


def test_a_report_spool_that_cannot_be_written_is_one_line_and_the_outputs_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report's rows are spooled to TMPDIR: a full TMPDIR (or a file size limit) must not
    end the run with a traceback."""
    import io

    from animecli.run import report

    class Full(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))

    monkeypatch.setattr(report.tempfile, "TemporaryFile", lambda *a, **k: Full())
    src, rep = tmp_path / "in", tmp_path / "r.json"
    for i in range(3):
        make_photo(src / f"p{i}.png", seed=i)
    r = convert(src, tmp_path / "out", "--report", rep)
    assert r.exit_code == 1, r.output
    assert isinstance(r.exception, SystemExit)  # no traceback
    assert f"could not write the report {rep}" in r.stderr and "the outputs are written" in r.stderr
    assert len(list((tmp_path / "out").glob("*.png"))) == 3
    assert not rep.exists()


def test_an_unwritable_subfolder_fails_its_files_and_the_run_carries_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs as root too: permissions are simulated (mkstemp refuses, the folder reads as not writable)."""
    from animecli.io import writer

    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    make_photo(src / "a" / "x.png", seed=1)
    make_photo(src / "b" / "y.png", seed=2)
    make_photo(src / "b" / "z.png", seed=3)
    real_mkstemp, real_writable = tempfile.mkstemp, writer._writable

    def mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        if kwargs.get("dir") == out / "a":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(writer, "_writable", lambda folder: folder != out / "a" and real_writable(folder))
    r = convert(src, out, "--report", rep)
    assert r.exit_code == 1, r.output
    rows = report_rows(rep)
    assert rows["x.png"]["status"] == "failed" and f"cannot write to {out / 'a'}" in rows["x.png"]["reason"]
    assert rows["y.png"]["status"] == rows["z.png"]["status"] == "converted"
    summary = read_report(rep)["summary"]
    assert not summary["fatal"] and (summary["converted"], summary["failed"]) == (2, 1)


def test_write_errors_name_the_fix(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    long_name = "p" * 240 + ".png"
    make_photo(src / long_name, seed=1)
    make_photo(src / "a.jpg", seed=2)
    (out / "a_anime_style_v2.png").mkdir(parents=True)  # a folder where a.jpg's output goes
    r = convert(src, out, "-f", "png", "--suffix", "_anime_style_v2", "--overwrite", "--report", rep)
    assert r.exit_code == 1, r.output
    rows = report_rows(rep)
    assert "too long for the file system" in rows[long_name]["reason"]
    assert "shorten the input's name or the --suffix" in rows[long_name]["reason"]
    assert f"{out / 'a_anime_style_v2.png'} is a folder in the way of this output; rename or move it" in \
        rows["a.jpg"]["reason"]
