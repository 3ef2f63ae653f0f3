"""Write a test video made from real photos: pans, zooms and cuts, with a 440 Hz sine track.

Usage:
    python bench/make_clip.py --photos ../shared/photos/val --size 1280x720 --fps 12 --seconds 60 --out clip60.mp4

Shots come in groups of three photos (bench/flicker.py's pan, zoom, cut-to-pan), each shot
``--shot`` seconds long, photos taken in sorted order and cycled, so a longer clip is the same
kind of content for longer (what a flat-memory check needs). H.264 (yuv420p, libx264 CRF 18)
and AAC mono at 48 kHz; the audio lasts as long as the video.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flicker import make_clip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, default=Path(__file__).resolve().parents[2] / "shared/photos/val")
    ap.add_argument("--size", default="1280x720", help="frame size WxH")
    ap.add_argument("--fps", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--shot", type=float, default=2.0, help="seconds per shot")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    total = round(args.seconds * args.fps)
    per_shot = max(2, round(args.shot * args.fps))
    box = av.open(str(args.out), "w")
    video = box.add_stream("libx264", rate=args.fps)
    video.width, video.height, video.pix_fmt = w, h, "yuv420p"
    video.options = {"crf": "18"}
    audio = box.add_stream("aac", rate=48000)
    audio.layout = "mono"
    done, group = 0, 0
    while done < total:
        trio = [photos[(3 * group + k) % len(photos)] for k in range(3)]
        frames, _ = make_clip(trio, (w, h), per_shot)
        for img in frames[: total - done]:
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = done
            box.mux(video.encode(frame))
            done += 1
        group += 1
    box.mux(video.encode(None))
    t = np.arange(int(48000 * total / args.fps)) / 48000
    sine = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    step = audio.codec_context.frame_size or 1024
    for k in range(0, len(sine) - step + 1, step):
        af = av.AudioFrame.from_ndarray(sine[k : k + step].reshape(1, -1), format="flt", layout="mono")
        af.sample_rate, af.pts = 48000, k
        box.mux(audio.encode(af))
    box.mux(audio.encode(None))
    box.close()
    print(f"{args.out}: {total} frames {w}x{h} at {args.fps} fps, {total / args.fps:.1f} s, {group} photo groups")


if __name__ == "__main__":
    main()
