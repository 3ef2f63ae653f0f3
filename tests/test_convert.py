"""End-to-end tests of ``animecli convert`` (Typer CliRunner) and the pipeline pieces behind it.

Every test that runs a model uses the tiny seeded generators of ``tiny_weights_dir``
on images of a few dozen pixels, so the whole module runs in seconds on a CPU.
"""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from animecli.atomic import TEMP_PREFIX, TEMP_SUFFIX, atomic_write
from animecli.inference.backends import resolve_backend
from animecli.io.discovery import Discovery, Ignored, Job
from animecli.io.loader import load_one
from animecli.io.transforms import image_to_array
from animecli.options import Backend, LoadOptions, OutputFormat
from animecli.run.lock import LOCK_NAME
from animecli.run.report import FIELDS, FileRecord, ReportWriter, Status, Summary
from tests.conftest import cli_convert, make_photo

SUMMARY_KEYS = {
    "converted", "skipped", "failed", "ignored_non_images", "elapsed_s", "images_per_s", "peak_rss_mb",
    "model", "device", "precision", "backend", "interrupted", "fatal", "licence",
}
ROW_KEYS = {
    "src", "dst", "status", "reason", "input_size", "processed_size", "load_ms", "infer_ms", "save_ms",
    "rss_mb", "gpu_peak_mb", "notes", "frames", "fps", "ms_per_frame", "peak_rss_mb",
}


# Every test here runs against the tiny seeded models of conftest, never the shipped ones.
pytestmark = pytest.mark.usefixtures("tiny_weights_dir")


convert = cli_convert


def read_report(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def rows_by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {Path(r["src"]).name: r for r in report["files"]}


def files_under(folder: Path) -> set[str]:
    """The files below ``folder``, without animecli's own bookkeeping (resume state, lock)."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".animecli.")}


def pixels(path: Path, mode: str = "RGB") -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert(mode)).astype(np.int16)


def size_of(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


def noisy_jpeg(path: Path, size: tuple[int, int] = (160, 120), seed: int = 0) -> Path:
    """A JPEG big enough that its first half cuts into the scan data."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "RGB").save(path, quality=95)
    return path


# 1. tree mirroring, non-images, --no-recursive


def _tree(root: Path) -> None:
    make_photo(root / "a.png", (40, 30), seed=1)
    make_photo(root / "sub" / "b.jpg", (24, 36), seed=2)
    make_photo(root / "sub" / "deep" / "c.png", (20, 20), seed=3)
    (root / "notes.txt").write_text("not an image")
    (root / "sub" / "readme.md").write_text("# nor this")


def test_tree_is_mirrored_and_non_images_are_ignored(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    _tree(src)
    r = convert(src, out, "--report", rep)
    assert r.exit_code == 0, r.output
    assert files_under(out) == {"a.png", "sub/b.jpg", "sub/deep/c.png"}
    assert size_of(out / "a.png") == (40, 30)
    assert size_of(out / "sub" / "b.jpg") == (24, 36)
    assert size_of(out / "sub" / "deep" / "c.png") == (20, 20)
    report = read_report(rep)
    assert report["summary"]["converted"] == 3
    assert report["summary"]["ignored_non_images"] == 2
    assert {Path(r["src"]).name for r in report["files"]} == {"a.png", "b.jpg", "c.png"}
    assert "2 non-image files ignored" in r.output


def test_no_recursive_does_not_descend(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    _tree(src)
    r = convert(src, out, "--no-recursive", "--report", rep)
    assert r.exit_code == 0, r.output
    assert files_under(out) == {"a.png"}
    summary = read_report(rep)["summary"]
    assert summary["converted"] == 1
    assert summary["ignored_non_images"] == 1  # only the top-level notes.txt was seen


def test_several_input_folders_get_their_own_subfolders(tmp_path: Path) -> None:
    one, two, out = tmp_path / "x" / "photos", tmp_path / "y" / "photos", tmp_path / "out"
    make_photo(one / "a.png", (20, 16), seed=1)
    make_photo(two / "a.png", (20, 16), seed=2)
    r = convert(one, two, out)
    assert r.exit_code == 0, r.output
    # same-named folders are told apart by their parents, whatever the order they are given in
    assert files_under(out) == {"photos_x/a.png", "photos_y/a.png"}
    assert np.abs(pixels(out / "photos_x" / "a.png") - pixels(out / "photos_y" / "a.png")).max() > 0
    r = convert(two, one, out, "--report", tmp_path / "again.json")
    assert r.exit_code == 0, r.output
    assert read_report(tmp_path / "again.json")["summary"]["skipped"] == 2


# 2. output folder inside the input folder


def test_output_inside_input_is_never_rediscovered(tmp_path: Path) -> None:
    src = tmp_path / "in"
    out = src / "out"
    make_photo(src / "a.png", seed=1)
    make_photo(src / "b.png", seed=2)
    for i, extra in enumerate((["--overwrite"], ["--overwrite"], [])):
        rep = tmp_path / f"r{i}.json"
        r = convert(src, out, "--report", rep, *extra)
        assert r.exit_code == 0, r.output
        report = read_report(rep)
        srcs = [Path(row["src"]) for row in report["files"]]
        assert sorted(p.name for p in srcs) == ["a.png", "b.png"]
        assert all(out not in p.parents for p in srcs)
        key = "converted" if extra else "skipped"
        assert report["summary"][key] == 2
        assert report["summary"]["failed"] == 0
        assert files_under(out) == {"a.png", "b.png"}  # never out/out/...


# 3. name collisions


def test_name_collision_gets_distinct_names_and_a_note(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    make_photo(src / "a.jpg", seed=1)
    make_photo(src / "a.png", seed=2)
    make_photo(src / "b.jpg", seed=3)
    r = convert(src, out, "--format", "png", "--report", rep)
    assert r.exit_code == 0, r.output
    assert files_under(out) == {"a_jpg.png", "a_png.png", "b.png"}
    assert np.abs(pixels(out / "a_jpg.png") - pixels(out / "a_png.png")).max() > 0  # two different results
    rows = rows_by_name(read_report(rep))
    assert Path(rows["a.jpg"]["dst"]).name == "a_jpg.png"
    assert Path(rows["a.png"]["dst"]).name == "a_png.png"
    assert "name collision with a.png" in rows["a.jpg"]["notes"]
    assert "name collision with a.jpg" in rows["a.png"]["notes"]
    assert "collision" not in rows["b.jpg"]["notes"]


def test_collision_names_are_deterministic_and_avoid_existing_names(tmp_path: Path) -> None:
    files = [tmp_path / "a.jpg", tmp_path / "a.png", tmp_path / "a_jpg.png", tmp_path / "c.txt"]
    disc = Discovery((), tmp_path / "out", True, OutputFormat.PNG, "")

    def plan(order: list[Path]) -> dict[str, str]:
        found = list(disc._plan_dir(order, tmp_path / "out"))
        assert [f.src.name for f in found if isinstance(f, Ignored)] == ["c.txt"]
        return {j.src.name: j.dst.name for j in found if isinstance(j, Job)}

    expected = {"a.jpg": "a_jpg_2.png", "a.png": "a_png.png", "a_jpg.png": "a_jpg.png"}
    assert plan(files) == expected
    assert plan(list(reversed(files))) == expected
    assert len(set(expected.values())) == 3


# 4. EXIF orientation


def _rotated_jpeg(path: Path) -> Path:
    make_photo(path, (40, 20), seed=4)
    with Image.open(path) as img:
        exif = img.getexif()
        exif[0x0112] = 6
        exif[0x010F] = "TestCam"  # Make: kept in the output
        img.save(path, exif=exif.tobytes(), quality=95)
    return path


def test_exif_rotated_input_gives_upright_output(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    _rotated_jpeg(src / "rot.jpg")
    with Image.open(src / "rot.jpg") as img:
        assert img.size == (40, 20) and img.getexif()[0x0112] == 6
    r = convert(src, out, "--report", rep)
    assert r.exit_code == 0, r.output
    with Image.open(out / "rot.jpg") as res:
        assert res.size == (20, 40)
        exif = res.getexif()
        assert exif.get(0x0112) in (None, 1)
        assert exif.get(0x010F) == "TestCam"
    row = rows_by_name(read_report(rep))["rot.jpg"]
    assert row["input_size"] == "20×40"
    assert "EXIF rotated" in row["notes"]


def test_loader_rotates_pixels_like_exif_transpose(tmp_path: Path) -> None:
    src = _rotated_jpeg(tmp_path / "rot.jpg")
    loaded = load_one(Job(src, tmp_path / "o.jpg"), LoadOptions())
    assert loaded.error is None
    with Image.open(src) as img:
        upright = ImageOps.exif_transpose(img).convert("RGB")
    assert loaded.rgb is not None and tuple(loaded.rgb.shape) == (40, 20, 3)
    assert np.array_equal(loaded.rgb, image_to_array(upright))
    assert loaded.exif is not None
    exif = Image.Exif()
    exif.load(loaded.exif)
    assert 0x0112 not in exif and exif[0x010F] == "TestCam"


# 5. image modes


def test_all_modes_are_converted_and_alpha_is_kept(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    src.mkdir()
    base = Image.open(make_photo(tmp_path / "base.png", (36, 28), seed=5)).convert("RGB")
    rgba = base.convert("RGBA")
    alpha = Image.linear_gradient("L").resize((36, 28))
    rgba.putalpha(alpha)
    rgba.save(src / "rgba.png")
    base.convert("L").save(src / "grey.png")
    base.convert("CMYK").save(src / "cmyk.jpg", quality=95)
    ramp = (np.arange(36 * 28, dtype=np.uint32).reshape(28, 36) * 65535 // (36 * 28 - 1)).astype(np.uint16)
    Image.fromarray(ramp).save(src / "deep.png")
    pal = base.convert("P")
    pal.save(src / "pal.png")
    pal.save(src / "pal_t.png", transparency=pal.getpixel((0, 0)))
    expected_modes = {"rgba.png": "RGBA", "grey.png": "L", "cmyk.jpg": "CMYK", "deep.png": "I;16",
                      "pal.png": "P", "pal_t.png": "P"}
    for name, mode in expected_modes.items():
        with Image.open(src / name) as img:
            assert img.mode == mode, name  # the inputs really are in these modes

    r = convert(src, out, "--report", rep)
    assert r.exit_code == 0, r.output
    for name in expected_modes:
        with Image.open(out / name) as res:
            assert res.size == (36, 28), name
            want = "RGBA" if name in ("rgba.png", "pal_t.png") else "RGB"
            assert res.mode == want, name
    assert np.array_equal(pixels(out / "rgba.png", "RGBA")[..., 3], np.asarray(alpha))
    pal_alpha = pixels(out / "pal_t.png", "RGBA")[..., 3]
    assert pal_alpha.min() == 0 and pal_alpha.max() == 255
    rows = rows_by_name(read_report(rep))
    assert all(row["status"] == "converted" for row in rows.values())
    assert "alpha kept" in rows["rgba.png"]["notes"]
    assert "CMYK converted to RGB" in rows["cmyk.jpg"]["notes"]
    assert "scaled to 8-bit" in rows["deep.png"]["notes"]


def test_alpha_is_dropped_with_a_note_for_jpeg_output(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    img = Image.open(make_photo(tmp_path / "base.png", (20, 16))).convert("RGBA")
    img.putalpha(Image.linear_gradient("L").resize((20, 16)))
    src.mkdir()
    img.save(src / "t.png")
    r = convert(src, out, "--format", "jpg", "--report", rep)
    assert r.exit_code == 0, r.output
    with Image.open(out / "t.jpg") as res:
        assert (res.format, res.mode, res.size) == ("JPEG", "RGB", (20, 16))
    assert "alpha dropped" in rows_by_name(read_report(rep))["t.png"]["notes"]


def test_sixteen_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 65535 // 63).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    loaded = load_one(Job(tmp_path / "deep.png", tmp_path / "o.png"), LoadOptions())
    assert loaded.error is None and loaded.rgb is not None
    assert int(loaded.rgb.min()) <= 1 and int(loaded.rgb.max()) >= 254
    assert len(np.unique(loaded.rgb)) > 32  # a ramp, not a clipped white field


# 6. broken files


def test_broken_files_fail_one_line_each_and_the_rest_convert(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    make_photo(src / "good.png", seed=1)
    good_jpg = noisy_jpeg(src / "good.jpg")
    (src / "corrupt.jpg").write_bytes(random.Random(7).randbytes(2048))
    whole = good_jpg.read_bytes()
    (src / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (src / "empty.png").write_bytes(b"")
    (src / "text.jpg").write_text("this is a text file, not a JPEG\n")
    r = convert(src, out, "--report", rep)
    assert r.exit_code == 1, r.output
    assert files_under(out) == {"good.png", "good.jpg"}
    report = read_report(rep)
    assert report["summary"]["converted"] == 2
    assert report["summary"]["failed"] == 4
    rows = rows_by_name(report)
    assert rows["good.png"]["status"] == rows["good.jpg"]["status"] == "converted"
    expected = {
        "corrupt.jpg": "not a recognised image",
        "truncated.jpg": "truncated",
        "empty.png": "empty file",
        "text.jpg": "not a recognised image",
    }
    failed_lines = [line for line in r.stderr.splitlines() if line.startswith("FAILED ")]
    assert len(failed_lines) == 4
    for name, words in expected.items():
        row = rows[name]
        assert row["status"] == "failed", name
        assert words in row["reason"], (name, row["reason"])
        assert "\n" not in row["reason"]
        [line] = [line for line in failed_lines if str(src / name) in line]
        assert row["reason"] in line


# 7. atomic writes


def test_failed_save_leaves_no_output_and_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    make_photo(src / "a.png", seed=1)
    make_photo(src / "b.png", seed=2)
    real_save = Image.Image.save
    calls: list[list[str]] = []

    def flaky_save(self: Image.Image, fp: Any, format: str | None = None, **params: Any) -> None:
        if not calls:
            calls.append(sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME))  # what is on disk mid-save
            fp.write(b"\x89PNG partial data")
            raise OSError("simulated I/O error")
        calls.append([])
        real_save(self, fp, format=format, **params)

    monkeypatch.setattr(Image.Image, "save", flaky_save)
    r = convert(src, out, "--report", rep)
    assert r.exit_code == 1, r.output
    assert len(calls) == 2  # the run went on to the second image
    [mid_save] = calls[0]
    assert mid_save.startswith(TEMP_PREFIX) and mid_save.endswith(TEMP_SUFFIX)  # it did write a temp file
    assert not (out / "a.png").exists()
    assert list(out.glob(f"{TEMP_PREFIX}*")) == []
    assert files_under(out) == {"b.png"}
    assert size_of(out / "b.png") == (40, 30)
    rows = rows_by_name(read_report(rep))
    assert rows["a.png"]["status"] == "failed"
    assert "could not be written" in rows["a.png"]["reason"]
    assert "simulated I/O error" in rows["a.png"]["reason"]
    assert rows["b.png"]["status"] == "converted"


def test_atomic_write_keeps_the_old_file_on_error(tmp_path: Path) -> None:
    folder = tmp_path / "atomic"
    folder.mkdir()
    dest = folder / "x.bin"
    dest.write_bytes(b"old")

    def boom(fh: Any) -> None:
        fh.write(b"new but incomplete")
        raise OSError("disk hiccup")

    with pytest.raises(OSError, match="disk hiccup"):
        atomic_write(dest, boom)
    assert dest.read_bytes() == b"old"
    assert sorted(os.listdir(folder)) == ["x.bin"]
    atomic_write(dest, lambda fh: fh.write(b"new"))
    assert dest.read_bytes() == b"new"
    assert sorted(os.listdir(folder)) == ["x.bin"]


# 8. --skip-existing / --overwrite


def test_skip_existing_then_overwrite(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    make_photo(src / "a.png", seed=1)
    make_photo(src / "b.png", seed=2)
    r = convert(src, out, "--report", tmp_path / "r1.json")
    assert r.exit_code == 0, r.output
    assert read_report(tmp_path / "r1.json")["summary"]["converted"] == 2
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    r = convert(src, out, "--report", tmp_path / "r2.json")
    assert r.exit_code == 0, r.output
    report = read_report(tmp_path / "r2.json")
    assert (report["summary"]["converted"], report["summary"]["skipped"]) == (0, 2)
    assert {row["status"] for row in report["files"]} == {"skipped"}
    assert all("--overwrite" in row["reason"] for row in report["files"])
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps

    (out / "b.png").write_bytes(b"")  # an empty leftover is not a finished output
    r = convert(src, out, "--report", tmp_path / "r3.json")
    assert r.exit_code == 0, r.output
    rows = rows_by_name(read_report(tmp_path / "r3.json"))
    assert (rows["a.png"]["status"], rows["b.png"]["status"]) == ("skipped", "converted")
    assert size_of(out / "b.png") == (40, 30)

    r = convert(src, out, "--overwrite", "--report", tmp_path / "r4.json")
    assert r.exit_code == 0, r.output
    assert read_report(tmp_path / "r4.json")["summary"]["converted"] == 2
    assert (out / "a.png").stat().st_mtime_ns != stamps["a.png"]
    assert files_under(out) == {"a.png", "b.png"}


# 9. report schema


def test_json_report_schema_and_values(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    make_photo(src / "a.png", (40, 30))
    (src / "bad.png").write_bytes(b"")
    r = convert(src, out, "--report", rep)
    assert r.exit_code == 1, r.output
    report = read_report(rep)
    assert set(report) == {"schema", "summary", "files"}
    assert report["schema"] == 1
    s = report["summary"]
    assert set(s) == SUMMARY_KEYS
    assert (s["converted"], s["skipped"], s["failed"], s["ignored_non_images"]) == (1, 0, 1, 0)
    # --backend auto on CPU: onnx when onnxruntime is installed, else traced (animecli.inference.backends).
    auto = resolve_backend(Backend.AUTO, torch.device("cpu"), torch.float32).backend.value
    assert (s["model"], s["device"], s["precision"], s["backend"]) == ("tiny", "cpu", "float32", auto)
    assert s["interrupted"] is False and s["fatal"] == ""
    assert s["elapsed_s"] > 0 and s["images_per_s"] > 0 and s["peak_rss_mb"] > 0
    assert [set(row) for row in report["files"]] == [ROW_KEYS, ROW_KEYS]
    rows = rows_by_name(report)
    a = rows["a.png"]
    assert (a["status"], a["reason"], a["dst"]) == ("converted", "", str(out / "a.png"))
    assert (a["input_size"], a["processed_size"]) == ("40×30", "40×30")
    assert a["load_ms"] > 0 and a["infer_ms"] > 0 and a["save_ms"] > 0 and a["rss_mb"] > 0
    assert a["gpu_peak_mb"] == 0
    bad = rows["bad.png"]
    assert bad["status"] == "failed" and bad["reason"] and bad["processed_size"] == ""


def test_csv_and_jsonl_reports_have_the_same_rows(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    make_photo(src / "a.png", (40, 30), seed=1)
    make_photo(src / "b.png", (40, 30), seed=2)
    (src / "c.jpg").write_text("nope")
    reports = {ext: tmp_path / f"r.{ext}" for ext in ("json", "csv", "jsonl")}
    for path in reports.values():
        r = convert(src, out, "--overwrite", "--report", path)
        assert r.exit_code == 1, r.output
    stable = ["src", "dst", "status", "reason", "input_size", "processed_size", "notes"]

    json_rows = read_report(reports["json"])["files"]
    with reports["csv"].open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == FIELDS
        csv_rows = list(reader)
    lines = [json.loads(line) for line in reports["jsonl"].read_text(encoding="utf-8").splitlines()]
    *jsonl_rows, tail = lines
    assert set(tail) == {"summary"} and set(tail["summary"]) == SUMMARY_KEYS
    assert (tail["summary"]["converted"], tail["summary"]["failed"]) == (2, 1)
    assert len(json_rows) == len(csv_rows) == len(jsonl_rows) == 3
    assert all(set(row) == ROW_KEYS for row in jsonl_rows)

    def pick(rows: list[dict[str, Any]]) -> list[list[str]]:
        return [[str(row[k]) for k in stable] for row in rows]

    assert pick(json_rows) == pick(csv_rows) == pick(jsonl_rows)
    assert [row["status"] for row in json_rows] == ["converted", "converted", "failed"]


def test_report_writer_formats_agree_exactly(tmp_path: Path) -> None:
    recs = [
        FileRecord("in/a.png", "out/a.png", Status.CONVERTED, "", "40×30", "16×12", 1.26, 2.0, 3.04, 100.0, 0.0,
                   "resized 40×30 → 16×12"),
        FileRecord("in/b,\"q\".jpg", "", Status.FAILED, "empty file (0 bytes); re-export or remove it"),
    ]
    summary = Summary(converted=1, failed=1, elapsed_s=2.0)
    parsed = {}
    for ext in ("json", "csv", "jsonl"):
        w = ReportWriter(tmp_path / f"r.{ext}")
        for rec in recs:
            w.add(rec)
        w.finish(summary)
        w.close()
        text = (tmp_path / f"r.{ext}").read_text(encoding="utf-8")
        if ext == "json":
            parsed[ext] = json.loads(text)["files"]
        elif ext == "jsonl":
            parsed[ext] = [json.loads(line) for line in text.splitlines()][:-1]
        else:
            parsed[ext] = list(csv.DictReader(text.splitlines()))
    assert parsed["json"] == parsed["jsonl"] == [rec.to_json() for rec in recs]
    assert parsed["json"][0]["load_ms"] == 1.3
    assert [[str(v) for v in row.values()] for row in parsed["json"]] == [list(row.values()) for row in parsed["csv"]]


# 10. device and precision


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_setup_error(tmp_path: Path) -> None:
    make_photo(tmp_path / "in" / "a.png")
    r = convert(tmp_path / "in", tmp_path / "out", "--device", "cuda", cpu=False)
    assert r.exit_code == 2, r.output
    assert "--device cpu" in r.stderr
    assert not (tmp_path / "out").exists()


def test_fp16_on_cpu_is_a_usage_error(tmp_path: Path) -> None:
    make_photo(tmp_path / "in" / "a.png")
    r = convert(tmp_path / "in", tmp_path / "out", "--precision", "fp16")
    assert r.exit_code == 2, r.output
    assert "fp16" in r.stderr and "CUDA" in r.stderr
    assert not (tmp_path / "out").exists()


# 11. sizes


def test_max_size_downscales_and_odd_sizes_come_back_exact(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    make_photo(src / "big.png", (40, 30), seed=1)
    make_photo(src / "odd.png", (33, 21), seed=2)
    make_photo(src / "tiny.png", (7, 3), seed=3)
    make_photo(src / "dot.png", (1, 1), seed=4)
    r = convert(src, out, "--max-size", "16", "--report", rep)
    assert r.exit_code == 0, r.output
    assert size_of(out / "big.png") == (16, 12)
    assert size_of(out / "odd.png") == (16, 10)  # 21 * 16/33 = 10.2
    assert size_of(out / "tiny.png") == (7, 3)
    assert size_of(out / "dot.png") == (1, 1)
    rows = rows_by_name(read_report(rep))
    big = rows["big.png"]
    assert "resized 40×30 → 16×12" in big["notes"]
    assert (big["input_size"], big["processed_size"]) == ("40×30", "16×12")
    assert "resized" not in rows["tiny.png"]["notes"]

    r = convert(src / "odd.png", tmp_path / "full", "--report", rep)
    assert r.exit_code == 0, r.output
    assert size_of(tmp_path / "full" / "odd.png") == (33, 21)
    row = read_report(rep)["files"][0]
    assert (row["input_size"], row["processed_size"], row["notes"]) == ("33×21", "33×21", "")


# 12. batching


def test_batched_output_equals_unbatched(tmp_path: Path) -> None:
    src = tmp_path / "in"
    for i in range(5):
        make_photo(src / f"s{i}.png", (24, 20), seed=10 + i)
    for i in range(2):
        make_photo(src / f"t{i}.png", (20, 28), seed=20 + i)  # a second size, batched separately
    names = sorted(p.name for p in src.iterdir())
    r1 = convert(src, tmp_path / "b1", "--batch-size", "1")
    r3 = convert(src, tmp_path / "b3", "--batch-size", "3")
    assert r1.exit_code == 0 and r3.exit_code == 0, r1.output + r3.output
    assert files_under(tmp_path / "b1") == files_under(tmp_path / "b3") == set(names)
    for name in names:
        a, b = pixels(tmp_path / "b1" / name), pixels(tmp_path / "b3" / name)
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= 1, name
    # different inputs really give different outputs (no batch mix-up hidden by equal results)
    assert np.abs(pixels(tmp_path / "b3" / "s0.png") - pixels(tmp_path / "b3" / "s1.png")).max() > 0


# 13. usage and setup errors


def test_no_images_found_exits_2(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("x")
    r = convert(tmp_path / "in", tmp_path / "out")
    assert r.exit_code == 2, r.output
    assert "no images found" in r.stderr


def test_missing_input_is_reported_failed(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    make_photo(src / "a.png")
    missing = tmp_path / "nope.jpg"
    r = convert(src, missing, out, "--report", rep)
    assert r.exit_code == 1, r.output
    assert f"FAILED {missing}" in r.stderr and "no such file" in r.stderr
    rows = rows_by_name(read_report(rep))
    assert rows["nope.jpg"]["status"] == "failed" and "no such file" in rows["nope.jpg"]["reason"]
    assert rows["a.png"]["status"] == "converted"
    assert files_under(out) == {"a.png"}

    r = convert(missing, out)  # nothing at all to convert: a usage error
    assert r.exit_code == 2
    assert str(missing) in r.stderr


def test_output_that_is_a_file_exits_2(tmp_path: Path) -> None:
    make_photo(tmp_path / "in" / "a.png")
    (tmp_path / "out").write_text("x")
    r = convert(tmp_path / "in", tmp_path / "out")
    assert r.exit_code == 2
    assert "is a file" in r.stderr


def test_missing_weights_file_exits_2_naming_it(tmp_path: Path) -> None:
    make_photo(tmp_path / "in" / "a.png")
    w = tmp_path / "no_such_weights.pt"
    r = convert(tmp_path / "in", tmp_path / "out", "--weights", w)
    assert r.exit_code == 2, r.output
    assert str(w) in r.stderr
    assert not (tmp_path / "out").exists()


def test_wrong_architecture_weights_exit_2_listing_keys(tmp_path: Path, tiny_weights_dir: Path) -> None:
    make_photo(tmp_path / "in" / "a.png")
    r = convert(tmp_path / "in", tmp_path / "out", "--weights", tiny_weights_dir / "tiny_v2.pt", "--arch", "lite")
    assert r.exit_code == 2, r.output
    assert "lite architecture" in r.stderr
    assert "missing" in r.stderr and "unexpected" in r.stderr
    assert "stem.0.1.weight" in r.stderr  # a lite key the v2 file lacks
    assert not (tmp_path / "out").exists()


def test_weights_file_with_detected_arch_converts(tmp_path: Path, tiny_weights_dir: Path) -> None:
    make_photo(tmp_path / "in" / "a.png", (33, 21))
    r = convert(tmp_path / "in", tmp_path / "out", "--weights", tiny_weights_dir / "tiny_v2.pt")
    assert r.exit_code == 0, r.output
    assert size_of(tmp_path / "out" / "a.png") == (33, 21)
    assert "model tiny_v2.pt" in r.stdout


def test_truncated_weights_exit_2(tmp_path: Path, tiny_weights_dir: Path) -> None:
    make_photo(tmp_path / "in" / "a.png")
    data = (tiny_weights_dir / "tiny.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    r = convert(tmp_path / "in", tmp_path / "out", "--weights", cut)
    assert r.exit_code == 2, r.output
    assert str(cut) in r.stderr and "truncated or corrupt" in r.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_model_exits_2(tmp_path: Path) -> None:
    make_photo(tmp_path / "in" / "a.png")
    r = convert(tmp_path / "in", tmp_path / "out", "--model", "nonexistent")
    assert r.exit_code == 2, r.output
    assert "unknown model 'nonexistent'" in r.stderr and "tiny" in r.stderr


# 14. --dry-run and --backend traced


def test_dry_run_writes_nothing_and_lists_plan(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    make_photo(src / "a.png")
    make_photo(src / "sub" / "b.jpg")
    r = convert(src, out, "--dry-run", "--report", rep)
    assert r.exit_code == 0, r.output
    assert not out.exists()
    assert f"would convert {src / 'a.png'} -> {out / 'a.png'}" in r.stdout
    assert f"would convert {src / 'sub' / 'b.jpg'} -> {out / 'sub' / 'b.jpg'}" in r.stdout
    report = read_report(rep)
    assert [row["status"] for row in report["files"]] == ["planned", "planned"]
    assert report["summary"]["converted"] == 0


def test_dry_run_reports_an_empty_file_as_the_real_run_would(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    make_photo(src / "a.png")
    (src / "empty.jpg").write_bytes(b"")
    dry = convert(src, out, "--dry-run", "--report", rep)
    planned = {Path(row["src"]).name: row for row in read_report(rep)["files"]}
    real = convert(src, out)
    assert dry.exit_code == real.exit_code == 1, (dry.output, real.output)
    assert planned["a.png"]["status"] == "planned"
    assert planned["empty.jpg"]["status"] == "failed"
    assert "empty file (0 bytes)" in planned["empty.jpg"]["reason"]
    assert f"{src / 'empty.jpg'}: empty file (0 bytes)" in dry.stderr
    assert dry.stderr.splitlines()[0] == real.stderr.splitlines()[0]


def test_dry_run_with_nothing_to_do_exits_2(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    r = convert(tmp_path / "in", tmp_path / "out", "--dry-run")
    assert r.exit_code == 2
    assert "no images found" in r.stderr


def _convert_twice(
    tmp_path: Path, sizes: tuple[tuple[int, int], ...], first: tuple[str, ...], second: tuple[str, ...]
) -> tuple[dict[str, Any], list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Convert the same photos with two option sets: the second run's report summary and,
    per photo, (input, first output, second output) pixels."""
    src, rep = tmp_path / "in", tmp_path / "r.json"
    names = [f"p{i}.png" for i in range(len(sizes))]
    for i, (name, size) in enumerate(zip(names, sizes, strict=True)):
        make_photo(src / name, size, seed=i + 1)
    r = convert(src, tmp_path / "first", *first)
    assert r.exit_code == 0, r.output
    r = convert(src, tmp_path / "second", *second, "--report", rep)
    assert r.exit_code == 0, r.output
    outputs = [(pixels(src / n), pixels(tmp_path / "first" / n), pixels(tmp_path / "second" / n)) for n in names]
    for _, a, b in outputs:
        assert a.shape == b.shape
    return read_report(rep)["summary"], outputs


def test_traced_backend_matches_eager(tmp_path: Path) -> None:
    summary, outputs = _convert_twice(tmp_path, ((40, 30), (33, 21)), ("--backend", "eager"), ("--backend", "traced"))
    assert summary["backend"] == "traced"
    for _, a, b in outputs:
        assert np.abs(a.astype(np.int64) - b).max() <= 1


def test_bf16_on_cpu_converts_close_to_float32(tmp_path: Path) -> None:
    # bfloat16 on the CPU: eager PyTorch with float32 norm statistics (summed in chunks).
    summary, outputs = _convert_twice(tmp_path, ((40, 30), (36, 52)), ("--backend", "eager"), ("--precision", "bf16"))
    assert (summary["precision"], summary["backend"]) == ("bfloat16", "eager")
    for photo, a, b in outputs:
        diff = np.abs(a.astype(np.float64) - b)
        assert diff.mean() < 3.0 and diff.max() <= 40, (diff.mean(), diff.max())
        assert np.abs(b.astype(np.float64) - photo).mean() > diff.mean()  # stylised, not a copy


# 15. glob inputs


def test_glob_converts_only_matching_files(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    make_photo(src / "a.png", seed=1)
    make_photo(src / "b.png", seed=2)
    make_photo(src / "c.jpg", seed=3)
    make_photo(src / "sub" / "d.png", seed=4)
    r = convert(str(src / "*.png"), out, "--suffix", "_anime")
    assert r.exit_code == 0, r.output
    assert files_under(out) == {"a_anime.png", "b_anime.png"}
    assert size_of(out / "a_anime.png") == (40, 30)


def test_batches_of_mixed_sizes_report_in_input_order(tmp_path: Path, tiny_weights_dir: Path) -> None:
    """Images of one size run together, so they finish out of order; the log and report do not."""
    src = tmp_path / "in"
    sizes = [(40, 30), (40, 30), (24, 36), (40, 30), (24, 36), (40, 30), (33, 20)]
    for i, size in enumerate(sizes):
        make_photo(src / f"m{i}.png", size, seed=i)
    (src / "m4b.png").write_bytes(b"broken")  # a failure between them keeps its place too
    r = convert(src, tmp_path / "out", "--batch-size", "3", "--verbose", "--report", tmp_path / "r.json")
    assert r.exit_code == 1, r.output
    names = ["m0", "m1", "m2", "m3", "m4", "m4b", "m5", "m6"]
    assert [Path(row["src"]).stem for row in read_report(tmp_path / "r.json")["files"]] == names
    logged = [Path(line.split()[1]).stem for line in r.stdout.splitlines() if line.startswith("converted")]
    assert logged == [n for n in names if n != "m4b"]


def test_a_lone_odd_size_does_not_hold_back_the_records(tmp_path: Path, tiny_weights_dir: Path) -> None:
    """With --batch-size 4, one image of a size nobody shares runs after at most 2×4 arrivals,
    so the records after it are not held back to the end of the run."""
    from animecli.options import ConvertOptions, EngineOptions, LoadOptions, ModelChoice, WriteOptions
    from animecli.run.convert import run_convert

    src = tmp_path / "in"
    make_photo(src / "a00_odd.png", (40, 28))
    for i in range(1, 17):
        make_photo(src / f"a{i:02d}.png", (32, 32), seed=i)
    seen: list[str] = []
    converted_when_odd_emitted: list[int] = []

    def on_record(rec: FileRecord) -> None:
        seen.append(Path(rec.src).stem)
        if Path(rec.src).stem == "a00_odd":
            converted_when_odd_emitted.append(len(list((tmp_path / "out").glob("a*.png"))))

    opts = ConvertOptions(inputs=(str(src),), output=tmp_path / "out", recursive=True, model=ModelChoice(),
                          load=LoadOptions(), engine=EngineOptions(device="cpu", batch_size=4, threads=1),
                          write=WriteOptions(workers=0), report=None)
    summary = run_convert(opts, on_record)
    assert summary.converted == 17
    assert seen == sorted(seen)  # input order
    assert converted_when_odd_emitted and converted_when_odd_emitted[0] <= 1 + 2 * 4 + 4
