"""What the subcommands share: the invocation (environment, host, executor), settings, parsing, output.

Kept free of typer and of heavy imports: the `resolve` fast path uses it too.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ligoenv.client.settings import Settings, load_settings

if TYPE_CHECKING:
    from ligoenv.client.resolve import Resolver
    from ligoenv.client.runtimes.base import Host
    from ligoenv.client.runtimes.process import Executor
    from ligoenv.oci.platform import Platform
    from ligoenv.store.lockfile import Lockfile


@dataclass
class Invocation:
    """The world a command runs in. Tests pass their own; the console script uses the real one."""

    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    host: Host | None = None  # None: this machine
    executor: Executor | None = None  # None: exec (replace the process)
    which: Callable[[str], str | None] = shutil.which
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    debug: bool = False
    args: list[str] = field(default_factory=list)  # the raw command line, for `run`'s `--`
    _warned: bool = field(default=False, repr=False)

    def settings(self, **cli: Any) -> Settings:
        settings = load_settings(cli, self.environ)
        if not self._warned:  # once per command, however often it reads its settings
            self._warned = True
            for warning in settings.warnings:
                note(f"warning: {warning}")
        return settings


def invocation(obj: object) -> Invocation:
    return obj if isinstance(obj, Invocation) else Invocation()


def load_lockfile(settings: Settings, *, strict: bool = False) -> Lockfile | None:
    """The lockfile in effect; None when only the default name applies and no such file exists."""
    from ligoenv.store.lockfile import read_lockfile

    path = settings.lockfile
    if not settings.lockfile_explicit and not path.exists():
        return None
    return read_lockfile(path, strict=strict)


def make_resolver(settings: Settings, lockfile: Lockfile | None) -> Resolver:
    from ligoenv.client.resolve import Resolver

    return Resolver(lockfile=lockfile, index=settings.index,
                    insecure_registries=settings.insecure_registries, warn=note)


def parse_platform(text: str | None) -> Platform | None:
    from ligoenv.oci.platform import Platform

    return Platform.parse(text) if text else None


def parse_when(text: str) -> datetime:
    """A time on the command line (see ligoenv.store.times.parse_time)."""
    from ligoenv.store.times import parse_time

    return parse_time(text)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def note(line: str) -> None:
    """Information for a human, on stderr so stdout stays parseable."""
    sys.stderr.write(f"ligoenv: {line}\n")


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines)
