"""``animecli bench``: measure the engines and print the table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from animecli.errors import AnimecliError
from animecli.options import (
    Backend,
    Precision,
)

if TYPE_CHECKING:
    pass
from animecli.cli.console import check_output_files, err, fail, out


def bench(
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="Model name, weights file, or v2/lite (random weights); repeatable. Default: the default model and v2.")] = None,
    backend: Annotated[list[Backend] | None, typer.Option("--backend", "-b", help="Backend to measure; repeatable. Default: eager, traced, onnx, int8.")] = None,
    images: Annotated[Path | None, typer.Option(help="Folder of photos; default: the bundled examples/.")] = None,
    size: Annotated[int, typer.Option(min=16, help="Photos are centre-cropped and resized to SIZE×SIZE.")] = 512,
    max_images: Annotated[int, typer.Option(min=1, help="Use at most this many photos (the first, by name); a --batch-size above it is capped by it.")] = 8,
    repeat: Annotated[int, typer.Option(min=1, help="Timed rounds (rows interleaved); figures are medians.")] = 5,
    threads: Annotated[int, typer.Option(min=0, help="CPU threads for every row; 0 = the libraries' default.")] = 0,
    upstream: Annotated[bool, typer.Option("--upstream/--no-upstream", help="Add the upstream-equivalent row (v2, nn.GroupNorm, NCHW, eager).")] = True,
    rss: Annotated[bool, typer.Option("--rss/--no-rss", help="Measure each row's peak RSS in a child process.")] = True,
    calibration: Annotated[Path | None, typer.Option(help="int8 calibration photos; default: the bundled examples.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N. On CUDA: eager/traced rows, GPU peak memory, PSNR against eager float32 on the CPU.")] = "cpu",
    precision: Annotated[Precision, typer.Option(help="Engine rows' precision; auto = fp16 on CUDA, fp32 on CPU.")] = Precision.AUTO,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass in the engine rows (upstream row: 1).")] = 1,
    compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile the eager rows.")] = False,
    extra_precision: Annotated[list[Precision] | None, typer.Option("--extra-precision", help="One more eager row per model at this precision; repeatable. Default: bf16 on a CPU with AMX (where it is fastest), none elsewhere; fp32 on the CPU adds none.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Also write the table as Markdown to this file.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the rows as JSON.")] = None,
) -> None:
    """Time every backend × model on the same photos, side by side: ms/image, images/s, where time goes, peak RSS, PSNR."""
    import json

    from animecli.atomic import atomic_write_bytes
    from animecli.benchmark import DEFAULT_BACKENDS, BenchOptions, run_bench
    from animecli.cli.bench_table import caption, columns, rows_as_dicts, table_rows
    from animecli.cli.bench_table import to_markdown as bench_markdown

    opts = BenchOptions(
        images=images, size=size, max_images=max_images, models=tuple(model or ()),
        backends=tuple(backend or DEFAULT_BACKENDS), repeat=repeat, threads=threads, upstream=upstream, rss=rss,
        calibration=calibration,
        device=device, precision=precision, batch_size=batch_size, compile=compile_model,
        extra_precisions=tuple(extra_precision) if extra_precision else None,
    )

    def progress(line: str) -> None:
        err.print(line, markup=False, style="dim")

    check_output_files({"--markdown": markdown, "--json": json_out})
    try:
        result = run_bench(opts, progress)
    except AnimecliError as exc:
        raise fail(exc) from None
    table = Table(title="animecli bench", caption=caption(result))
    for i, col in enumerate(columns(result)):
        table.add_column(col, justify="left" if i < 2 else "right")
    for cells in table_rows(result):
        table.add_row(*cells)
    out.print(table)
    for note in result.notes:
        err.print(f"note: {escape(note)}")
    if markdown:
        atomic_write_bytes(markdown, bench_markdown(result).encode("utf-8"))
    if json_out:
        atomic_write_bytes(json_out, json.dumps({"caption": caption(result), "rows": rows_as_dicts(result)},
                                                indent=2).encode())

