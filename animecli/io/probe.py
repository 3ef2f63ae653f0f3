"""What an opened image file holds besides its first picture: its frames, and whether its name fits it.

Used by the loader before it decodes the first page/frame. Counting frames walks the
whole page chain of a TIFF or the blocks of a GIF; in a file whose tail is damaged
(a bad next-page pointer, a GIF cut inside its second frame) that walk raises although
the first page decodes. Counting must never make a readable first page fail: the
file is converted and the report says that the rest is damaged.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageFile

# Pillow's format names an extension stands for. MPO is a JPEG holding more than one
# picture (cameras write them); DIB is a BMP without its file header.
_NAMED_FORMATS = {
    ".jpg": ("JPEG", "MPO"), ".jpeg": ("JPEG", "MPO"), ".png": ("PNG",), ".webp": ("WEBP",),
    ".bmp": ("BMP", "DIB"), ".tif": ("TIFF",), ".tiff": ("TIFF",), ".gif": ("GIF",),
}
_USUAL_EXT = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "DIB": ".bmp",
              "TIFF": ".tif", "GIF": ".gif"}


def _reason(exc: BaseException) -> str:
    """One line: the exception's first line, or its type's name when it has no text."""
    text = str(exc).splitlines()[0].strip() if str(exc).strip() else ""
    return text or type(exc).__name__


def first_frame(img: ImageFile.ImageFile, path: Path, notes: list[str]) -> ImageFile.ImageFile:
    """``img`` positioned on its first page/frame, with a note in ``notes`` when it holds more.

    Args:
        img: the file as ``Image.open`` returned it, not yet loaded.
        path: the file, opened again when counting failed.
        notes: the report's notes for this file; appended to.

    Returns:
        ``img`` itself, or (when walking the frames failed) a fresh ``Image.open(path)``,
        the caller closes both. A failed walk leaves Pillow's frame state half-moved
        (mode, tile, palette of the page it could not read: a later ``load()`` says
        ``unknown pixel mode``), so seeking back is not trusted.
    """
    kind, unit = ("multi-page", "page") if img.format == "TIFF" else ("animated", "frame")
    try:
        frames = int(getattr(img, "n_frames", 1))
    except Exception as exc:  # Pillow raises TypeError, IndexError, SyntaxError … from a damaged chain
        img.close()
        fresh = Image.open(path)
        notes.append(f"{kind} {fresh.format or 'image'} whose {unit}s after the first are damaged "
                     f"({_reason(exc)}): first {unit} converted")
        return fresh
    if frames > 1:
        notes.append(f"{kind} ({frames} {unit}s): first {unit} converted")
        img.seek(0)
    return img


def format_note(img_format: str | None, path: Path) -> str | None:
    """A note when the file's content is not the format its extension names (a JPEG called .png).

    Args:
        img_format: Pillow's name of the decoded format (``img.format``).
        path: the file; only its extension is read.
    """
    named = _NAMED_FORMATS.get(path.suffix.lower())
    if img_format is None or named is None or img_format in named:
        return None
    shown = "JPEG" if img_format == "MPO" else img_format
    usual = _USUAL_EXT.get(img_format)
    rename = f"; rename it to {usual}" if usual else ""
    return f"holds a {shown} image, not the {named[0]} its {path.suffix} name says: converted all the same{rename}"
