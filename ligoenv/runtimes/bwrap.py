"""bubblewrap: run a local unpacked tree read-only as `/`, without root, FUSE or a daemon."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ligoenv.errors import UsageError
from ligoenv.runtimes.base import RunPlan, Runtime

FRESH_MOUNTS = ("/tmp", "/proc", "/dev")  # noqa: S108 (paths inside the sandbox)


class Bwrap(Runtime):
    """`bwrap --ro-bind TREE / --proc /proc --dev /dev --tmpfs /tmp --bind $PWD $PWD ... CMD`."""

    name = "bwrap"
    install_hint = "install bubblewrap (`apt install bubblewrap`, `dnf install bubblewrap`)"

    def command(self, plan: RunPlan) -> list[str]:
        if plan.tree is None:
            raise UsageError("bwrap runs an unpacked tree and none is at hand: `ligoenv pull` it first")
        command = list(plan.command or plan.image_command)
        if not command:
            raise UsageError(f"{plan.pinned} has no Entrypoint or Cmd: give a command after --")
        argv = [self.executable]
        argv += _layered_root(plan.tree, plan.fresh_dirs) if plan.layered_root else \
            ["--ro-bind", str(plan.tree), "/"]
        argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # noqa: S108 (inside)
        if plan.bind_cwd:
            argv += ["--bind", plan.cwd, plan.cwd]
        argv += ["--chdir", plan.workdir or (plan.cwd if plan.bind_cwd else "/"),
                 "--die-with-parent", "--unshare-pid"]
        if not plan.stdin_tty:
            # A new session has no controlling terminal, so the command cannot push keystrokes
            # into the user's shell with TIOCSTI through an inherited stdout/stderr terminal.
            # With a terminal on stdin the run is interactive: a shell there needs the session
            # for job control, so it is kept.
            argv.append("--new-session")
        for bind in plan.binds:
            argv += ["--ro-bind" if bind.read_only else "--bind", bind.source, bind.destination]
        if plan.layered_root:
            argv += ["--remount-ro", "/"]  # mount points are made: `/` is read-only again
        if plan.cleanenv:
            argv.append("--clearenv")  # must precede --setenv: bwrap applies them in order
        for item in plan.image_env:
            name, _, value = item.partition("=")
            argv += ["--setenv", name, value]
        for name, value in plan.env:
            argv += ["--setenv", name, value]
        return argv + command


def _layered_root(tree: Path, fresh_dirs: tuple[str, ...]) -> list[str]:
    """A tmpfs `/` holding the tree's top-level entries: bound read-only, symlinks recreated,
    and `fresh_dirs` made empty so that bwrap can create mount points under them."""
    argv = ["--tmpfs", "/"]
    for entry in sorted(os.scandir(tree), key=lambda e: e.name):
        target = f"/{entry.name}"
        if _on_fresh_mount(target):
            continue
        if entry.is_symlink():
            argv += ["--symlink", os.readlink(entry.path), target]
        elif entry.name in fresh_dirs:
            argv += ["--dir", target]
        else:
            argv += ["--ro-bind", entry.path, target]
    return argv


def layered_tops(tree: Path, missing: Iterable[str]) -> tuple[str, ...] | None:
    """The empty top-level image directories to make fresh so that `missing` mount points can
    be created under a tmpfs `/`; None when one would have to go inside a non-empty one."""
    fresh = set()
    for destination in missing:
        parts = Path(destination).parts
        if len(parts) < 2:
            return None
        top = tree / parts[1]
        if top.is_symlink() or (top.exists() and not top.is_dir()):
            return None
        if top.is_dir():
            if any(top.iterdir()):
                return None
            fresh.add(parts[1])
    return tuple(sorted(fresh))


def add_mount_points(tree: Path, destinations: Iterable[str]) -> list[str]:
    """Create missing directories for bind destinations inside a writable tree.

    bwrap cannot create them under a read-only `/`. A component that is a symlink is left
    alone (it resolves inside the sandbox, never on the host). Returns what could not be made.
    """
    missing = []
    for destination in destinations:
        if _on_fresh_mount(destination):
            continue  # /tmp, /proc and /dev are mounted fresh, and bwrap can write there
        if not _make_inside(tree, destination):
            missing.append(destination)
    return missing


def _on_fresh_mount(destination: str) -> bool:
    return any(destination == top or destination.startswith(top + "/") for top in FRESH_MOUNTS)


def _make_inside(tree: Path, destination: str) -> bool:
    if ".." in destination.split("/"):
        return False  # Bind.parse refuses these; never create anything outside the tree
    current = tree
    for part in Path(destination).parts[1:]:
        current = current / part
        if current.is_symlink():
            return True  # bwrap follows it inside the sandbox
        if current.is_dir():
            continue
        if current.exists():
            return False
        try:
            current.mkdir()
        except OSError:
            return False
    return os.path.isdir(current)
