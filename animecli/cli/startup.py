"""SIGINT and SIGTERM while the command line is still starting up.

``animecli convert`` installs the handlers that finish the current image and write the
report only once its options are parsed; before that, ``python -m animecli`` spends a
few hundred milliseconds (more on a busy machine) importing Typer, rich and the CLI.
A SIGINT in that time ended in a ``KeyboardInterrupt`` traceback or a bare "aborted",
a SIGTERM killed the process, and neither wrote the ``--report`` a monitor waits for.

:func:`install` is the first thing the entry point does (it imports only the standard
library, so it costs nothing). From then on a first SIGINT/SIGTERM is only remembered:
a handler that raised could break off an import half-way. Whoever starts real work
takes the signal over:

- ``convert`` (:class:`animecli.cli.signals.Signals`) calls :func:`take`; with a signal already received it
  writes an empty report marked ``interrupted`` (:func:`write_empty_report`, atomically,
  as every report) and exits 130/143 without loading a model;
- every other command calls :func:`release` first: the usual handlers come back, and a
  signal already received ends the process now;
- what ends before either (``--help``, an option error) exits through :func:`exit_code`,
  which turns the remembered signal into 130/143.

A second signal before any of these stops at once (exit 130/143, "aborted"), as a
second Ctrl-C does during a run.

What no Python code can cover: a signal in the first milliseconds, before the
interpreter has run this module (interpreter start-up, ``site``), gets the default
action: SIGTERM kills the process (return code -15), SIGINT raises KeyboardInterrupt
in ``site`` or kills it. ``bench/signal_sweep.py --window`` measures that window. The
same holds at the other end: once a finished run's interpreter tears down, CPython puts
the default handlers back (after the ``atexit`` callbacks), and a signal then kills the
process although its outputs and report are complete.
"""

from __future__ import annotations

# Only modules the interpreter has loaded already (time is built in) or that cost well under a
# millisecond: every import here widens the window in which a signal finds no handler.
import signal
import sys
import time

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing alone takes ~4 ms
if TYPE_CHECKING:
    from pathlib import Path
    from types import FrameType
    from typing import Any

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}

_pending: int | None = None
_previous: dict[int, Any] = {}
_started = time.monotonic()
_handed_over = False  # a run took the handlers over (and has put ours back since)


def _remember(signum: int, frame: FrameType | None) -> None:
    global _pending
    if _pending is None:
        _pending = signum
        return
    # A second signal: the user insists. SystemExit, not KeyboardInterrupt: Typer would turn
    # the latter into its own exit code. The first is dropped: this one's code is the exit status.
    _pending = None
    sys.stderr.write("aborted\n")
    raise SystemExit(EXIT_CODES.get(signal.Signals(signum), 130))


def install() -> None:
    """Remember SIGINT/SIGTERM from now on instead of acting on them (main thread only)."""
    global _started
    _started = time.monotonic()
    for s in EXIT_CODES:
        try:
            previous = signal.signal(s, _remember)
        except ValueError:  # not the main thread (an embedding program): leave its handlers alone
            return
        if previous is not _remember:
            _previous[s] = previous


def installed() -> bool:
    """Whether :func:`install` put its handler in place (and nobody replaced it)."""
    return any(signal.getsignal(s) is _remember for s in EXIT_CODES)


def pending() -> int | None:
    """The signal received during start-up and not taken over yet, if any."""
    return _pending


def take() -> int | None:
    """Hand the start-up signal, if any, to a run that installs its own handlers now.

    Returns:
        The signal number received before the run's handlers existed, or ``None``.
    """
    global _pending, _handed_over
    got, _pending, _handed_over = _pending, None, True
    return got


def release() -> int | None:
    """Put back the handlers that were there before :func:`install` (a command that does not
    install its own), and return the signal received meanwhile, if any."""
    for s, handler in _previous.items():
        if signal.getsignal(s) is _remember:
            signal.signal(s, handler)
    global _pending
    got, _pending = _pending, None
    return got


def message(signum: int) -> str:
    """What the command line prints when a signal received while starting ends the process."""
    return f"interrupted by {signal.Signals(signum).name} while starting up; nothing was done"


def exit_code(code: object) -> int | str | None:
    """The exit status for ``SystemExit(code)``: 130/143 when a signal is still pending (printing
    why), else ``code`` unchanged.

    A signal is pending here when it came before any command took it over (``--help``, an
    option error), or after a run gave the handlers back (while it was exiting).
    """
    global _pending
    signum, _pending = _pending, None
    if signum is None:
        return code if code is None or isinstance(code, (int, str)) else 1
    name = signal.Signals(signum).name
    sys.stderr.write((f"interrupted by {name} as the run ended" if _handed_over else message(signum)) + "\n")
    return EXIT_CODES.get(signal.Signals(signum), 130)


def write_empty_report(path: Path | None) -> str | None:
    """Write ``path`` as the report of a run that was interrupted before it converted anything.

    The same writer as every report (atomic: a reader sees the old file or the new one), so a
    previous run's report cannot stand in for this one.

    Returns:
        ``None`` when written (or no ``--report`` was given), else the one-line reason it was not.
    """
    if path is None:
        return None
    from animecli.errors import AnimecliError
    from animecli.run.report import ReportWriter, Summary, check_report_path

    try:
        check_report_path(path)
        report = ReportWriter(path)
        try:
            report.finish(Summary(interrupted=True, elapsed_s=time.monotonic() - _started))
        finally:
            report.close()
    except AnimecliError as exc:
        return str(exc)
    except OSError as exc:
        return f"could not write the report {path} ({exc.strerror or exc})"
    return None
