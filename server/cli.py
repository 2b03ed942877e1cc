"""Entry point of the `ligoenv-server` command."""

from __future__ import annotations


def main() -> None:
    raise SystemExit("ligoenv-server: not yet implemented")
