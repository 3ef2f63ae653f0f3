"""A conversion run: the output lock, the resume state, the report, and the two ways to run
it (local, Ray) over one :class:`~animecli.run.session.Session`. Imports io, inference and
weights; never the CLI."""
