"""ligoenv: reproducible container environments, pinned by digest and run anywhere."""

__version__ = "0.1.0"
