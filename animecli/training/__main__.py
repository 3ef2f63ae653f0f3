"""``python -m animecli.training``: run :func:`animecli.training.distill.train` from the shell.

The user-facing command is ``animecli distill``; this entry point exists so a
long CPU run can be started with nothing but the package on the path.
"""
