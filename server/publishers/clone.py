"""Clone a published tree for a layer chain or an image: hard links, or reflinks where the file
system has them; directories are always made anew, so a clone shares no directory with its source.

A hard-link clone shares every file's inode with its source, which is safe only because nothing
writes through an existing inode: the unpacker unlinks and recreates what a layer changes
(ligoenv.oci.rootfs), completion replaces its files (ligoenv.store.completion), and published trees are
never modified afterwards.

The hard-link clone runs in-process, one `linkat` per file between open directories: `cp -al`
does the same walk with a `stat` of every file besides, and cost a first publication by chains a
third more time in its clones (see the README's layer chain figures).
"""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from pathlib import Path

from ligoenv.store.errors import PublishError

HARDLINK = "hardlink"
REFLINK = "reflink"

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def clone_method(directory: Path) -> str:
    """REFLINK when files in `directory` can share extents (btrfs, XFS), else HARDLINK.

    Reflinked files are inodes of their own, so even a careless writer could not change the
    source; hard links cost less where reflinks are missing (ext4, tmpfs).
    """
    with tempfile.TemporaryDirectory(dir=directory, prefix=".clone-probe-") as probe:
        source = Path(probe) / "a"
        source.write_bytes(b"probe")
        result = subprocess.run(["cp", "--reflink=always", str(source), str(Path(probe) / "b")],
                                capture_output=True, timeout=30, check=False)
    return REFLINK if result.returncode == 0 else HARDLINK


def clone_tree(source: Path, target: Path, method: str = HARDLINK) -> None:
    """Make `target` (absent) a clone of the tree `source`: same names, types, modes, owners,
    times, extended attributes and hard-link groups."""
    if method == REFLINK:
        _reflink_clone(source, target)
        return
    try:
        _link_tree(*_open_pair(source, None, target, None))
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        raise PublishError(f"cannot clone {source} to {target}: {error.strerror}{where}",
                           temporary=True) from None


def _open_pair(source: Path | str, source_dir: int | None, target: Path | str,
               target_dir: int | None) -> tuple[int, int, os.stat_result]:
    """Open the directory `source` (never through a symlink), make `target` beside it in the
    clone, private until `_copy_attributes` gives it the source's mode; both fds and the
    source's status."""
    source_fd = os.open(source, _DIRECTORY, dir_fd=source_dir)
    try:
        info = os.fstat(source_fd)
        os.mkdir(target, 0o700, dir_fd=target_dir)
        return source_fd, os.open(target, _DIRECTORY, dir_fd=target_dir), info
    except OSError:
        os.close(source_fd)
        raise


def _link_tree(source_fd: int, target_fd: int, info: os.stat_result) -> None:
    """Hard-link every non-directory of the directory `source_fd` into `target_fd`, recreate its
    subdirectories the same way, then give `target_fd` the source's attributes (last, since
    making entries changes a directory's times). Closes both fds.

    Depth is bounded by the unpacker's (ligoenv.oci.rootfs.MAX_DEPTH), and with it the fds held.
    """
    try:
        subdirectories = []
        with os.scandir(source_fd) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    subdirectories.append(entry.name)
                else:  # a symlink is linked itself, never followed
                    os.link(entry.name, entry.name, src_dir_fd=source_fd, dst_dir_fd=target_fd,
                            follow_symlinks=False)
        for name in subdirectories:
            _link_tree(*_open_pair(name, source_fd, name, target_fd))
        _copy_attributes(source_fd, target_fd, info)
    finally:
        os.close(source_fd)
        os.close(target_fd)


def _copy_attributes(source_fd: int, target_fd: int, info: os.stat_result) -> None:
    for name in os.listxattr(source_fd):  # default ACLs among them
        os.setxattr(target_fd, name, os.getxattr(source_fd, name))
    os.fchown(target_fd, info.st_uid, info.st_gid)
    os.fchmod(target_fd, stat.S_IMODE(info.st_mode))  # after the chown, which clears setgid
    os.utime(target_fd, ns=(info.st_atime_ns, info.st_mtime_ns))


def _reflink_clone(source: Path, target: Path) -> None:
    argv = ["cp", "--archive", "--reflink=always", "--no-target-directory", "--",
            str(source), str(target)]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise PublishError(f"cannot clone {source} to {target}: "
                           f"{lines[-1] if lines else f'cp exited with {result.returncode}'}",
                           temporary=True)
