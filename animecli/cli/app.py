"""The command line (Typer): the app and its commands, one thin module per command.

The CLI is the only layer that prints or exits. Heavy imports (torch, the run) happen inside
the commands, so that ``animecli --help`` answers at once.
"""

from __future__ import annotations

import signal
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from animecli import __version__

if TYPE_CHECKING:
    pass
from animecli.cli import bench, convert, models, startup, train, watch
from animecli.cli.console import err, out
from animecli.cli.signals import EXIT_SIGNAL, Abort
from animecli.cli.usage import UsageGroup

app = typer.Typer(
    name="animecli",
    help="Batch-convert folders of photos into anime-style images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=UsageGroup,  # one-line option errors, --help without type labels (animecli/cli/usage.py)
)
models_app = typer.Typer(help="List, inspect and download generator weights.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def _version(value: bool) -> None:
    if value:
        out.print(f"animecli {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Batch-convert folders of photos into anime-style images."""
    if ctx.invoked_subcommand != "convert":  # convert takes a start-up signal over itself (cli.signals.Signals)
        got = startup.release()
        if got is not None:
            err.print(startup.message(got))
            raise typer.Exit(EXIT_SIGNAL.get(signal.Signals(got), 130))


app.command()(convert.convert)
# The options after IN OUT are convert's, parsed by the convert command itself (animecli.cli.watch).
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(watch.watch)
models_app.command("list")(models.models_list)
models_app.command("info")(models.models_info)
models_app.command("pull")(models.models_pull)
models_app.command("add")(models.models_add)
app.command()(train.distill)
app.command("eval")(train.evaluate_cmd)
app.command()(bench.bench)


def run() -> None:
    """Console-script entry point."""
    for stream in (sys.stdout, sys.stderr):
        # A log whose encoding cannot hold "×" or a file name (PYTHONIOENCODING=ascii, an odd
        # locale) gets escapes, not a UnicodeEncodeError that ends the run after the first file.
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # a stream that cannot change any more
                pass
    try:
        app()
    except KeyboardInterrupt as exc:
        err.print("aborted")
        sys.exit(EXIT_SIGNAL.get(signal.Signals(exc.signum), 130) if isinstance(exc, Abort) else 130)
