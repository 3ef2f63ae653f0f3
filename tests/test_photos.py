"""The one photo reader (animecli.io.photos) and the one suffix set (animecli.dirs)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from animecli.dirs import PHOTO_SUFFIXES
from animecli.io import discovery
from animecli.io.photos import photo_files, read_photos


def test_every_reader_shares_one_suffix_set(tmp_path: Path) -> None:
    for i, suffix in enumerate(sorted(PHOTO_SUFFIXES)):
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(tmp_path / f"p{i}{suffix.upper()}",
                                                      format="PNG")  # content need not match the name
    (tmp_path / "notes.txt").write_text("not a photo")
    (tmp_path / "folder.jpg").mkdir()
    names = [p.name for p in photo_files(tmp_path)]
    assert names == sorted(f"p{i}{s.upper()}" for i, s in enumerate(sorted(PHOTO_SUFFIXES)))
    # convert's discovery reads the same set (and videos): nothing else decides which files are photos.
    assert discovery.SUPPORTED - discovery.VIDEO_SUFFIXES == PHOTO_SUFFIXES


def test_unreadable_photos_are_passed_over(tmp_path: Path) -> None:
    Image.new("RGB", (6, 4), (1, 2, 3)).save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg")
    Image.new("L", (3, 5), 7).save(tmp_path / "c.tif")
    got = list(read_photos(photo_files(tmp_path), lambda img: (img.mode, img.size)))
    assert [(p.name, v) for p, v in got] == [("a.png", ("RGB", (6, 4))), ("c.tif", ("L", (3, 5)))]


def test_a_decoder_failure_passes_the_photo_over(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    Image.new("RGB", (5, 5)).save(tmp_path / "b.png")

    def decode(img: Image.Image) -> int:
        if img.size == (4, 4):
            raise ValueError("cannot")
        return img.width

    assert [v for _, v in read_photos(photo_files(tmp_path), decode)] == [5]
