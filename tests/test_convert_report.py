"""``animecli convert --report``: the JSON schema and its values, the CSV and JSONL forms with the
same rows, and ReportWriter's three formats agreeing exactly.

Every test uses the tiny seeded generators of ``tiny_weights_dir`` on images of a few dozen pixels.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from animecli.inference.backends import resolve_backend
from animecli.options import Backend
from animecli.run.report import FIELDS, FileRecord, ReportWriter, Status, Summary
from tests.conftest import cli_convert as convert
from tests.conftest import make_photo, read_report, rows_by_name

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
