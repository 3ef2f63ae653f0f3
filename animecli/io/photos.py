"""The one photo reader of the folder-of-photos users (the bench, int8 calibration, training):
which files of a folder are photos, and opening them, passing over the unreadable ones.
``convert`` finds its inputs with :mod:`animecli.io.discovery`, by the same suffixes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from PIL import Image

from animecli.dirs import PHOTO_SUFFIXES

T = TypeVar("T")


def bundled_photos_dir() -> Path | None:
    """The bundled ``examples/`` photos (source checkouts and editable installs), if present."""
    folder = Path(__file__).resolve().parents[2] / "examples"  # animecli/io/ -> the source tree
    return folder if folder.is_dir() else None


def is_photo(path: Path) -> bool:
    """Whether ``path``'s suffix is a photo's (:data:`animecli.dirs.PHOTO_SUFFIXES`, any case)."""
    return path.suffix.lower() in PHOTO_SUFFIXES


def photo_files(folder: Path) -> list[Path]:
    """The photo files directly in ``folder``, sorted by name (folders named like photos are not)."""
    return sorted(p for p in folder.iterdir() if is_photo(p) and p.is_file())


def read_photos(paths: Iterable[Path], decode: Callable[[Image.Image], T]) -> Iterator[tuple[Path, T]]:
    """Each readable photo of ``paths``, in order, as ``decode`` makes it of the opened image
    (mode as stored, fully loaded; closed afterwards). A file that Pillow or ``decode`` cannot
    read (corrupt, truncated, not an image) is passed over."""
    for path in paths:
        try:
            with Image.open(path) as img:
                img.load()
                value = decode(img)
        except (OSError, ValueError, SyntaxError):
            continue
        yield path, value
