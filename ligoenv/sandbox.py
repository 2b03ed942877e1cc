"""Complete an unpacked image tree so Apptainer/Singularity and bubblewrap can run it as is.

Adds `.singularity.d/` (see `ligoenv.singularityd`: actions, env scripts from the OCI Env, a
runscript from Entrypoint/Cmd, labels) with the root links Apptainer's sandboxes carry,
bind-point directories, empty /etc/hosts and /etc/resolv.conf and a `.cvmfscatalog`.

Every file is written to a new inode (temporary file, then rename), never through an existing
one: a tree may be a hard-linked clone whose files are shared with other trees.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from ligoenv import singularityd
from ligoenv.errors import UnsafeArchive
from ligoenv.oci.manifest import ImageConfig
from ligoenv.singularityd import ENV_SCRIPT, LABELS, RUNSCRIPT

__all__ = ["BIND_POINTS", "ENV_SCRIPT", "LABELS", "RUNSCRIPT", "complete_tree"]

BIND_POINTS = ("cvmfs", "srv", "hdfs", "gpfs", "dev", "proc", "sys", "tmp", "var/tmp", "home")
_STICKY_DIRS = {"tmp", "var/tmp"}


def complete_tree(tree: Path, config: ImageConfig) -> None:
    """Add what Apptainer/Singularity and bwrap need to `tree`. Running it twice changes nothing.

    Never follows a symlink of the image: a `/home -> /var/home` link stays as it is, and a
    hostile `.singularity.d -> /etc` is replaced rather than written through.
    """
    if not tree.is_dir() or tree.is_symlink():
        raise UnsafeArchive(f"cannot complete {tree}: not a directory")
    for relative, (content, mode) in singularityd.files(config).items():
        _write(tree, relative, content, mode)
    _real_dir(tree, ".singularity.d/libs")  # where `--nv` binds the host's GPU libraries
    for name, target in singularityd.ROOT_LINKS.items():
        _link_if_missing(tree, name, target)
    for name in BIND_POINTS:
        _bind_point(tree, name)
    for name in ("etc/hosts", "etc/resolv.conf"):
        _empty_file_if_missing(tree, name)
    _write(tree, ".cvmfscatalog", "", 0o644)


def _real_dir(tree: Path, relative: str) -> Path:
    """`tree/relative` as a real directory, replacing symlinks or files in our own paths."""
    current = tree
    for part in relative.split("/"):
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            current.mkdir(mode=0o755)
            continue
        if not stat.S_ISDIR(mode):
            current.unlink()  # a link or file where our metadata goes: ours wins
            current.mkdir(mode=0o755)
    return current


def _write(tree: Path, relative: str, content: str, mode: int) -> None:
    """Write `content` at `tree/relative` atomically, unless it is there already."""
    parent = _real_dir(tree, os.path.dirname(relative)) if "/" in relative else tree
    path = parent / os.path.basename(relative)
    data = content.encode()
    try:
        info = os.lstat(path)
        if stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == mode \
                and path.read_bytes() == data:
            return
        if stat.S_ISDIR(info.st_mode) and not stat.S_ISLNK(info.st_mode):
            raise UnsafeArchive(f"cannot write {relative} in {tree}: a directory is in the way")
    except FileNotFoundError:
        pass
    fd, temporary = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(temporary, mode)
        os.replace(temporary, path)  # replaces a symlink itself, never its target
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _bind_point(tree: Path, relative: str) -> None:
    """Create a bind-point directory unless any part of its path exists as a non-directory."""
    current = tree
    for part in relative.split("/"):
        current = current / part
        try:
            if not stat.S_ISDIR(os.lstat(current).st_mode):
                return  # a symlink (or file): the image decided, and we never follow it
        except FileNotFoundError:
            current.mkdir()
            # mkdir's mode is masked by the umask: set it explicitly.
            os.chmod(current, 0o1777 if relative in _STICKY_DIRS and current.name == "tmp"
                     else 0o755)


def _empty_file_if_missing(tree: Path, relative: str) -> None:
    parent_name, _, name = relative.rpartition("/")
    parent = tree / parent_name
    try:
        if not stat.S_ISDIR(os.lstat(parent).st_mode):
            return
    except FileNotFoundError:
        parent.mkdir(mode=0o755)
    if not os.path.lexists(parent / name):
        fd = os.open(parent / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        os.close(fd)


def _link_if_missing(tree: Path, name: str, target: str) -> None:
    """A relative symlink at the tree's root, unless the image has something of that name."""
    if not os.path.lexists(tree / name):
        os.symlink(target, tree / name)
