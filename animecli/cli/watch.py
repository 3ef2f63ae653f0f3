"""``animecli watch``: convert's options parsed by convert's own command, then the loop of
:mod:`animecli.run.watch` with its records printed as ``convert`` prints them."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from typer.core import TyperGroup

from animecli.cli.console import EXIT_USAGE, err, fail, out, printable
from animecli.cli.convert import convert_options, exit_code, record_line, summary_line
from animecli.cli.signals import EXIT_SIGNAL, Abort, Signals
from animecli.errors import AnimecliError

if TYPE_CHECKING:
    from animecli.run.report import FileRecord
    from animecli.run.session import RunInfo


def watch(
    ctx: typer.Context,
    settle: Annotated[float, typer.Option(min=0.0, help="Seconds a file must stay the same size and age before it is converted (a copy in progress keeps changing).")] = 2.0,
    interval: Annotated[float, typer.Option(min=0.05, help="Seconds between looks at the folders (with file-system events too, as a safety net).")] = 1.0,
    poll: Annotated[bool, typer.Option("--poll", help="Only poll; do not use file-system events (watchdog) even when installed.")] = False,
) -> None:
    """Convert INPUT... into OUTPUT, then every new or changed file as it arrives: [bold]animecli watch inbox/ out/ [CONVERT OPTIONS][/].

    Takes every `convert` option (--model, --crf, --report, ...). Files are converted once they
    have stopped growing, with convert's lock, resume state and report (one report for the
    whole watch). SIGINT/SIGTERM stop it after the current file (a video in progress is
    abandoned, nothing half-written). Exit codes: 130/143 stopped by a signal; 1 the output
    became unwritable; 2 usage or setup error. Events need `pip install 'animecli\\[watch]'`;
    without it the folders are polled.
    """
    from animecli.run.watch import WatchOptions, run_watch

    # The arguments left over are convert's: its own command parses them (same options, same checks).
    root = ctx.find_root().command
    convert_cmd = root.get_command(ctx, "convert") if isinstance(root, TyperGroup) else None
    if convert_cmd is None:  # watch registered without convert: a programming error, not a user's
        raise RuntimeError("animecli watch needs the convert command registered on the same app")
    # A bad one raises Click's usage error, which the app prints as convert's (cli/usage.py), exit 2.
    with convert_cmd.make_context("convert", list(ctx.args), parent=ctx.parent) as cctx:
        params = dict(cctx.params)
    opts = convert_options(**params)
    if opts.dry_run:
        err.print("error: --dry-run: watch converts; use `animecli convert --dry-run` to see what would be done")
        raise typer.Exit(EXIT_USAGE)
    quiet, verbose = bool(params["quiet"]), bool(params["verbose"])

    def on_record(rec: FileRecord) -> None:
        line = record_line(rec)
        if rec.status.value == "failed":
            err.print(line, markup=False, soft_wrap=True)
        elif not quiet and (verbose or rec.status.value != "skipped"):
            out.print(line, markup=False, soft_wrap=True)

    def on_start(info: RunInfo) -> None:
        if not quiet:
            out.print(f"model {info.model} on {info.device} ({info.precision}, {info.backend})")

    def on_note(text: str) -> None:
        if not quiet:
            err.print(escape(printable(text)), soft_wrap=True)

    try:
        with Signals() as sig:
            try:
                totals = run_watch(opts, WatchOptions(settle, interval, events=not poll), sig.stop, on_record,
                                   on_start, on_note=on_note)
            except AnimecliError as exc:
                raise fail(exc) from None
    except Abort as exc:  # a second signal: stop now
        # Exit here, not through Typer: it turns any KeyboardInterrupt into 130, silently.
        err.print("aborted")
        raise typer.Exit(EXIT_SIGNAL.get(signal.Signals(exc.signum), 130)) from None
    if totals.fatal:
        err.print(f"[bold red]error:[/] {escape(printable(totals.fatal))}", soft_wrap=True)
    if not quiet or totals.failed or totals.fatal:
        err.print(summary_line(totals), soft_wrap=True)
    raise typer.Exit(exit_code(totals, sig.received if totals.interrupted else None))
