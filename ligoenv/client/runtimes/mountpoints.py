"""Where a mount may go inside an image tree: each destination is walked from the tree's root one
component at a time, never following a symlink of the image.

bwrap makes and mounts its destinations while the host's root is still reachable (as /oldroot),
so an image symlink on the way (`escape -> /oldroot/home/me`, or a relative one climbing out of
the new root) would put a mount point, and the directories made for it, on the host. A
destination that crosses an image symlink is therefore never used, whatever the runtime;
missing directories are made only in a tree of our own, and never through a symlink.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ligoenv.client.runtimes.base import Bind
from ligoenv.oci.errors import UsageError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class MountPoint:
    """A destination as the image tree has it; at most one of the three reasons is set."""

    destination: str
    symlink: str | None = None  # the first component that is a symlink in the image
    blocked: str | None = None  # the first component that is not a directory
    missing: str | None = None  # the first component that does not exist (made for a bind)

    @property
    def present(self) -> bool:
        return self.safe and self.missing is None

    @property
    def safe(self) -> bool:
        """Nothing on the way leads out of the tree: present already, or missing and makeable."""
        return self.symlink is None and self.blocked is None

    def refusal(self) -> str:
        """Why this destination cannot take a mount (for a safe one: that it is missing)."""
        if self.symlink:
            return (f"{self.symlink} is a symbolic link in the image, and a mount point must not "
                    "cross one")
        if self.blocked:
            return f"{self.blocked} is not a directory in the image"
        return f"{self.missing} does not exist in the image"


def inspect(tree: Path, destination: str, fresh: Iterable[str] = ()) -> MountPoint:
    """Walk `destination` (absolute, inside the image) down `tree` without following symlinks.

    `fresh` names top-level mounts the runtime makes anew whatever the image holds there (bwrap's
    /tmp, /proc, /dev): below them nothing of the image is reached.
    """
    inside = ""
    for part in destination.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            return MountPoint(destination, blocked=inside + "/..")  # never leave the tree
        inside += "/" + part
        if inside in fresh:
            return MountPoint(destination)
        try:
            mode = os.lstat(tree / inside.lstrip("/")).st_mode
        except FileNotFoundError:
            return MountPoint(destination, missing=inside)
        if stat.S_ISLNK(mode):
            return MountPoint(destination, symlink=inside)
        if not stat.S_ISDIR(mode):
            return MountPoint(destination, blocked=inside)
    return MountPoint(destination)


def check_binds(tree: Path, binds: Iterable[Bind], fresh: Iterable[str] = ()) -> list[MountPoint]:
    """Refuse any bind whose destination crosses an image symlink or a file; returns them all."""
    points = []
    fresh = tuple(fresh)
    for bind in binds:
        point = inspect(tree, bind.destination, fresh)
        if not point.safe:
            hint = " (bind to the directory it names)" if point.symlink else ""
            raise UsageError(f"cannot bind {bind.source} to {bind.destination}: {point.refusal()}{hint}")
        points.append(point)
    return points


def make(tree: Path, point: MountPoint) -> bool:
    """Create the missing directories of a safe `point` inside `tree` (a tree of our own).

    Every component is opened with O_NOFOLLOW from the tree's root, so a symlink that appeared
    since `inspect` is refused rather than followed. Returns whether the directory is there.
    """
    if not point.safe:
        return False
    parts = [part for part in point.destination.split("/") if part not in ("", ".")]
    try:
        fd = os.open(tree, _DIR_FLAGS)
    except OSError:
        return False
    try:
        for part in parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except OSError:
        return False
    finally:
        os.close(fd)
    return True
