"""Before/after gallery of the shipped models on examples/: docs/gallery.png.

Usage: python bench/make_gallery.py [--photos examples] [--out docs/gallery.png] [--size 384]

One row per photo: the photo, then one column per shipped (non-remote) model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageOps

from animecli.inference.tensors import from_model_range, image_to_tensor, pad_batch, tensor_to_image, to_model_range
from animecli.options import ModelChoice
from animecli.weights.manifest import load_manifest
from animecli.weights.resolve import load_generator


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=Path, default=Path("examples"))
    ap.add_argument("--out", type=Path, default=Path("docs/gallery.png"))
    ap.add_argument("--size", type=int, default=384)
    args = ap.parse_args()
    manifest = load_manifest()
    names = [n for n, e in sorted(manifest.models.items()) if not e.remote and e.path().is_file()]
    models = {n: load_generator(ModelChoice(n)).model for n in names}
    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    s = args.size
    label_h = 24
    sheet = Image.new("RGB", ((1 + len(names)) * s, label_h + len(photos) * s), "white")
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(["photo", *names]):
        draw.text((c * s + 8, 6), title, fill="black")
    for r, p in enumerate(photos):
        with Image.open(p) as im:
            img = ImageOps.fit(im.convert("RGB"), (s, s), Image.Resampling.LANCZOS)
        sheet.paste(img, (0, label_h + r * s))
        x = to_model_range(image_to_tensor(img).unsqueeze(0), torch.float32)
        for c, n in enumerate(names, start=1):
            with torch.inference_mode():
                y = from_model_range(models[n](pad_batch(x, 4))[:, :, :s, :s])[0]
            sheet.paste(tensor_to_image(y), (c * s, label_h + r * s))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"{args.out}: {len(photos)} photos × {len(names)} models")


if __name__ == "__main__":
    main()
