"""Fuzzing the loader: whatever the bytes, ``load_one`` returns an error line or a (3, H, W) uint8 image.

Inputs are small valid encodings (PNG, JPEG, WebP, BMP, TIFF, GIF in several
modes) and multi-frame TIFFs and GIFs with a damaged tail (tests/damaged.py), with
random byte flips, insertions and truncations, and plain random bytes, saved under
an image extension.

200 examples by default (seconds, for CI). For a long run::

    ANIMECLI_FUZZ_EXAMPLES=10000 pytest tests/test_fuzz.py      # or HYPOTHESIS_PROFILE=long
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from animecli.io.discovery import Job
from animecli.io.loader import load_one
from animecli.options import LoadOptions
from tests import damaged

_LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"
EXAMPLES = int(os.environ.get("ANIMECLI_FUZZ_EXAMPLES", "10000" if _LONG else "200"))
# A mutated header may claim any size: keep the limit low so that a claim of a few hundred
# megapixels is refused (as it would be with a lower --max-pixels) instead of allocated.
OPTS = LoadOptions(max_size=64, max_pixels=4_000_000, prefetch=1)

FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif", "GIF": ".gif"}
MODES = ["RGB", "RGBA", "L", "LA", "P", "1", "I;16", "CMYK"]
_OK_MODES = {  # what each format can store (others fall back to RGB)
    "PNG": {"RGB", "RGBA", "L", "LA", "P", "1", "I;16"}, "JPEG": {"RGB", "L", "CMYK"},
    "WEBP": {"RGB", "RGBA"}, "BMP": {"RGB", "L", "P", "1"},
    "TIFF": {"RGB", "RGBA", "L", "LA", "P", "1", "I;16", "CMYK"}, "GIF": {"L", "P", "1"},
}


def encode(fmt: str, mode: str, w: int, h: int, seed: int, animated: bool) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
    if mode not in _OK_MODES[fmt]:
        mode = "RGB" if fmt != "GIF" else "P"
    img = img.convert(mode) if mode != "I;16" else img.convert("L").convert("I;16")
    buf = io.BytesIO()
    if animated and fmt in ("GIF", "WEBP", "PNG", "TIFF"):
        img.save(buf, format=fmt, save_all=True, append_images=[img.rotate(90, expand=False)])
    else:
        img.save(buf, format=fmt)
    return buf.getvalue()


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, str]:
    """(file bytes, extension)."""
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    ext = FORMATS[fmt] if draw(st.integers(0, 9)) else draw(st.sampled_from(sorted(FORMATS.values())))
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=512)), ext
    data = bytearray(encode(
        fmt, draw(st.sampled_from(MODES)), draw(st.integers(1, 24)), draw(st.integers(1, 24)),
        draw(st.integers(0, 2**16)), draw(st.booleans()),
    ))
    if draw(st.integers(0, 7)) == 0:  # instead: multi-frame, first page intact, damaged tail (issue 27)
        kind = draw(st.sampled_from(sorted(damaged.KINDS)))
        data, ext = bytearray(damaged.make(kind, draw(st.integers(0, 2**16)))), damaged.KINDS[kind]
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, draw(st.integers(0, 255))]))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 16))]
    if draw(st.integers(0, 3)) == 0:
        data = data[:draw(st.integers(0, len(data)))]  # truncated download
    return bytes(data), ext


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=mutated())
def test_load_one_never_raises(fuzz_dir: Path, case: tuple[bytes, str]) -> None:
    data, ext = case
    src = fuzz_dir / f"input{ext}"
    src.write_bytes(data)
    got = load_one(Job(src, fuzz_dir / "out.png"), OPTS)
    event("decoded" if got.error is None else "refused: over --max-pixels" if "--max-pixels" in got.error
          else f"refused: {got.error.split(' (')[0].split(';')[0][:40]}")
    if got.error is not None:
        assert isinstance(got.error, str) and got.error and "\n" not in got.error
        assert got.rgb is None
    else:
        rgb = got.rgb
        assert isinstance(rgb, np.ndarray)
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        assert rgb.shape[0] >= 1 and rgb.shape[1] >= 1 and max(rgb.shape[:2]) <= OPTS.max_size
        if got.alpha is not None:
            assert got.alpha.mode == "L" and got.alpha.size == (rgb.shape[1], rgb.shape[0])
