"""Video in, video out (issue 25): tiny clips made here with PyAV, converted with the tiny models."""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from animecli.atomic import TEMP_PREFIX
from animecli.inference.temporal import CutDetector, StatsCarry, TemporalRunner
from animecli.inference.tiling import whole_image_layers
from animecli.models.registry import build_generator
from animecli.models.spec import Arch, ArchSpec
from tests.conftest import cli_convert, read_report

av = pytest.importorskip("av")

W, H = 64, 48


# Every test here runs against the tiny seeded models of conftest, never the shipped ones.
pytestmark = pytest.mark.usefixtures("tiny_weights_dir")


def scene(seed: int, w: int = W, h: int = H, n: int = 8) -> list[np.ndarray]:
    """``n`` frames panning over a smooth seeded picture (twice the frame size)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0 : 2 * h, 0 : 2 * w]
    base = np.stack([(xs * rng.uniform(0.5, 2) + ys * rng.uniform(0.5, 2) + rng.uniform(0, 255)) % 256
                     for _ in range(3)], axis=-1).astype(np.uint8)
    return [np.ascontiguousarray(base[i : i + h, 2 * i : 2 * i + w]) for i in range(n)]


def make_clip(path: Path, frames: list[np.ndarray], fps: int = 12, audio: str | None = "aac",
              pts: list[int] | None = None, codec: str = "libx264", fmt: str | None = None) -> Path:
    """Write ``frames`` as a video (with a 440 Hz sine track unless ``audio`` is None)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    c = av.open(str(path), "w", format=fmt)
    v = c.add_stream(codec, rate=fps)
    v.height, v.width = frames[0].shape[:2]
    v.pix_fmt = "yuv420p"
    if pts is not None:
        v.codec_context.time_base = Fraction(1, 1000)
    a = None
    if audio:
        a = c.add_stream(audio, rate=48000)
        a.layout = "mono"
    for i, img in enumerate(frames):
        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        f.pts = pts[i] if pts is not None else i
        if pts is not None:
            f.time_base = Fraction(1, 1000)
        c.mux(v.encode(f))
    c.mux(v.encode(None))
    if a is not None:
        t = np.arange(int(48000 * len(frames) / fps)) / 48000
        s = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        step = a.codec_context.frame_size or 1024
        for k in range(0, len(s) - step + 1, step):
            af = av.AudioFrame.from_ndarray(s[k : k + step].reshape(1, -1), format="flt", layout="mono")
            af.sample_rate, af.pts = 48000, k
            c.mux(a.encode(af))
        c.mux(a.encode(None))
    c.close()
    return path


def probe(path: Path) -> dict[str, Any]:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info = {"streams": [(s.type, s.codec_context.name) for s in c.streams], "rate": v.average_rate,
                "size": (v.codec_context.width, v.codec_context.height)}
        frames = [(f.time, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    info["times"] = [round(t, 4) for t, _ in frames]
    info["frames"] = [f for _, f in frames]
    return info


def file_rows(path: Path) -> list[dict[str, Any]]:
    """The report's file rows, in order."""
    rows: list[dict[str, Any]] = read_report(path)["files"]
    return rows


def test_video_keeps_rate_timestamps_and_audio(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in" / "clip.mov", scene(0), fps=12, fmt="mov")
    out = tmp_path / "out"
    res = cli_convert(tmp_path / "in", out, "--report", tmp_path / "r.json", "--crf", "18")
    assert res.exit_code == 0, res.output
    got, want = probe(out / "clip.mp4"), probe(src)
    assert got["streams"] == [("video", "h264"), ("audio", "aac")]
    assert got["rate"] == want["rate"] == 12
    assert got["times"] == want["times"] and len(got["times"]) == 8
    assert got["size"] == (W, H)
    # Stylised, not copied: the tiny random model changes the pixels.
    assert np.abs(got["frames"][0].astype(int) - want["frames"][0].astype(int)).mean() > 5
    (row,) = file_rows(tmp_path / "r.json")
    assert row["status"] == "converted" and row["frames"] == 8 and row["fps"] == 12
    assert row["ms_per_frame"] > 0 and row["peak_rss_mb"] > 0
    assert not [p for p in out.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_variable_frame_rate_timestamps_are_kept(tmp_path: Path) -> None:
    pts = [0, 40, 120, 130, 300, 310]
    make_clip(tmp_path / "vfr.mkv", scene(1, n=6), audio=None, pts=pts, fmt="matroska")
    res = cli_convert(tmp_path / "vfr.mkv", tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert probe(tmp_path / "out" / "vfr.mp4")["times"] == [p / 1000 for p in pts]


def test_size_policy_and_even_sides(tmp_path: Path) -> None:
    make_clip(tmp_path / "big.mp4", scene(2, w=96, h=72, n=3), audio=None)
    res = cli_convert(tmp_path / "big.mp4", tmp_path / "out", "--max-size", "50")
    assert res.exit_code == 0, res.output
    # 96×72 fitted to a long side of 50 is 50×38 (already even).
    assert probe(tmp_path / "out" / "big.mp4")["size"] == (50, 38)
    res = cli_convert(tmp_path / "big.mp4", tmp_path / "out2", "--max-size", "45")
    assert probe(tmp_path / "out2" / "big.mp4")["size"] == (44, 34)  # 45×34 → even width


def test_rerun_skips_then_redoes_when_settings_change(tmp_path: Path) -> None:
    make_clip(tmp_path / "a.mp4", scene(3, n=3), audio=None)
    out = tmp_path / "out"
    assert cli_convert(tmp_path / "a.mp4", out).exit_code == 0
    again = cli_convert(tmp_path / "a.mp4", out, "--report", tmp_path / "r.json")
    assert file_rows(tmp_path / "r.json")[0]["status"] == "skipped", again.output
    cli_convert(tmp_path / "a.mp4", out, "--crf", "30", "--report", tmp_path / "r.json")
    assert file_rows(tmp_path / "r.json")[0]["status"] == "converted"


def test_temporal_flag_carries_and_is_part_of_the_resume_key(tmp_path: Path) -> None:
    make_clip(tmp_path / "a.mp4", scene(10, n=4), audio=None)
    out = tmp_path / "out"
    assert cli_convert(tmp_path / "a.mp4", out).exit_code == 0
    res = cli_convert(tmp_path / "a.mp4", out, "--temporal", "--report", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    (row,) = file_rows(tmp_path / "r.json")
    assert row["status"] == "converted" and "temporal" in row["notes"] and row["frames"] == 4
    # The default backend carries the statistics in onnxruntime's video graph where it is installed.
    from animecli.inference.ort_session import onnxruntime_available

    way = "onnxruntime video graph" if onnxruntime_available() else "eager PyTorch"
    assert way in row["notes"]


def test_truncated_video_converts_what_decodes_and_fails(tmp_path: Path) -> None:
    # Noise: every frame is a large packet, so half the file holds about half of them.
    noise = [np.random.default_rng(i).integers(0, 256, (H, W, 3), dtype=np.uint8) for i in range(24)]
    src = make_clip(tmp_path / "cut.mkv", noise, audio=None, fmt="matroska")
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    res = cli_convert(src, tmp_path / "out", "--report", tmp_path / "r.json")
    assert res.exit_code == 1, res.output
    (row,) = file_rows(tmp_path / "r.json")
    assert row["status"] == "failed" and "truncated" in row["reason"], row
    assert 0 < row["frames"] < 24
    assert len(probe(tmp_path / "out" / "cut.mp4")["times"]) == row["frames"]


def test_no_video_stream_and_unknown_codec_are_one_line_each(tmp_path: Path) -> None:
    c = av.open(str(tmp_path / "sound.mp4"), "w")
    a = c.add_stream("aac", rate=48000)
    a.layout = "mono"
    af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
    af.sample_rate, af.pts = 48000, 0
    c.mux(a.encode(af))
    c.mux(a.encode(None))
    c.close()
    # A Matroska clip whose codec id names no codec FFmpeg knows (same length, so the file stays valid).
    mkv = make_clip(tmp_path / "odd.mkv", scene(5, n=2), audio=None, fmt="matroska").read_bytes()
    assert b"V_MPEG4/ISO/AVC" in mkv
    (tmp_path / "odd.mkv").write_bytes(mkv.replace(b"V_MPEG4/ISO/AVC", b"V_MPEG4/ISO/XYZ"))
    (tmp_path / "junk.avi").write_bytes(b"not a video at all" * 10)
    out = tmp_path / "out"
    res = cli_convert(tmp_path / "sound.mp4", tmp_path / "odd.mkv", tmp_path / "junk.avi", out,
                      "--report", tmp_path / "r.json")
    assert res.exit_code == 1
    reasons = {Path(r["src"]).name: r["reason"] for r in file_rows(tmp_path / "r.json")}
    assert "no video stream" in reasons["sound.mp4"]
    assert "cannot be decoded" in reasons["odd.mkv"]
    assert "cannot open as a video" in reasons["junk.avi"]
    assert all("\n" not in r for r in reasons.values())
    assert not [p for p in out.iterdir() if not p.name.startswith(".animecli.")] if out.exists() else True


def test_interrupted_video_leaves_nothing(tmp_path: Path) -> None:
    import threading

    from animecli.options import ConvertOptions, EngineOptions
    from animecli.run.convert import run_convert

    make_clip(tmp_path / "long.mp4", scene(6, n=24), audio=None)
    stop = threading.Event()

    def on_frames(src: str, done: int, total: int) -> None:
        if done >= 3:
            stop.set()

    out = tmp_path / "out"
    s = run_convert(ConvertOptions(("%s" % (tmp_path / "long.mp4"),), out, engine=EngineOptions(device="cpu")),
                    stop=stop, on_frames=on_frames)
    assert s.interrupted
    # Nothing but animecli's own files (the output folder itself is removed when left empty).
    assert not out.exists() or [p.name for p in out.iterdir() if not p.name.startswith(".animecli.")] == []
    assert cli_convert(tmp_path / "long.mp4", out).exit_code == 0  # a rerun converts it again
    assert len(probe(out / "long.mp4")["times"]) == 24


def test_stats_carry_is_an_average_reset_on_cuts() -> None:
    carry = StatsCarry(0.5)
    norm = build_generator(ArchSpec(Arch.LITE, width=0.125)).stem[1][2]
    m1, v1 = torch.full((1, 1, 1, 1), 2.0), torch.full((1, 1, 1, 1), 1.0)
    m2, v2 = torch.full((1, 1, 1, 1), 4.0), torch.full((1, 1, 1, 1), 1.0)
    carry.begin([True])
    assert carry(norm, m1, v1)[0].item() == 2.0
    carry.begin([False])
    m, v = carry(norm, m2, v2)
    assert m.item() == pytest.approx(3.0) and v.item() == pytest.approx(2.0)  # mixture of N(2,1), N(4,1)
    carry.begin([True])
    assert carry(norm, m2, v2)[0].item() == 4.0
    # A batch is scanned in order: the same as one frame at a time.
    carry.begin([True, False])
    mb, _ = carry(norm, torch.cat([m1, m2]), torch.cat([v1, v2]))
    assert mb.flatten().tolist() == pytest.approx([2.0, 3.0])


def test_cut_detector_tells_pans_from_cuts() -> None:
    cuts = CutDetector()
    frames = scene(7) + scene(8)
    flags = [cuts.is_cut(f) for f in frames]
    assert flags == [True] + [False] * 7 + [True] + [False] * 7


@pytest.mark.parametrize(("arch", "backend"), [("lite", "eager"), ("lite", "onnx"), ("animeganv3", "eager"),
                                               ("animeganv3", "onnx")])
def test_temporal_runner_steadies_a_flickering_input(arch: str, backend: str) -> None:
    """Group norms (lite) and LADE/attention (AnimeGANv3), carried by the eager modules' hooks
    or by onnxruntime's video graph."""
    from animecli.inference.torch_engine import Engine
    from animecli.options import Backend, EngineOptions

    if backend == "onnx":
        pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = build_generator(ArchSpec(Arch(arch), width=0.125))
    multiple = 8 if arch == "animeganv3" else 4
    engine = Engine(model, multiple, EngineOptions(device="cpu", backend=Backend(backend)), arch)
    base = scene(9, w=192, h=144, n=1)[0]
    # The same picture with a bright square appearing and vanishing in one corner: per-frame
    # statistics jump, and every pixel's colour with them.
    frames = []
    for i in range(8):
        f = base.copy()
        if i % 2:
            f[:40, :40] = 255
        frames.append(f)

    def change(outs: list[Any]) -> float:
        # Far from the square (beyond the model's reach): how much the rest of the picture moves.
        return float(np.mean([np.abs(a[96:, 128:].astype(int) - b[96:, 128:].astype(int)).mean()
                              for a, b in itertools.pairwise(outs)]))

    per_frame = [engine.run_batch([f]).images[0] for f in frames]
    with TemporalRunner(engine, 0.95) as tr:
        assert tr.graph is (backend == "onnx")
        carried = [tr.run_batch([f]).images[0] for f in frames]
    assert not any(n.stats_hook for n in whole_image_layers(model))  # detached again
    assert change(carried) < 0.5 * change(per_frame)
