"""The version of ligoenv, in the core so that the registry client can name itself (User-Agent)."""

__version__ = "0.1.0"
