"""Where animecli keeps things: the shipped weights, the cache (pulled checkpoints, compiled
graphs), and which file suffixes count as photos. Imports nothing of ours (bottom layer)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

MANIFEST_NAME = "manifest.json"

# The file suffixes read as photos, by every reader: convert's discovery, the bench, int8
# calibration and training (lower case; compare with ``path.suffix.lower()``).
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})


def weights_dir() -> Path:
    """Folder of the shipped weights and their manifest.

    ``$ANIMECLI_WEIGHTS_DIR`` if set; else the source tree's ``weights/`` (editable
    installs and checkouts); else ``<prefix>/share/animecli/weights`` (wheel installs).
    """
    env = os.environ.get("ANIMECLI_WEIGHTS_DIR")
    if env:
        return Path(env)
    source = Path(__file__).resolve().parent.parent / "weights"
    if (source / MANIFEST_NAME).is_file():
        return source
    return Path(sys.prefix) / "share" / "animecli" / "weights"


def cache_dir() -> Path:
    """Return the folder that downloaded weights are kept in.

    ``$ANIMECLI_HOME`` if set, else the platform cache dir: ``$XDG_CACHE_HOME/animecli``
    or ``~/.cache/animecli`` on Linux, ``~/Library/Caches/animecli`` on macOS,
    ``%LOCALAPPDATA%\\animecli`` on Windows. The folder is not created here.

    Returns:
        The cache folder (possibly not existing yet).
    """
    home = os.environ.get("ANIMECLI_HOME")
    if home:
        return Path(home).expanduser()
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        base = Path(local) if local else Path.home() / "AppData" / "Local"
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        # The XDG spec says a relative value is invalid and must be ignored.
        base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "animecli"

