"""Seal a staged image tree before it is published: nobody but the publisher may change it.

Images carry world-writable directories (a 0777 `/opt/conda`) and, unpacked as root, files owned
by their image's users; published as they are, any local user of that uid (or every user) could
change what others run. Every publisher calls `seal_tree` on a staged tree before it becomes
visible, and on any tree it clones from another.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ligoenv.store.errors import PublishError

_WRITE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH


def seal_tree(tree: Path, *, keep_ownership: bool = False) -> int:
    """Give every entry of `tree` to the publisher's user and group and remove group and other
    write bits; returns how many entries changed.

    `keep_ownership` keeps the image's owners (for root-run sites that need them); the write bits
    go all the same. Symlinks are never followed; setuid bits the unpacker kept survive the chown.
    """
    owner = None if keep_ownership else (os.geteuid(), os.getegid())
    changed = 0
    try:
        parent = os.open(tree.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            changed += _seal(tree.name, parent, owner)
        finally:
            os.close(parent)
        for _, dirs, files, dir_fd in os.fwalk(tree):  # never follows symlinks
            for name in dirs + files:
                changed += _seal(name, dir_fd, owner)
    except OSError as error:
        raise PublishError(f"cannot seal {tree} before publishing it: {error.strerror} "
                           f"({error.filename})") from None
    return changed


def _seal(name: str, dir_fd: int, owner: tuple[int, int] | None) -> int:
    """Seal the entry `name` of the directory `dir_fd`; 1 if it changed."""
    info = os.lstat(name, dir_fd=dir_fd)
    chown = owner is not None and (info.st_uid, info.st_gid) != owner
    if chown:
        assert owner is not None
        os.chown(name, *owner, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISLNK(info.st_mode):
        return int(chown)  # a symlink's own mode means nothing on Linux
    mode = stat.S_IMODE(info.st_mode)
    sealed = mode & ~_WRITE_BY_OTHERS
    if chown or sealed != mode:
        os.chmod(name, sealed, dir_fd=dir_fd)  # after chown, which clears setuid bits
        return 1
    return int(chown)

