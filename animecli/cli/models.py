"""``animecli models list | info | pull``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from animecli.errors import AnimecliError

if TYPE_CHECKING:
    pass
from animecli.cli.console import err, fail, out, printable


def models_list() -> None:
    """Show the named models: shipped students and pullable upstream checkpoints."""
    from animecli.weights.manifest import InstallState, load_manifest

    try:
        manifest = load_manifest()
    except AnimecliError as exc:
        raise fail(exc) from None
    columns = ("name", "default", "arch", "params", "size", "style", "licence", "installed")
    rows = []
    for name in sorted(manifest.models):
        e = manifest.models[name]
        default = "yes" if name == manifest.default else ""
        params = f"{e.parameters / 1e6:.2f} M" if e.parameters else "?"
        size = f"{e.size / 1e6:.1f} MB" if e.size else "?"
        state = manifest.install_state(e)
        if state is InstallState.INSTALLED:
            installed = "yes"
        elif state is InstallState.MISSING:
            installed = f"no: animecli models pull {name}" if e.remote else "no: reinstall animecli"
        elif e.remote:
            installed = f"damaged: delete {manifest.path_of(e)} and run animecli models pull {name}"
        else:
            installed = f"damaged ({manifest.path_of(e)}): reinstall animecli"
        rows.append((name, default, e.arch.value, params, size, e.style, e.licence, installed))
    if not out.is_terminal:  # a pipe or a file: whole values, one model per line, tab-separated
        for row in (columns, *rows):
            typer.echo("\t".join(row))  # not rich: it would expand the tabs
        return
    table = Table(title="animecli models")
    for col in columns:
        # Names and pull commands are never cut short (`face_paint_512_v1` vs `_v2`); the style folds.
        table.add_column(col, overflow="fold", no_wrap=col in ("name", "installed"))
    for row in rows:
        table.add_row(*row)
    out.print(table)


def models_info(name: Annotated[str, typer.Argument(help="Model name.")]) -> None:
    """Everything the manifest records about one model."""
    import json

    from animecli.weights.manifest import InstallState, load_manifest

    try:
        manifest = load_manifest()
        entry = manifest.get(name)
    except AnimecliError as exc:
        raise fail(exc) from None
    state = manifest.install_state(entry)
    data = {"name": name, **entry.to_json(), "path": str(manifest.path_of(entry)),
            "installed": state is InstallState.INSTALLED, "damaged": state is InstallState.DAMAGED}
    out.print_json(json.dumps(data))


def models_pull(name: Annotated[str, typer.Argument(help="Upstream model name, e.g. face_paint_512_v2.")]) -> None:
    """Download an upstream checkpoint into the cache (ANIMECLI_HOME or the platform cache folder)."""
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    from animecli.weights.manifest import load_manifest
    from animecli.weights.resolve import pull

    try:
        entry = load_manifest().get(name)
        if not entry.remote or entry.url is None:
            out.print(f"{name} ships with animecli; nothing to download")
            return
        with Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), console=err,
                      disable=not err.is_terminal) as bar:
            task = bar.add_task(f"pulling {name}", total=entry.size)

            def progress(done: int, total: int | None) -> None:
                bar.update(task, completed=done, total=total)

            def notice(message: str) -> None:
                err.print(f"warning: {escape(printable(message))}", soft_wrap=True)

            # pull, not download.download: it checks that a first download loads as the model.
            path = pull(entry, progress, notice)
    except AnimecliError as exc:
        raise fail(exc) from None
    out.print(f"{name}: {path}")



def models_add(
    file: Annotated[Path, typer.Argument(help="An AnimeGAN generator ONNX file (AnimeGANv3 or AnimeGANv2 export).")],
    name: Annotated[str, typer.Option("--name", "-n", help="The model's name for --model NAME.")],
) -> None:
    """Register an ONNX generator file as a named model (converted once, kept in ANIMECLI_HOME/models)."""
    from animecli.weights.imported import register_onnx

    try:
        entry, found = register_onnx(file, name)
    except AnimecliError as exc:
        raise fail(exc) from None
    check = "not checked (onnxruntime not installed)" if found.check_db is None else \
        f"matches onnxruntime at {found.check_db:.1f} dB"
    out.print(f"{name}: {entry.arch.value}, size multiple {entry.input_multiple}, {check}; "
              f"licence: {entry.licence}", soft_wrap=True, markup=False)
