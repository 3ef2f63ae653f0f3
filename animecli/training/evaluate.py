"""Evaluate a student against its teacher: PSNR, SSIM and the look figures on held-out photos, and a contact sheet.

Each validation photo is scaled so its short side is ``size`` and centre-cropped
to size×size (the fixed-size teachers accept nothing else), then run through
both generators. Teacher outputs are cached on disk, keyed by the teacher file's
SHA-256 and the exact input pixels (a name-based key served one folder's outputs
for another's photos of the same names). Photos that cannot be read are skipped
and listed. The look figures (captured, colour filter, edge ratio: ``animecli.training.look``)
are computed on the same uint8 photo, teacher and student images as PSNR/SSIM.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageOps

from animecli.atomic import atomic_write, atomic_write_bytes, file_in_the_way
from animecli.errors import UsageError, first_line
from animecli.inference.tensors import tensor_to_image
from animecli.io.photos import is_photo
from animecli.training.distill import to_tensor, to_unit
from animecli.training.look import Look, LookTally
from animecli.training.losses import psnr, ssim
from animecli.training.teachers import OnnxTeacher


@dataclass(frozen=True)
class EvalResult:
    """Mean and per-photo figures of one evaluation.

    ``look`` holds the set's captured / colour-filter / edge-ratio figures, ``per_photo_look``
    each photo's own, in the order of ``per_photo`` (name, PSNR dB, SSIM).
    """

    psnr_db: float
    ssim: float
    count: int
    per_photo: tuple[tuple[str, float, float], ...]
    skipped: tuple[tuple[str, str], ...] = ()
    look: Look | None = None
    per_photo_look: tuple[Look, ...] = ()


def square(path: Path, size: int) -> torch.Tensor:
    """A photo, short side scaled to ``size``, centre-cropped: (3, size, size) uint8."""
    with Image.open(path) as opened:
        im = ImageOps.exif_transpose(opened).convert("RGB")
        return to_tensor(ImageOps.fit(im, (size, size), Image.Resampling.LANCZOS))


def teacher_output(teacher: OnnxTeacher, x: torch.Tensor, cache: Path) -> torch.Tensor:
    """Teacher output for (3, S, S) uint8 ``x`` as (3, S, S) uint8, computed once and cached."""
    key = hashlib.sha256(teacher.sha256.encode())
    key.update(str(tuple(x.shape)).encode())
    key.update(x.contiguous().numpy().tobytes())
    dest = cache / f"{key.hexdigest()[:32]}.pt"
    if dest.exists():
        try:
            y: torch.Tensor = torch.load(dest, weights_only=True)
            if y.shape == x.shape:
                return y
        except Exception:  # a cut or foreign file: compute it again
            pass
    y = ((teacher(to_unit(x).unsqueeze(0))[0] + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        atomic_write(dest, lambda f: torch.save(y, f))  # Ctrl-C mid-write must not leave a cut entry
    except OSError:
        pass  # a cache is only a saving (a full disk, a folder where the entry goes): the figure stands
    return y


def evaluate(
    student: Callable[[torch.Tensor], torch.Tensor] | None,
    teacher_path: Path,
    photos: Path,
    size: int = 512,
    cache: Path | None = None,
    sheet: Path | None = None,
    sheet_count: int = 6,
    threads: int = 0,
) -> EvalResult | None:
    """PSNR/SSIM and the look figures of ``student`` against the teacher on every photo in ``photos``.

    Args:
        student: the generator, or any backend runner ((N,3,H,W) [-1,1] → same); ``None`` only
            fills the teacher cache.
        teacher_path: the ONNX teacher.
        photos: folder of validation photos.
        size: evaluation side (the teacher's size for fixed-size teachers).
        cache: folder for cached teacher outputs.
        sheet: write a before / teacher / student contact sheet PNG here.
        sheet_count: photos on the contact sheet.
        threads: onnxruntime threads (0 = default).
    """
    if not photos.is_dir():
        what = "is a file" if photos.exists() else "does not exist"
        raise UsageError(f"--photos {photos} {what}; pass the folder of validation photos")
    teacher = OnnxTeacher(teacher_path, threads)
    teacher.check_size(size, "--size")
    cache = cache or Path(".animecli-eval-cache")
    blocker = file_in_the_way(cache)
    if blocker is not None:
        raise UsageError(f"--cache {cache}: {blocker} is a file, not a folder; choose another --cache folder")
    files = sorted(p for p in photos.iterdir() if is_photo(p))
    rows: list[tuple[str, float, float]] = []
    skipped: list[tuple[str, str]] = []
    tiles: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    tally = LookTally()
    looks: list[Look] = []
    for p in files:
        try:
            x = square(p, size)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:  # corrupt, truncated, not an image
            skipped.append((p.name, first_line(exc, 120)))
            continue
        y = teacher_output(teacher, x, cache)
        if student is None:
            continue
        with torch.inference_mode():
            s = student(to_unit(x).unsqueeze(0).contiguous(memory_format=torch.channels_last))[0]
        s8 = ((s + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        yt, st = to_unit(y), to_unit(s8)
        rows.append((p.name, psnr(st, yt), float(ssim(st.unsqueeze(0), yt.unsqueeze(0)))))
        looks.append(tally.add(to_unit(x), st, yt))
        if sheet is not None and len(tiles) < sheet_count:
            tiles.append((x, y, s8))
    if student is None or not rows:
        return None
    if sheet is not None:
        write_sheet(tiles, sheet)
    return EvalResult(
        psnr_db=sum(r[1] for r in rows) / len(rows),
        ssim=sum(r[2] for r in rows) / len(rows),
        count=len(rows),
        per_photo=tuple(rows),
        skipped=tuple(skipped),
        look=tally.figures(),
        per_photo_look=tuple(looks),
    )


def write_sheet(tiles: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], dest: Path, thumb: int = 256) -> None:
    """A PNG grid: one row per photo, columns photo / teacher / student."""
    sheet = Image.new("RGB", (3 * thumb, len(tiles) * thumb), "white")
    for r, row in enumerate(tiles):
        for c, t in enumerate(row):
            im = tensor_to_image(t).resize((thumb, thumb), Image.Resampling.LANCZOS)
            sheet.paste(im, (c * thumb, r * thumb))
    dest.parent.mkdir(parents=True, exist_ok=True)
    fmt = Image.registered_extensions().get(dest.suffix.lower(), "PNG")  # .png, .jpg … as named; else PNG
    buf = io.BytesIO()  # not straight to the file: Pillow's JPEG encoder ignores a short write (animecli.io.writer)
    sheet.save(buf, format=fmt)
    atomic_write_bytes(dest, buf.getvalue())
