"""What every runtime shares: the request and the plan (image by digest, binds, env), and the
Runtime class that turns a plan into a command line."""

from __future__ import annotations

import os
import platform as _platform
import posixpath
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ligoenv.client.runtimes.process import Executor, exec_command
from ligoenv.oci.digest import Digest
from ligoenv.oci.errors import UsageError
from ligoenv.oci.platform import Platform
from ligoenv.oci.reference import Reference
from ligoenv.store.errors import RuntimeNotFound


@dataclass(frozen=True)
class Host:
    """The machine we run on (`platform.system()`, `platform.machine()`); tests pass their own."""

    system: str
    machine: str

    @classmethod
    def current(cls) -> Host:
        return cls(_platform.system(), _platform.machine())

    @property
    def is_macos_arm64(self) -> bool:
        return self.system == "Darwin" and self.machine.lower() in ("arm64", "aarch64")


@dataclass(frozen=True)
class Bind:
    """`-B SRC[:DST[:ro]]`: a host path made visible inside the container."""

    source: str
    destination: str
    read_only: bool = False

    @classmethod
    def parse(cls, text: str) -> Bind:
        parts = text.split(":")
        read_only = len(parts) == 3 and parts[2] == "ro"
        if len(parts) > 3 or (len(parts) == 3 and parts[2] not in ("ro", "rw")) or not parts[0]:
            raise UsageError(f"invalid bind {text!r}: expected SRC[:DST[:ro]]")
        destination = parts[1] if len(parts) > 1 and parts[1] else parts[0]
        if not destination.startswith("/"):
            raise UsageError(f"invalid bind {text!r}: the destination must be an absolute path")
        # Mount points are made inside the image tree (bwrap): a `..` could reach out of it.
        if ".." in destination.split("/"):
            raise UsageError(f"invalid bind {text!r}: the destination must not contain '..'")
        return cls(os.path.abspath(parts[0]), _normalise(destination), read_only)

    def __str__(self) -> str:
        return f"{self.source}:{self.destination}" + (":ro" if self.read_only else "")


def _normalise(destination: str) -> str:
    """`/a//b/./c/` -> `/a/b/c` (posixpath keeps a leading `//`, which means nothing here)."""
    return "/" + posixpath.normpath(destination).lstrip("/")


def parse_env(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or "\0" in text:
        raise UsageError(f"invalid --env {text!r}: expected NAME=VALUE")
    return name, value


@dataclass(frozen=True)
class RunRequest:
    """What the user asked for, as the command line said it; carried unchanged to the runtime."""

    reference: str  # a reference, or a lockfile environment name
    command: tuple[str, ...]
    cwd: str
    runtime: str = "auto"
    platform: Platform | None = None  # --platform, when given
    locked: bool = False  # `reference` names an environment of the lockfile given with --lock
    binds: tuple[Bind, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    gpu: bool = False
    cleanenv: bool = False
    workdir: str | None = None  # --pwd: working directory inside the container
    stdin_open: bool = True  # stdin is a terminal, pipe or file: keep it open (docker -i)
    tty: bool = False  # stdin and stdout are terminals (docker -t)
    stdin_tty: bool = False  # stdin is a terminal (bwrap keeps the session for job control)
    host: Host = field(default_factory=Host.current)


@dataclass(frozen=True)
class RunPlan:
    """The request, resolved: what a runtime needs to build its command line. The image is
    always pinned."""

    request: RunRequest
    image: Reference  # registry/repository@top-digest
    platform: Platform  # the platform that runs: --platform, else this machine's
    platform_digest: Digest | None = None  # with --platform: that platform's manifest digest
    tree: Path | None = None  # an unpacked tree of the image, when one is at hand
    image_platforms: tuple[str, ...] = ()  # platforms the image provides, when known
    image_env: tuple[str, ...] = ()  # the image config's Env (bwrap sets it itself)
    image_command: tuple[str, ...] = ()  # Entrypoint + Cmd, for bwrap when no command is given
    bind_cwd: bool = True  # False when a read-only tree has no mount point for it (bwrap)
    # bwrap on a read-only tree lacking mount points: `/` is a tmpfs holding the tree's
    # top-level entries, so that missing mount points can be made there; `fresh_dirs` are the
    # image's empty top-level directories (such as /home) made fresh rather than bound.
    layered_root: bool = False
    fresh_dirs: tuple[str, ...] = ()

    @property
    def pinned(self) -> str:
        return self.image.pinned_str()

    @property
    def platform_explicit(self) -> bool:
        """The user asked for --platform."""
        return self.request.platform is not None


class Runtime(ABC):
    """A container runtime: found on PATH, and able to turn a plan into a command line."""

    name: str
    install_hint: str

    def __init__(self, executable: str | None = None,
                 which: Callable[[str], str | None] = shutil.which) -> None:
        self.executable = executable or self.name
        self._which = which

    def path(self) -> str | None:
        return self._which(self.executable)

    def available(self) -> bool:
        return self.path() is not None

    def ready(self, environ: Mapping[str, str]) -> bool:
        """For `auto`: whether the runtime can work here beyond being installed."""
        return True

    @abstractmethod
    def command(self, plan: RunPlan) -> list[str]: ...

    def environment(self, plan: RunPlan, environ: Mapping[str, str]) -> dict[str, str]:
        """The environment the runtime itself starts with: ours, untouched by default.

        Apptainer reads APPTAINER_BIND/SINGULARITY_BIND from it, so nothing is stripped.
        """
        return dict(environ)

    def execute(self, argv: Sequence[str], env: Mapping[str, str]) -> int:
        """Run the command line: by default this process becomes the runtime (exec), so exit
        status and signals pass straight through."""
        return exec_command(argv, env)

    def run(self, plan: RunPlan, environ: Mapping[str, str], *, executor: Executor | None = None,
            announce: Callable[[str], None] | None = None) -> int:
        """Build the command line for `plan` and run it (`executor`: tests record instead)."""
        argv = self.command(plan)
        if announce is not None:
            announce("running " + " ".join(argv))
        return (executor or self.execute)(argv, self.environment(plan, environ))

    def not_found(self) -> RuntimeNotFound:
        return RuntimeNotFound(f"{self.executable} is not on PATH: {self.install_hint}")


