"""bubblewrap: run a local unpacked tree read-only as `/`, without root, FUSE or a daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ligoenv.client.runtimes.base import RunPlan, Runtime
from ligoenv.client.runtimes.process import exec_command, wait_forwarding_signals
from ligoenv.oci.errors import UsageError
from ligoenv.store.errors import RuntimeNotFound

# Mounted anew over whatever the image has there (or, when the image has no real directory
# there, made on the tmpfs of a layered root): nothing of the image is reached below them.
FRESH_MOUNTS = ("/tmp", "/proc", "/dev")  # noqa: S108 (paths inside the sandbox)


class Bwrap(Runtime):
    """`bwrap --ro-bind TREE / --proc /proc --dev /dev --tmpfs /tmp --bind $PWD $PWD ... CMD`."""

    name = "bwrap"
    install_hint = "install bubblewrap (`apt install bubblewrap`, `dnf install bubblewrap`)"

    def execute(self, argv: Sequence[str], env: Mapping[str, str]) -> int:
        """Run bwrap; a signal sent to us (a batch system's SIGTERM) reaches the command.

        bwrap does not forward signals and kills its child when it dies, so from a terminal,
        where Ctrl-C reaches the whole foreground process group anyway, bwrap replaces us;
        otherwise it runs as our child and we forward signals to the command: the only child
        of the PID namespace's init, whose host pid bwrap reports on --info-fd. (The namespace
        ends with the command, taking any processes it left behind with it.)
        """
        if sys.stdin.isatty():
            return exec_command(argv, env)
        return _run_forwarding_signals(list(argv), env)

    def command(self, plan: RunPlan) -> list[str]:
        if plan.tree is None:
            raise UsageError("bwrap runs an unpacked tree and none is at hand: `ligoenv pull` it first")
        if plan.request.gpu:
            raise UsageError("--gpu needs Apptainer/Singularity (--nv) or Docker/Podman: bubblewrap "
                             "does not bring the host's GPU driver into the image")
        command = list(plan.request.command or plan.image_command)
        if not command:
            raise UsageError(f"{plan.pinned} has no Entrypoint or Cmd: give a command after --")
        argv = [self.executable]
        argv += _layered_root(plan.tree, plan.fresh_dirs) if plan.layered_root else \
            ["--ro-bind", str(plan.tree), "/"]
        argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # noqa: S108 (inside)
        if plan.bind_cwd:
            argv += ["--bind", plan.request.cwd, plan.request.cwd]
        argv += ["--chdir", plan.request.workdir or (plan.request.cwd if plan.bind_cwd else "/"),
                 "--die-with-parent", "--unshare-pid"]
        if not plan.request.stdin_tty:
            # A new session has no controlling terminal, so the command cannot push keystrokes
            # into the user's shell with TIOCSTI through an inherited stdout/stderr terminal.
            # With a terminal on stdin the run is interactive: a shell there needs the session
            # for job control, so it is kept.
            argv.append("--new-session")
        for bind in plan.request.binds:
            argv += ["--ro-bind" if bind.read_only else "--bind", bind.source, bind.destination]
        if plan.layered_root:
            argv += ["--remount-ro", "/"]  # mount points are made: `/` is read-only again
        if plan.request.cleanenv:
            argv.append("--clearenv")  # must precede --setenv: bwrap applies them in order
        for item in plan.image_env:
            name, _, value = item.partition("=")
            argv += ["--setenv", name, value]
        for name, value in plan.request.env:
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


def _on_fresh_mount(destination: str) -> bool:
    return any(destination == top or destination.startswith(top + "/") for top in FRESH_MOUNTS)


def _run_forwarding_signals(argv: list[str], env: Mapping[str, str]) -> int:
    read_end, write_end = os.pipe()
    try:
        process = subprocess.Popen([argv[0], "--info-fd", str(write_end), *argv[1:]],
                                   env=dict(env), pass_fds=(write_end,))
    except OSError as error:
        raise RuntimeNotFound(f"cannot execute {argv[0]}: {error.strerror}") from None
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as info:
        init = _child_pid(info.read())  # None when bwrap failed before starting the sandbox

    return wait_forwarding_signals(process, lambda: _command_pid(init) or process.pid)


def _child_pid(info: bytes) -> int | None:
    try:
        return int(json.loads(info)["child-pid"])
    except (ValueError, KeyError, TypeError):
        return None


def _command_pid(init: int | None) -> int | None:
    """The host pid of the sandbox init's first child: the command bwrap started."""
    if init is None:
        return None
    try:
        children = Path(f"/proc/{init}/task/{init}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None
