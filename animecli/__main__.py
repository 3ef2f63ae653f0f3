"""``python -m animecli`` and the ``animecli`` command.

A shim in front of :mod:`animecli.cli.app`: importing the CLI (Typer, rich) takes about
0.1 s, and a Ctrl-C in that time would otherwise end in a traceback instead of
the usual "aborted" and exit code 130.
"""

import sys


def main() -> None:
    """Console-script entry point."""
    try:
        from animecli.cli.app import run
    except KeyboardInterrupt:
        sys.stderr.write("aborted\n")
        raise SystemExit(130) from None
    run()


if __name__ == "__main__":
    main()
