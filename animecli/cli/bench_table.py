"""The ``animecli bench`` table: column names, cells, caption, Markdown and JSON rows of a
:class:`~animecli.benchmark.BenchResult` (no printing; :mod:`animecli.cli.bench` prints)."""

from __future__ import annotations

import math

from animecli.benchmark import BenchResult, BenchRow


def _fmt(v: float | None, spec: str, suffix: str = "") -> str:
    if v is None:
        return "–"
    if math.isinf(v):
        return "identical"
    return f"{v:{spec}}{suffix}"


COLUMNS = ("model", "backend", "ms/image", "infer ms", "images/s", "load/infer/save %", "peak RSS MB",
           "PSNR vs eager fp32", "× eager", "× upstream")
GPU_COLUMNS = (*COLUMNS, "GPU peak MB")


def columns(result: BenchResult) -> tuple[str, ...]:
    """The table's column names (a GPU memory column on CUDA)."""
    return COLUMNS if result.device == "cpu" else GPU_COLUMNS


def _shares(r: BenchRow) -> str:
    total = r.load_ms + r.infer_ms + r.save_ms
    if total <= 0:
        return "–"
    return "/".join(f"{100.0 * v / total:.0f}" for v in (r.load_ms, r.infer_ms, r.save_ms))


def table_rows(result: BenchResult) -> list[tuple[str, ...]]:
    """The table's cells, one tuple per row, in :func:`columns` order."""
    rows: list[tuple[str, ...]] = []
    for r in result.rows:
        cells: tuple[str, ...] = (r.model, r.backend, _fmt(r.ms_per_image, ".0f"), _fmt(r.infer_ms, ".0f"),
                 _fmt(r.images_per_s, ".2f"), _shares(r), _fmt(r.peak_rss_mb, ".0f"), _fmt(r.psnr_db, ".1f", " dB"),
                 _fmt(r.speedup_vs_eager, ".2f", "×"), _fmt(r.speedup_vs_upstream, ".2f", "×"))
        if result.device != "cpu":
            cells = (*cells, _fmt(r.gpu_peak_mb, ".0f"))
        rows.append(cells)
    return rows


def caption(result: BenchResult) -> str:
    """One line: the conditions of the measurement."""
    batch = f", batch {result.batch_size}" if result.batch_size > 1 else ""
    return (f"{result.images} photos at {result.size}×{result.size}, end to end (decode → infer → JPEG encode), "
            f"median of {result.repeat} interleaved rounds, {result.threads} threads{batch}; {result.machine}; "
            f"{result.versions}")


def to_markdown(result: BenchResult) -> str:
    """The result as a Markdown table with its caption and notes."""
    cols = columns(result)
    lines = [caption(result), "", "| " + " | ".join(cols) + " |",
             "|" + "|".join(["---", "---"] + ["---:"] * (len(cols) - 2)) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(result)]
    lines += [""] + [f"Note: {n}" for n in result.notes]
    return "\n".join(lines).rstrip() + "\n"


def rows_as_dicts(result: BenchResult) -> list[dict[str, object]]:
    """The rows as JSON-ready dicts (``inf`` PSNR as ``null`` with ``identical: true``)."""
    out: list[dict[str, object]] = []
    for r in result.rows:
        d: dict[str, object] = dict(r.__dict__)
        if r.psnr_db is not None and math.isinf(r.psnr_db):
            d["psnr_db"], d["identical"] = None, True
        out.append(d)
    return out
