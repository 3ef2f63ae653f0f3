"""Issue 27, items 1, 2 and 5: multi-frame files with a damaged tail, and files named for another format.

A TIFF whose next-page pointer is broken and a GIF cut inside its second frame have an intact
first page/frame: it is converted and the report's notes say that the rest is damaged. A JPEG
named ``.png`` converts, and the notes say what it holds.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animecli.io.discovery import Job
from animecli.io.loader import load_one
from animecli.options import LoadOptions
from tests.conftest import cli_convert, make_photo
from tests.damaged import KINDS, gif_cut_in_second_frame, make, noise, tiff_with_bad_next_page, two_frame_gif

OPTS = LoadOptions(max_size=0)


def load(path: Path) -> tuple[np.ndarray, list[str]]:
    got = load_one(Job(path, path.with_name("out.png")), OPTS)
    assert got.error is None, got.error
    assert got.rgb is not None
    return got.rgb, got.notes


@pytest.mark.parametrize("compression", [None, "tiff_lzw", "jpeg"], ids=["raw", "lzw", "jpeg"])
def test_tiff_with_a_broken_next_page_pointer_converts_its_first_page(tmp_path: Path, compression: str | None) -> None:
    src = tmp_path / "broken.tif"
    src.write_bytes(tiff_with_bad_next_page(compression))
    with Image.open(src) as img:  # what the issue saw: page 1 decodes on its own, counting pages raises
        img.load()
    with Image.open(src) as img, pytest.raises(Exception):  # noqa: B017 - a precondition: Pillow raises TypeError or others
        _ = img.n_frames
    rgb, notes = load(src)
    with Image.open(src) as img:
        expected = np.asarray(img.convert("RGB"))
    assert rgb.shape == (80, 80, 3)
    assert np.array_equal(rgb, expected)
    if compression != "jpeg":  # lossless: the very pixels that were saved
        assert np.array_equal(rgb, np.asarray(noise()))
    assert any("damaged" in n and "first page converted" in n for n in notes), notes


def test_gif_cut_inside_its_second_frame_converts_the_first(tmp_path: Path) -> None:
    data = gif_cut_in_second_frame()
    assert 3000 < len(data) < 3800  # "truncated at about 3.4 KB"
    src = tmp_path / "cut.gif"
    src.write_bytes(data)
    with Image.open(src) as img, pytest.raises(IndexError):  # the precondition: counting frames raises
        _ = img.n_frames
    rgb, notes = load(src)
    with Image.open(io.BytesIO(two_frame_gif())) as intact:  # frame 1 of the file before it was cut
        expected = np.asarray(intact.convert("RGB"))
    assert np.array_equal(rgb, expected)
    assert any("damaged" in n and "first frame converted" in n for n in notes), notes


def test_an_intact_two_frame_gif_is_not_called_damaged(tmp_path: Path) -> None:
    src = tmp_path / "ok.gif"
    src.write_bytes(two_frame_gif())
    _, notes = load(src)
    assert "animated (2 frames): first frame converted" in notes
    assert not any("damaged" in n for n in notes)


def test_a_png_holding_a_jpeg_converts_and_says_so(tmp_path: Path) -> None:
    liar = make_photo(tmp_path / "photo.png", (48, 32), format="JPEG")
    honest = make_photo(tmp_path / "honest.jpg", (48, 32))
    with Image.open(liar) as img:
        assert img.format == "JPEG"
    rgb, notes = load(liar)
    assert rgb.shape == (32, 48, 3)
    assert any("JPEG" in n and ".png" in n and "rename it to .jpg" in n for n in notes), notes
    assert load(honest)[1] == []


def test_convert_reports_damaged_tails_and_mislabelled_files(tmp_path: Path, tiny_weights_dir: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    src.mkdir()
    (src / "pages.tif").write_bytes(tiff_with_bad_next_page("tiff_lzw"))
    (src / "cut.gif").write_bytes(gif_cut_in_second_frame())
    make_photo(src / "liar.png", (48, 32), format="JPEG")
    r = cli_convert(src, out, "--report", rep)
    assert r.exit_code == 0, r.output
    report = json.loads(rep.read_text())
    assert report["summary"]["converted"] == 3 and report["summary"]["failed"] == 0
    notes = {Path(row["src"]).name: row["notes"] for row in report["files"]}
    assert "damaged" in notes["pages.tif"] and "first page converted" in notes["pages.tif"]
    assert "damaged" in notes["cut.gif"] and "first frame converted" in notes["cut.gif"]
    assert "holds a JPEG image" in notes["liar.png"]
    for row in report["files"]:
        with Image.open(row["dst"]) as img:
            img.load()
            assert img.size == ((48, 32) if "liar" in row["dst"] else (80, 80))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_damaged_file_of_the_fuzz_corpus_converts_its_first_page(tmp_path: Path, kind: str) -> None:
    """The unmutated damaged files the fuzz corpus starts from, over a few seeds: all decode."""
    for seed in range(4):
        src = tmp_path / f"{kind}-{seed}{KINDS[kind]}"
        src.write_bytes(make(kind, seed))
        rgb, notes = load(src)
        assert rgb.shape == (80, 80, 3)
        assert any("first page converted" in n or "first frame converted" in n for n in notes), (src.name, notes)
