"""Entry point of the `ligoenv` command."""

from __future__ import annotations


def main() -> None:
    raise SystemExit("ligoenv: not yet implemented")
