"""Make a folder of test photos of mixed sizes (up to 4000×3000) from a folder of real photos.

Usage: python bench/make_soak_photos.py SRC_DIR DEST_DIR [COUNT]

Each output is a real photo from SRC_DIR, rescaled (LANCZOS) to one of a fixed
cycle of camera-like sizes and saved as JPEG, so that a memory-flatness run sees
realistic decode and resize work.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

SIZES = [(640, 480), (1024, 768), (2000, 1500), (4000, 3000), (3000, 4000), (1200, 1200), (1600, 900)]


def main() -> None:
    src, dest = Path(sys.argv[1]), Path(sys.argv[2])
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 500
    photos = sorted(p for p in src.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    dest.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        out = dest / f"photo_{i:04d}.jpg"
        if out.exists():
            continue
        with Image.open(photos[i % len(photos)]) as im:
            im.convert("RGB").resize(SIZES[i % len(SIZES)], Image.Resampling.LANCZOS).save(out, quality=90)


if __name__ == "__main__":
    main()
