"""``animecli convert``: what it makes of each image. EXIF orientation, image modes (alpha, CMYK,
16-bit, palettes), broken files (one line each, the rest convert), --max-size and odd sizes.

Every test uses the tiny seeded generators of ``tiny_weights_dir`` on images of a few dozen pixels.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from animecli.io.discovery import Job
from animecli.io.loader import load_one
from animecli.io.transforms import image_to_array
from animecli.options import LoadOptions
from tests.conftest import cli_convert as convert
from tests.conftest import files_under, make_photo, pixels, read_report, report_rows, rows_by_name, size_of

# Every test here runs against the tiny seeded models of conftest, never the shipped ones.
pytestmark = pytest.mark.usefixtures("tiny_weights_dir")


def noisy_jpeg(path: Path, size: tuple[int, int] = (160, 120), seed: int = 0) -> Path:
    """A JPEG big enough that its first half cuts into the scan data."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "RGB").save(path, quality=95)
    return path


# EXIF orientation


def _rotated_jpeg(path: Path) -> Path:
    make_photo(path, (40, 20), seed=4)
    with Image.open(path) as img:
        exif = img.getexif()
        exif[0x0112] = 6
        exif[0x010F] = "TestCam"  # Make: kept in the output
        img.save(path, exif=exif.tobytes(), quality=95)
    return path


def test_exif_rotated_input_gives_upright_output(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    _rotated_jpeg(src / "rot.jpg")
    with Image.open(src / "rot.jpg") as img:
        assert img.size == (40, 20) and img.getexif()[0x0112] == 6
    r = convert(src, out, "--report", rep)
    assert r.exit_code == 0, r.output
    with Image.open(out / "rot.jpg") as res:
        assert res.size == (20, 40)
        exif = res.getexif()
        assert exif.get(0x0112) in (None, 1)
        assert exif.get(0x010F) == "TestCam"
    row = report_rows(rep)["rot.jpg"]
    assert row["input_size"] == "20×40"
    assert "EXIF rotated" in row["notes"]


def test_loader_rotates_pixels_like_exif_transpose(tmp_path: Path) -> None:
    src = _rotated_jpeg(tmp_path / "rot.jpg")
    loaded = load_one(Job(src, tmp_path / "o.jpg"), LoadOptions())
    assert loaded.error is None
    with Image.open(src) as img:
        upright = ImageOps.exif_transpose(img).convert("RGB")
    assert loaded.rgb is not None and tuple(loaded.rgb.shape) == (40, 20, 3)
    assert np.array_equal(loaded.rgb, image_to_array(upright))
    assert loaded.exif is not None
    exif = Image.Exif()
    exif.load(loaded.exif)
    assert 0x0112 not in exif and exif[0x010F] == "TestCam"


# image modes


def test_all_modes_are_converted_and_alpha_is_kept(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    src.mkdir()
    base = Image.open(make_photo(tmp_path / "base.png", (36, 28), seed=5)).convert("RGB")
    rgba = base.convert("RGBA")
    alpha = Image.linear_gradient("L").resize((36, 28))
    rgba.putalpha(alpha)
    rgba.save(src / "rgba.png")
    base.convert("L").save(src / "grey.png")
    base.convert("CMYK").save(src / "cmyk.jpg", quality=95)
    ramp = (np.arange(36 * 28, dtype=np.uint32).reshape(28, 36) * 65535 // (36 * 28 - 1)).astype(np.uint16)
    Image.fromarray(ramp).save(src / "deep.png")
    pal = base.convert("P")
    pal.save(src / "pal.png")
    pal.save(src / "pal_t.png", transparency=pal.getpixel((0, 0)))
    expected_modes = {"rgba.png": "RGBA", "grey.png": "L", "cmyk.jpg": "CMYK", "deep.png": "I;16",
                      "pal.png": "P", "pal_t.png": "P"}
    for name, mode in expected_modes.items():
        with Image.open(src / name) as img:
            assert img.mode == mode, name  # the inputs really are in these modes

    r = convert(src, out, "--report", rep)
    assert r.exit_code == 0, r.output
    for name in expected_modes:
        with Image.open(out / name) as res:
            assert res.size == (36, 28), name
            want = "RGBA" if name in ("rgba.png", "pal_t.png") else "RGB"
            assert res.mode == want, name
    assert np.array_equal(pixels(out / "rgba.png", "RGBA")[..., 3], np.asarray(alpha))
    pal_alpha = pixels(out / "pal_t.png", "RGBA")[..., 3]
    assert pal_alpha.min() == 0 and pal_alpha.max() == 255
    rows = report_rows(rep)
    assert all(row["status"] == "converted" for row in rows.values())
    assert "alpha kept" in rows["rgba.png"]["notes"]
    assert "CMYK converted to RGB" in rows["cmyk.jpg"]["notes"]
    assert "scaled to 8-bit" in rows["deep.png"]["notes"]


def test_alpha_is_dropped_with_a_note_for_jpeg_output(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    img = Image.open(make_photo(tmp_path / "base.png", (20, 16))).convert("RGBA")
    img.putalpha(Image.linear_gradient("L").resize((20, 16)))
    src.mkdir()
    img.save(src / "t.png")
    r = convert(src, out, "--format", "jpg", "--report", rep)
    assert r.exit_code == 0, r.output
    with Image.open(out / "t.jpg") as res:
        assert (res.format, res.mode, res.size) == ("JPEG", "RGB", (20, 16))
    assert "alpha dropped" in report_rows(rep)["t.png"]["notes"]


def test_sixteen_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 65535 // 63).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    loaded = load_one(Job(tmp_path / "deep.png", tmp_path / "o.png"), LoadOptions())
    assert loaded.error is None and loaded.rgb is not None
    assert int(loaded.rgb.min()) <= 1 and int(loaded.rgb.max()) >= 254
    assert len(np.unique(loaded.rgb)) > 32  # a ramp, not a clipped white field


# broken files


def test_broken_files_fail_one_line_each_and_the_rest_convert(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    make_photo(src / "good.png", seed=1)
    good_jpg = noisy_jpeg(src / "good.jpg")
    (src / "corrupt.jpg").write_bytes(random.Random(7).randbytes(2048))
    whole = good_jpg.read_bytes()
    (src / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (src / "empty.png").write_bytes(b"")
    (src / "text.jpg").write_text("this is a text file, not a JPEG\n")
    r = convert(src, out, "--report", rep)
    assert r.exit_code == 1, r.output
    assert files_under(out) == {"good.png", "good.jpg"}
    report = read_report(rep)
    assert report["summary"]["converted"] == 2
    assert report["summary"]["failed"] == 4
    rows = rows_by_name(report)
    assert rows["good.png"]["status"] == rows["good.jpg"]["status"] == "converted"
    expected = {
        "corrupt.jpg": "not a recognised image",
        "truncated.jpg": "truncated",
        "empty.png": "empty file",
        "text.jpg": "not a recognised image",
    }
    failed_lines = [line for line in r.stderr.splitlines() if line.startswith("FAILED ")]
    assert len(failed_lines) == 4
    for name, words in expected.items():
        row = rows[name]
        assert row["status"] == "failed", name
        assert words in row["reason"], (name, row["reason"])
        assert "\n" not in row["reason"]
        [line] = [line for line in failed_lines if str(src / name) in line]
        assert row["reason"] in line


# sizes


def test_max_size_downscales_and_odd_sizes_come_back_exact(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    make_photo(src / "big.png", (40, 30), seed=1)
    make_photo(src / "odd.png", (33, 21), seed=2)
    make_photo(src / "tiny.png", (7, 3), seed=3)
    make_photo(src / "dot.png", (1, 1), seed=4)
    r = convert(src, out, "--max-size", "16", "--report", rep)
    assert r.exit_code == 0, r.output
    assert size_of(out / "big.png") == (16, 12)
    assert size_of(out / "odd.png") == (16, 10)  # 21 * 16/33 = 10.2
    assert size_of(out / "tiny.png") == (7, 3)
    assert size_of(out / "dot.png") == (1, 1)
    rows = report_rows(rep)
    big = rows["big.png"]
    assert "resized 40×30 → 16×12" in big["notes"]
    assert (big["input_size"], big["processed_size"]) == ("40×30", "16×12")
    assert "resized" not in rows["tiny.png"]["notes"]

    r = convert(src / "odd.png", tmp_path / "full", "--report", rep)
    assert r.exit_code == 0, r.output
    assert size_of(tmp_path / "full" / "odd.png") == (33, 21)
    row = read_report(rep)["files"][0]
    assert (row["input_size"], row["processed_size"], row["notes"]) == ("33×21", "33×21", "")
