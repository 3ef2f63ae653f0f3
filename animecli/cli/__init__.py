"""The command line: the only layer that imports Typer, prints or exits."""
