"""Gallery and contact sheets: photo / teacher / shipped model / the model it replaced, per style.

Usage:
    PYTHONPATH=. python bench/make_gallery.py                      # docs/gallery.jpg from examples/
    PYTHONPATH=. python bench/make_gallery.py --photos ../shared/photos/val --count 8 \\
        --styles shinkai --out docs/shinkai_sheet.jpg               # a contact sheet on val photos
    (cute: ``--match face --styles cute --out docs/cute_sheet.jpg``)

One row per (style, photo): the photo; the teacher, made by animecli from the AnimeGAN ONNX file
itself (imported onto our module: what `animecli convert --weights FILE.onnx` runs); the shipped
model of that name; the previous one (``<style>_lite3``) when the manifest still has it. Each is
run in eager float32 on the photo fitted to a square of ``--size``, padded to the model's multiple.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageOps
from torch import nn

from animecli.dirs import PHOTO_SUFFIXES
from animecli.inference.tensors import from_model_range, image_to_tensor, pad_batch, tensor_to_image, to_model_range
from animecli.options import ModelChoice
from animecli.weights.manifest import load_manifest
from animecli.weights.resolve import load_generator

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def stylise(model: nn.Module, multiple: int, img: Image.Image) -> Image.Image:
    x = to_model_range(image_to_tensor(img).unsqueeze(0), torch.float32)
    with torch.no_grad():
        y = model(pad_batch(x, multiple))[:, :, : img.height, : img.width]
    return tensor_to_image(from_model_range(y)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=Path, default=Path("examples"))
    ap.add_argument("--count", type=int, default=0, help="the first N photos (0 = all)")
    ap.add_argument("--match", default="", help="only photos whose name contains this (e.g. face)")
    ap.add_argument("--styles", default="hayao,shinkai,cute")
    ap.add_argument("--teachers", type=Path, default=SHARED / "teachers")
    ap.add_argument("--out", type=Path, default=Path("docs/gallery.jpg"))
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    manifest = load_manifest()
    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and args.match in p.name)
    photos = photos[: args.count] if args.count else photos
    rows: list[tuple[str, list[tuple[str, Image.Image]]]] = []
    s = args.size
    for style in args.styles.split(","):
        entry = manifest.get(style)
        teacher_file = args.teachers / str(entry.extra.get("teacher", ""))
        cols: list[tuple[str, ModelChoice]] = []
        if teacher_file.is_file():
            cols.append((f"teacher {teacher_file.name}", ModelChoice(weights=teacher_file)))
        cols.append((f"{style} ({entry.file})", ModelChoice(style)))
        old = manifest.models.get(f"{style}_lite3")
        if old is not None and old.file != entry.file:
            cols.append((f"before: {style}_lite3", ModelChoice(f"{style}_lite3")))
        loaded = [(title, load_generator(choice)) for title, choice in cols]
        for p in photos:
            with Image.open(p) as im:
                img = ImageOps.fit(ImageOps.exif_transpose(im).convert("RGB"), (s, s), Image.Resampling.LANCZOS)
            cells = [(p.name, img)]
            cells += [(title, stylise(lm.model, lm.input_multiple, img)) for title, lm in loaded]
            rows.append((style, cells))
    label_h = 18
    ncol = max(len(cells) for _, cells in rows)
    sheet = Image.new("RGB", (ncol * s, len(rows) * (s + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (_style, cells) in enumerate(rows):
        y = r * (s + label_h)
        for c, (title, img) in enumerate(cells):
            draw.text((c * s + 4, y + 3), title[: s // 6], fill="black")
            sheet.paste(img, (c * s, y + label_h))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, quality=90)
    print(f"{args.out}: {len(rows)} rows × {ncol} columns")


if __name__ == "__main__":
    main()
