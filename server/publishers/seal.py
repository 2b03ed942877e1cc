"""Seal a staged image tree before it is published: nobody but the publisher may change it.

Images carry world-writable directories (a 0777 `/opt/conda`) and, unpacked as root, files owned
by their image's users; published as they are, any local user of that uid (or every user) could
change what others run. Every publisher calls `seal_tree` on a staged tree before it becomes
visible; a clone of a sealed tree (a layer chain's, an image's) is sealed already but for what
was written into it since, so `seal_paths` seals those entries alone.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from ligoenv.store.errors import PublishError

_WRITE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def seal_tree(tree: Path, *, keep_ownership: bool = False) -> int:
    """Give every entry of `tree` to the publisher's user and group and remove group and other
    write bits; returns how many entries changed.

    `keep_ownership` keeps the image's owners (for root-run sites that need them); the write bits
    go all the same. Symlinks are never followed; setuid bits the unpacker kept survive the chown.
    """
    owner = _owner(keep_ownership)
    try:
        changed = _seal_root(tree, owner)
        for _, dirs, files, dir_fd in os.fwalk(tree):  # never follows symlinks
            for name in dirs + files:
                changed += _seal(name, dir_fd, owner)
    except OSError as error:
        raise _failed(tree, error) from None
    return changed


def seal_paths(tree: Path, paths: Iterable[str], *, keep_ownership: bool = False) -> int:
    """Seal the root of `tree` and its entries at `paths` (relative, "/"-separated), as
    `seal_tree` would; returns how many changed.

    For a clone of a sealed tree, given what was written into it since: nothing else needs it.
    A path that is gone, or that now leads through a symlink or a file, is skipped (whatever
    replaced it is listed itself); no symlink is ever followed. The caller lists no name whose
    inode another tree shares: sealing it would change that tree too.
    """
    owner = _owner(keep_ownership)
    try:
        changed = _seal_root(tree, owner)
        with _Directories(tree) as directories:
            for parts, names in _by_directory(paths):
                dir_fd = directories.open(parts)
                if dir_fd is not None:
                    for name in names:
                        changed += _seal_if_there(name, dir_fd, owner)
    except OSError as error:
        raise _failed(tree, error) from None
    return changed


def _by_directory(paths: Iterable[str]) -> list[tuple[list[str], list[str]]]:
    """`paths` grouped by the directory that holds them: (its components, the names in it), in
    depth-first order, so that `_Directories` opens each directory once."""
    names: dict[str, list[str]] = {}
    for path in paths:
        if path:
            parent, _, name = path.rpartition("/")
            names.setdefault(parent, []).append(name)
    return sorted(((parent.split("/") if parent else [], group) for parent, group in names.items()),
                  key=lambda item: item[0])


def _owner(keep_ownership: bool) -> tuple[int, int] | None:
    return None if keep_ownership else (os.geteuid(), os.getegid())


def _failed(tree: Path, error: OSError) -> PublishError:
    return PublishError(f"cannot seal {tree} before publishing it: {error.strerror} "
                        f"({error.filename})")


def _seal_root(tree: Path, owner: tuple[int, int] | None) -> int:
    parent = os.open(tree.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return _seal(tree.name, parent, owner)
    finally:
        os.close(parent)


def _seal_if_there(name: str, dir_fd: int, owner: tuple[int, int] | None) -> int:
    try:
        return _seal(name, dir_fd, owner)
    except FileNotFoundError:
        return 0


class _Directories:
    """Open directories along one path below a root, one component at a time, never through a
    symlink; the ones still wanted stay open for the next path."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._open: list[tuple[str, int]] = []

    def __enter__(self) -> _Directories:
        self._root_fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        return self

    def __exit__(self, *exc: object) -> None:
        self._keep(0)
        os.close(self._root_fd)

    def open(self, parts: list[str]) -> int | None:
        """An fd of directory `parts`; None when it is missing or not a directory."""
        keep = 0
        while keep < min(len(parts), len(self._open)) and self._open[keep][0] == parts[keep]:
            keep += 1
        self._keep(keep)
        for name in parts[keep:]:
            parent = self._open[-1][1] if self._open else self._root_fd
            try:
                fd = os.open(name, _DIRECTORY, dir_fd=parent)
            except (FileNotFoundError, NotADirectoryError):
                return None
            except OSError as error:
                if error.errno == errno.ELOOP:  # a symlink now
                    return None
                raise
            self._open.append((name, fd))
        return self._open[-1][1] if self._open else self._root_fd

    def _keep(self, depth: int) -> None:
        while len(self._open) > depth:
            os.close(self._open.pop()[1])


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

