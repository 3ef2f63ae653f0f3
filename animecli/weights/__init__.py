"""The weights layer: the manifest of named models (manifest), the one safe loader (checkpoint),
name → file → architecture (resolve) and the downloader of upstream checkpoints (download).
Imports models, never io, inference, run or cli."""
