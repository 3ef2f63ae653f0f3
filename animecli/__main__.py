"""``python -m animecli`` and the ``animecli`` command.

A shim in front of :mod:`animecli.cli.app`: importing the CLI (Typer, rich) takes about
0.1 s, and a Ctrl-C in that time would otherwise end in a traceback instead of
the usual "aborted" and exit code 130. SIGINT/SIGTERM handlers go in first of all
(animecli/cli/startup.py): a signal before the run starts still exits 130/143
and writes the --report.
"""

import sys


def main() -> None:
    """Console-script entry point."""
    try:
        # The standard library only, before anything slow; a Ctrl-C before the handlers are in
        # (while this import runs) still gets "aborted" and 130.
        from animecli.cli import startup

        startup.install()
        from animecli.cli.app import run
    except KeyboardInterrupt:
        sys.stderr.write("aborted\n")
        raise SystemExit(130) from None
    try:
        run()
    except SystemExit as exc:
        raise SystemExit(startup.exit_code(exc.code)) from None
    raise SystemExit(startup.exit_code(0))


if __name__ == "__main__":
    main()
