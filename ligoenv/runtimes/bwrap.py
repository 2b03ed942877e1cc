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

    def needs_tree(self) -> bool:
        return True

    def command(self, plan: RunPlan) -> list[str]:
        if plan.tree is None:
            raise UsageError("bwrap runs an unpacked tree and none is at hand: `ligoenv pull` it first")
        command = list(plan.command or plan.image_command)
        if not command:
            raise UsageError(f"{plan.pinned} has no Entrypoint or Cmd: give a command after --")
        argv = [self.executable, "--ro-bind", str(plan.tree), "/", "--proc", "/proc",
                "--dev", "/dev", "--tmpfs", "/tmp"]  # noqa: S108 (inside the sandbox)
        if plan.bind_cwd:
            argv += ["--bind", plan.cwd, plan.cwd]
        argv += ["--chdir", plan.workdir or (plan.cwd if plan.bind_cwd else "/"),
                 "--die-with-parent", "--unshare-pid"]
        for bind in plan.binds:
            argv += ["--ro-bind" if bind.read_only else "--bind", bind.source, bind.destination]
        if plan.cleanenv:
            argv.append("--clearenv")  # must precede --setenv: bwrap applies them in order
        for item in plan.image_env:
            name, _, value = item.partition("=")
            argv += ["--setenv", name, value]
        for name, value in plan.env:
            argv += ["--setenv", name, value]
        return argv + command


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
