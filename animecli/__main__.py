"""``python -m animecli`` = the ``animecli`` command."""

from animecli.cli import run

run()
