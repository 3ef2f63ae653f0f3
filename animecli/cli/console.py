"""What the CLI prints and how it fails: the two consoles (rich on a terminal, plain lines in a
pipe or log), exit codes, one-line error messages."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape

from animecli.errors import AnimecliError

if TYPE_CHECKING:
    pass

# soft_wrap: a message is one line however long (logs and scripts read lines; a terminal folds it).
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def printable(text: str) -> str:
    """``text`` safe to print on one line: undecodable file-name bytes (lone surrogates) shown as
    ``\\xNN``, control characters (a newline in a file name) as ``\\n``, ``\\x1b`` …"""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def check_output_files(paths: dict[str, Path | None]) -> None:
    """Refuse output files that could not be written, before the work that produces them."""
    from animecli.atomic import unwritable_file

    for option, path in paths.items():
        problem = unwritable_file(path) if path is not None else None
        if problem:
            err.print(f"error: {option} {escape(printable(str(path)))}: {problem}; choose a writable path")
            raise typer.Exit(EXIT_USAGE)


def fail(exc: AnimecliError) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(printable(str(exc)))}", markup=True, soft_wrap=True)
    return typer.Exit(exc.exit_code)


