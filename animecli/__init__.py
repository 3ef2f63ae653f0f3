"""animecli: batch-convert folders of photos into anime-style images."""

__version__ = "0.1.0"
