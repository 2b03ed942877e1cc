"""Writes the entries of one layer into a root filesystem tree, safely.

Every path is walked one component at a time with O_NOFOLLOW from an open root directory, so an
entry can never write, link or remove anything through a symlink or outside the tree.

The target may share inodes with other trees (a layer chain is a hard-link clone of its parent's
tree), so an entry that already exists is never written through: whatever a layer changes in a
file, symlink or fifo (content, mode, owner, times, type) is unlinked and created anew, never
opened for writing, chmod-ed, chown-ed or utime-d in place. Only directories are changed in
place, and a clone never shares directories.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ligoenv.oci.errors import LigoenvError, UnsafeArchive
from ligoenv.oci.tarstream import DEVICE_TYPES, HARDLINK, REGULAR_TYPES, TarEntry

MAX_PATH_BYTES = 4096  # Linux PATH_MAX
MAX_NAME_BYTES = 255  # Linux NAME_MAX
MAX_DEPTH = 256  # path components; bounds the recursion that removes trees
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_ID = 2**32 - 2  # (uid_t)-1 means "leave unchanged" to chown
_MAX_MTIME = 2**40
_SHORT = MAX_NAME_BYTES // 4  # characters: no component this long can exceed NAME_MAX bytes
_ACL_DEFAULT = "system.posix_acl_default"
UNKNOWN = -2  # a directory's new entries get a group we cannot predict (a default ACL, or unknown)


@dataclass(frozen=True)
class RatioCap:
    """What one layer may expand to: `ratio` times its compressed size, never less than `floor`
    (small layers of zeros legitimately compress well). A 3 KiB layer that expands to GiBs is
    refused after `floor` bytes instead of after the image's whole cap."""

    ratio: int
    compressed: int
    floor: int = 64 * 1024**2

    @property
    def limit(self) -> int:
        return max(self.ratio * self.compressed, self.floor)

    def check(self, expanded: int) -> None:
        if expanded > self.limit:
            raise UnsafeArchive(
                f"layer of {self.compressed} compressed bytes expands past {self.limit} bytes, more "
                f"than {self.ratio} times its size (a decompression bomb?); if the image is "
                "genuine, raise [publisher] max_expansion_ratio")


def entry_parts(name: str, what: str, *, rooted: bool = False) -> tuple[str, ...]:
    """Path components below the root: './' dropped; '..' and NUL refused, and absolute names
    too unless `rooted`.

    Tar tools write entry names relative to the archive's root: an absolute one is refused, as
    a name that climbs out with '..' is, rather than guessed at. A hardlink's target may be
    written from the image's root (`/bin/sh`): `rooted` reads it inside the target, as umoci does.
    """
    short = name[2:] if name[:2] == "./" else name
    if (len(short) <= 4 * _SHORT and short and short[0] != "/" and short[0] != "." and short[-1] != "/"
            and "/." not in short and "//" not in short and "\x00" not in short):
        # the common name, checked in a few C calls: no '.', '..', '' or hidden components
        parts = tuple(short.split("/"))
        if len(parts) <= MAX_DEPTH and (len(short) <= _SHORT or max(map(len, parts)) <= _SHORT):
            return parts
    if "\x00" in name:
        raise UnsafeArchive(f"{what} {name!r} contains a NUL byte")
    if name.startswith("/") and not rooted:
        raise UnsafeArchive(f"{what} {name!r} is an absolute path: layer entries must be relative")
    encoded = os.fsencode(name)
    if len(encoded) > MAX_PATH_BYTES:
        raise UnsafeArchive(f"{what} {name[:64]!r}... is longer than {MAX_PATH_BYTES} bytes")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise UnsafeArchive(f"{what} {name!r} climbs out of the image with '..'")
    if len(parts) > MAX_DEPTH:
        raise UnsafeArchive(f"{what} {name[:64]!r}... is deeper than {MAX_DEPTH} directories")
    if len(encoded) > MAX_NAME_BYTES and any(len(os.fsencode(p)) > MAX_NAME_BYTES for p in parts):
        raise UnsafeArchive(f"{what} {name[:64]!r}... has a component longer than {MAX_NAME_BYTES} bytes")
    return parts


def _mtime_ns(member: TarEntry) -> int:
    if type(member.mtime) is int and 0 <= member.mtime <= _MAX_MTIME:
        return member.mtime * 1_000_000_000
    mtime = max(0, min(member.mtime, _MAX_MTIME))
    return int(mtime) * 10**9 if float(mtime).is_integer() else round(mtime * 1e9)


class _Blocked(UnsafeArchive):
    """A path goes through a symlink or a non-directory: the writer names the entry."""

    def __init__(self, parts: tuple[str, ...]) -> None:
        self.path = "/".join(parts)
        super().__init__(f"{self.path!r} is a symlink or not a directory: a layer may not write through it")


class _Tree:
    """Directory fds below the target, opened with O_NOFOLLOW one component at a time.

    The fds along the last directory used are cached, since tar entries come in directory order.
    `touched` keeps the status of each existing directory as first opened, so that `finish` can
    restore the mtimes this layer's writes changed and, without root, the modes made
    owner-writable while the layer is applied. `group` is, for the directory `directory()` last
    returned, the group its new entries get (UNKNOWN where a default ACL decides their modes).
    """

    def __init__(self, root_fd: int, rootless: bool) -> None:
        self.root_fd = root_fd
        self.rootless = rootless
        self.touched: dict[tuple[str, ...], os.stat_result] = {}
        self.fresh: dict[tuple[str, ...], int] = {}  # made by this layer: the group of their entries
        self._chain: list[tuple[str, int, int]] = []  # (name, fd, group of its new entries)
        self._root_group = self._record(root_fd, ())
        self.group = self._root_group
        self._last: tuple[str, ...] | None = None

    def directory(self, parts: tuple[str, ...], create: bool) -> int | None:
        """An fd of directory `parts` (owned by the cache); None when missing and not `create`."""
        chain = self._chain
        if parts == self._last:  # the directory of the previous entry
            self.group = chain[-1][2]
            return chain[-1][1]
        self._last = None
        keep, limit = 0, min(len(chain), len(parts))
        while keep < limit and chain[keep][0] == parts[keep]:
            keep += 1
        self._truncate(keep)
        fd, group = (chain[-1][1], chain[-1][2]) if chain else (self.root_fd, self._root_group)
        for depth in range(keep, len(parts)):
            child = self.open_child(fd, parts[:depth + 1], create, group)
            if child is None:
                self.group = group
                return None
            fd, group = child
            chain.append((parts[depth], fd, group))
        self.group = group
        self._last = parts if parts else None
        return fd

    def open_child(self, dir_fd: int, parts: tuple[str, ...], create: bool,
                   group: int = UNKNOWN) -> tuple[int, int] | None:
        """Open directory parts[-1] inside `dir_fd` without following a symlink (caller closes);
        with the group its new entries get. `group` is that of `dir_fd`, which a new directory
        inherits."""
        name = parts[-1]
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            if not create:
                return None
            os.mkdir(name, 0o755, dir_fd=dir_fd)
            fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            os.fchmod(fd, 0o755)  # an implied parent directory, whatever the umask
            self.fresh[parts] = group
            return fd, group
        except PermissionError:
            if not self.rootless:
                raise
            self._widen_name(dir_fd, parts)
            fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError as err:
            if err.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            raise _Blocked(parts) from None
        fresh = self.fresh.get(parts)
        if fresh is not None:
            return fd, fresh  # made by this layer: nothing to record or widen
        try:
            return fd, self._record(fd, parts)
        except BaseException:
            os.close(fd)
            raise

    def made(self, parts: tuple[str, ...], group: int) -> None:
        """Directory `parts` was just made by this layer inside a directory of `group`."""
        self.fresh[parts] = group

    def forget(self, parts: tuple[str, ...]) -> None:
        """`parts` is about to be removed or replaced: close cached fds at or below it."""
        depth = len(parts)
        chain = self._chain
        if depth <= len(chain) and all(chain[i][0] == parts[i] for i in range(depth)):
            self._truncate(depth - 1)

    def close(self) -> None:
        self._truncate(0)

    def _truncate(self, keep: int) -> None:
        if len(self._chain) > keep:
            self._last = None
        while len(self._chain) > keep:
            os.close(self._chain.pop()[1])

    def _record(self, fd: int, parts: tuple[str, ...]) -> int:
        """Note an existing directory's status; the group its new entries get."""
        info = self.touched.get(parts)
        if info is None:
            info = self.touched[parts] = os.fstat(fd)
        mode = stat.S_IMODE(info.st_mode)
        if self.rootless and mode & 0o700 != 0o700:
            os.fchmod(fd, mode | 0o700)  # so that this layer can write into it
        return _group_of_new_entries(fd, info)

    def _widen_name(self, dir_fd: int, parts: tuple[str, ...]) -> None:
        """Make a directory we may not even open owner-accessible (rootless only)."""
        info = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISDIR(info.st_mode):
            raise _Blocked(parts)
        self.touched.setdefault(parts, info)
        os.chmod(parts[-1], stat.S_IMODE(info.st_mode) | 0o700, dir_fd=dir_fd)


def _group_of_new_entries(fd: int, info: os.stat_result) -> int:
    """The group an entry made in this directory gets: its own when setgid, else ours; UNKNOWN
    when a default ACL (rather than the umask) decides the new entries' modes."""
    try:
        if _ACL_DEFAULT in os.listxattr(fd):
            return UNKNOWN
    except OSError:
        return UNKNOWN
    return info.st_gid if info.st_mode & stat.S_ISGID else os.getegid()


@functools.lru_cache(maxsize=1)
def process_umask() -> int | None:
    """This process's umask, read without changing it (other threads may be creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return None


@dataclass(frozen=True)
class _Meta:
    mode: int
    uid: int
    gid: int
    mtime_ns: int


class RootfsWriter:
    """Applies the entries of one layer, in order, to the tree at `target`; then `finish()`.

    `chown` keeps the entries' owners (needs root); otherwise files belong to the current user.
    `max_bytes` caps what regular files may write (sparse files expand past their stream), counting
    `written_before` bytes that earlier layers of the same image wrote.

    Nothing already in the tree is ever written, chmod-ed, chown-ed or touched in place except
    directories: a changed file, link or fifo is removed and made anew (O_EXCL), so an inode
    shared with another tree through a hard link is never changed through this one.
    """

    def __init__(self, target: Path, *, chown: bool, keep_setuid: bool, max_bytes: int | None,
                 written_before: int = 0, ratio_cap: RatioCap | None = None) -> None:
        self.chown = chown
        self.keep_setuid = keep_setuid
        self.max_bytes = max_bytes
        self.ratio_cap = ratio_cap
        self.written_before = written_before
        self.bytes_written = 0
        self.skipped_devices: list[str] = []
        self.dropped_setuid: list[str] = []
        self._upper: set[str] = set()  # paths this layer wrote, with their ancestors
        self._linked: set[str] = set()  # of those, hard links to a file this layer did not make
        self._dirs: dict[tuple[str, ...], _Meta] = {}  # applied after their contents
        self._uid = os.geteuid()
        umask = process_umask()
        # mode bits a new file does not get from open() as asked, so that fchmod must set them
        self._unset_bits = 0o7777 if umask is None else 0o7000 | umask
        root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self._tree = _Tree(root_fd, rootless=self._uid != 0)
        except BaseException:
            os.close(root_fd)
            raise
        self._target = target

    def close(self) -> None:
        self._tree.close()
        os.close(self._tree.root_fd)

    def apply(self, member: TarEntry, data: Iterable[bytes | memoryview]) -> None:
        parts = entry_parts(member.name, "layer entry")
        try:
            self._apply(member, parts, data)
        except _Blocked as err:
            raise UnsafeArchive(f"layer entry {member.name!r} goes through {err.path!r}, which is a "
                                "symlink or not a directory: a layer may not write through it") from None
        except OSError as err:
            raise self._failed(parts, err) from None

    def changed(self) -> set[str]:
        """Relative paths of the entries this layer made or whose metadata it set: directories
        (with the implied ones), new files, symlinks and fifos, and hard links to those; not a
        hard link to a lower layer's file, whose inode a hard-link clone shares with other
        trees. Some may be gone again, removed by a later entry."""
        return self._upper - self._linked

    def _failed(self, parts: tuple[str, ...], err: OSError) -> LigoenvError:
        temporary = err.errno in (errno.ENOSPC, errno.EDQUOT)
        return LigoenvError(f"cannot unpack {'/'.join(parts) or '/'!r} into {self._target}: "
                            f"{err.strerror}", temporary=temporary)

    def finish(self) -> None:
        """Set directory metadata deepest first, after their contents, and restore the others'."""
        try:
            self._finish_dirs()
        except OSError as err:
            raise LigoenvError(f"cannot set directory metadata in {self._target}: {err.strerror}") from None

    def _finish_dirs(self) -> None:
        touched = self._tree.touched
        for parts in sorted(set(touched) | set(self._dirs), key=len, reverse=True):
            fd = self._tree.directory(parts, create=False)
            if fd is None:
                continue
            meta = self._dirs.get(parts)
            if meta is not None:
                self._set_meta(fd, meta)
                continue
            # a lower directory keeps its metadata: the layer would list it if it had changed
            before = touched[parts]
            if self._tree.rootless:
                os.fchmod(fd, stat.S_IMODE(before.st_mode))
            os.utime(fd, ns=(before.st_atime_ns, before.st_mtime_ns))
        self._tree.close()

    def _apply(self, member: TarEntry, parts: tuple[str, ...], data: Iterable[bytes | memoryview]) -> None:
        if not parts:
            if not member.isdir():
                raise UnsafeArchive(f"layer entry {member.name!r} would replace the root directory")
            self._dirs[parts] = self._meta(member, parts)
            return
        kind = member.type
        if parts[-1].startswith(WHITEOUT):
            self._whiteout(parts)
        elif kind in DEVICE_TYPES:
            self.skipped_devices.append("/".join(parts))
        elif kind == HARDLINK:
            self._hardlink(member, parts)
        else:
            dir_fd = self._tree.directory(parts[:-1], create=True)
            assert dir_fd is not None
            self._mark_upper(parts)
            if self._linked:
                self._linked.discard("/".join(parts))
            if kind in REGULAR_TYPES:
                self._file(dir_fd, parts, member, data)
            elif member.isdir():
                self._directory(dir_fd, parts, member)
            elif member.issym():
                self._symlink(dir_fd, parts, member)
            elif member.isfifo():
                self._fifo(dir_fd, parts, member)
            else:
                raise UnsafeArchive(f"layer entry {'/'.join(parts)!r} has unsupported tar type "
                                    f"{member.type!r}")

    def _directory(self, dir_fd: int, parts: tuple[str, ...], member: TarEntry) -> None:
        try:
            os.mkdir(parts[-1], 0o700, dir_fd=dir_fd)
            self._tree.made(parts, self._tree.group)
        except FileExistsError:
            info = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
            if not stat.S_ISDIR(info.st_mode):  # a directory over a directory merges
                self._remove(dir_fd, parts)
                os.mkdir(parts[-1], 0o700, dir_fd=dir_fd)
                self._tree.made(parts, self._tree.group)
        self._dirs[parts] = self._meta(member, parts)

    def _file(self, dir_fd: int, parts: tuple[str, ...], member: TarEntry,
              data: Iterable[bytes | memoryview]) -> None:
        mode = member.mode & 0o7777
        if mode & 0o6000 and not self.keep_setuid:
            mode &= ~0o6000
            self.dropped_setuid.append("/".join(parts))
        group = self._tree.group
        fd = self._create(dir_fd, parts, mode)
        try:
            for chunk in data:
                self._write(fd, chunk)
            if self.chown:
                uid, gid = _owner(member)
                if uid != self._uid or gid != group:  # else it has them already
                    os.fchown(fd, uid, gid)  # before chmod: chown clears setuid bits
            if mode & self._unset_bits or group == UNKNOWN:
                os.fchmod(fd, mode)
            mtime = _mtime_ns(member)
            os.utime(fd, ns=(mtime, mtime))
        finally:
            os.close(fd)

    def _create(self, dir_fd: int, parts: tuple[str, ...], mode: int) -> int:
        """A new, empty file with its final permission bits (special bits only once its owner
        is set); whatever had its name (even a symlink) is removed first."""
        try:
            return os.open(parts[-1], _NEW_FILE, mode & 0o777, dir_fd=dir_fd)
        except FileExistsError:  # O_EXCL: nothing is ever written through an existing entry
            self._remove(dir_fd, parts)
            return os.open(parts[-1], _NEW_FILE, mode & 0o777, dir_fd=dir_fd)

    def _count(self, size: int) -> None:
        self.bytes_written += size
        limit = self.max_bytes
        if limit is not None and self.written_before + self.bytes_written > limit:
            # sparse files expand past the stream, so the stream's cap alone is not enough
            what = "the layers write" if self.written_before else "layer writes"
            raise UnsafeArchive(f"{what} more than {limit} bytes; if the image is genuine, raise "
                                "the cap ([publisher] max_expanded_bytes on a server)")
        if self.ratio_cap is not None:
            self.ratio_cap.check(self.bytes_written)

    def _write(self, fd: int, chunk: bytes | memoryview) -> None:
        size = len(chunk)
        self._count(size)
        done = os.write(fd, chunk)
        if done < size:
            view = memoryview(chunk)
            while done < size:
                done += os.write(fd, view[done:])

    def _symlink(self, dir_fd: int, parts: tuple[str, ...], member: TarEntry) -> None:
        target = member.linkname
        if "\x00" in target or not target or len(os.fsencode(target)) >= MAX_PATH_BYTES:
            raise UnsafeArchive(f"symlink {'/'.join(parts)!r} has an invalid target {target[:64]!r}")
        try:  # created as is, absolute or not: it resolves inside the container, never here
            os.symlink(target, parts[-1], dir_fd=dir_fd)
        except FileExistsError:
            self._remove(dir_fd, parts)
            os.symlink(target, parts[-1], dir_fd=dir_fd)
        if self.chown:
            uid, gid = _owner(member)
            if uid != self._uid or gid != self._tree.group:
                os.chown(parts[-1], uid, gid, dir_fd=dir_fd, follow_symlinks=False)
        mtime = _mtime_ns(member)
        os.utime(parts[-1], ns=(mtime, mtime), dir_fd=dir_fd, follow_symlinks=False)

    def _fifo(self, dir_fd: int, parts: tuple[str, ...], member: TarEntry) -> None:
        try:
            os.mkfifo(parts[-1], 0o600, dir_fd=dir_fd)
        except FileExistsError:
            self._remove(dir_fd, parts)
            os.mkfifo(parts[-1], 0o600, dir_fd=dir_fd)
        meta = self._meta(member, parts)
        if self.chown:
            os.chown(parts[-1], meta.uid, meta.gid, dir_fd=dir_fd, follow_symlinks=False)
        os.chmod(parts[-1], meta.mode, dir_fd=dir_fd)  # just made: a fifo, not a symlink
        os.utime(parts[-1], ns=(meta.mtime_ns, meta.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)

    def _hardlink(self, member: TarEntry, parts: tuple[str, ...]) -> None:
        path = "/".join(parts)
        source = entry_parts(member.linkname, f"hardlink {path!r} to", rooted=True)
        if source == parts:
            return  # a file linked to itself is already there
        found = self._tree.directory(source[:-1], create=False) if source else None
        if found is None:
            raise UnsafeArchive(f"hardlink {path!r} points at {member.linkname!r}, which is not in the image")
        source_dir = os.dup(found)  # the cache may close `found` when it opens the link's directory
        try:
            self._check_link_source(source_dir, source, path)
            dir_fd = self._tree.directory(parts[:-1], create=True)
            assert dir_fd is not None
            self._mark_upper(parts)
            origin = "/".join(source)
            if origin in self._upper and origin not in self._linked:
                self._linked.discard(path)  # a file this layer made: its inode is new
            else:
                self._linked.add(path)  # perhaps a lower layer's inode
            try:
                os.link(source[-1], parts[-1], src_dir_fd=source_dir, dst_dir_fd=dir_fd,
                        follow_symlinks=False)
            except FileExistsError:
                self._remove(dir_fd, parts)
                os.link(source[-1], parts[-1], src_dir_fd=source_dir, dst_dir_fd=dir_fd,
                        follow_symlinks=False)
        finally:
            os.close(source_dir)

    @staticmethod
    def _check_link_source(source_dir: int, source: tuple[str, ...], path: str) -> None:
        try:
            info = os.stat(source[-1], dir_fd=source_dir, follow_symlinks=False)
        except FileNotFoundError:
            info = None
        if info is None or not stat.S_ISREG(info.st_mode):
            raise UnsafeArchive(f"hardlink {path!r} points at {'/'.join(source)!r}, which is not a "
                                "regular file in the image")

    # -- whiteouts --

    def _whiteout(self, parts: tuple[str, ...]) -> None:
        name = parts[-1]
        if name != OPAQUE and name.startswith(WHITEOUT + WHITEOUT):
            return  # other .wh..wh. names are AUFS bookkeeping, not whiteouts
        hidden = name[len(WHITEOUT):]
        if name != OPAQUE and hidden in ("", ".", ".."):
            raise UnsafeArchive(f"whiteout {'/'.join(parts)!r} names {hidden!r}")
        dir_fd = self._tree.directory(parts[:-1], create=False)
        if dir_fd is None:
            return  # nothing below to hide
        if name == OPAQUE:
            self._clear_lower(dir_fd, parts[:-1])
        else:
            self._remove_lower(dir_fd, (*parts[:-1], hidden))

    def _clear_lower(self, dir_fd: int, parts: tuple[str, ...]) -> None:
        """Remove what lower layers left in a directory; this layer's entries stay."""
        for name in os.listdir(dir_fd):
            self._remove_lower(dir_fd, (*parts, name))

    def _remove_lower(self, dir_fd: int, parts: tuple[str, ...]) -> None:
        if "/".join(parts) not in self._upper:
            self._remove(dir_fd, parts)
            return
        try:
            info = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return  # this layer wrote it, then replaced what it was in
        if not stat.S_ISDIR(info.st_mode):
            return  # a file or symlink this layer wrote: nothing lower inside it
        child = self._tree.open_child(dir_fd, parts, create=False)
        if child is not None:
            try:
                self._clear_lower(child[0], parts)
            finally:
                os.close(child[0])

    def _remove(self, dir_fd: int, parts: tuple[str, ...]) -> None:
        """Remove parts[-1] from `dir_fd`, a whole tree if a directory, never following symlinks."""
        self._tree.forget(parts)
        if self._remove_tree(dir_fd, parts):
            depth = len(parts)
            for table in (self._dirs, self._tree.touched, self._tree.fresh):
                for key in [key for key in table if key[:depth] == parts]:
                    del table[key]

    def _remove_tree(self, dir_fd: int, parts: tuple[str, ...]) -> bool:
        """Remove an entry, recursively if a directory (then return True)."""
        try:
            os.unlink(parts[-1], dir_fd=dir_fd)
            return False
        except FileNotFoundError:
            return False
        except IsADirectoryError:
            pass
        child = self._tree.open_child(dir_fd, parts, create=False)
        if child is not None:
            try:
                for name in os.listdir(child[0]):
                    self._remove_tree(child[0], (*parts, name))
            finally:
                os.close(child[0])
        os.rmdir(parts[-1], dir_fd=dir_fd)
        return True

    # -- metadata --

    def _mark_upper(self, parts: tuple[str, ...]) -> None:
        # paths as strings: a tuple would keep every component of every entry alive
        upper = self._upper
        path = "/".join(parts)
        if path in upper:
            return
        upper.add(path)
        for depth in range(len(parts) - 1, 0, -1):
            key = "/".join(parts[:depth])
            if key in upper:
                return  # its ancestors are in already
            upper.add(key)

    def _meta(self, member: TarEntry, parts: tuple[str, ...]) -> _Meta:
        mode = member.mode & 0o7777
        if member.isreg() and mode & 0o6000 and not self.keep_setuid:
            mode &= ~0o6000
            self.dropped_setuid.append("/".join(parts))
        uid, gid = _owner(member) if self.chown else (-1, -1)
        return _Meta(mode, uid, gid, _mtime_ns(member))

    def _set_meta(self, fd: int, meta: _Meta) -> None:
        if self.chown:
            os.fchown(fd, meta.uid, meta.gid)  # before chmod: chown clears setuid bits
        os.fchmod(fd, meta.mode)
        os.utime(fd, ns=(meta.mtime_ns, meta.mtime_ns))


def _owner(member: TarEntry) -> tuple[int, int]:
    if not (0 <= member.uid <= _MAX_ID and 0 <= member.gid <= _MAX_ID):
        raise UnsafeArchive(f"layer entry {member.name!r} has an invalid owner {member.uid}:{member.gid}")
    return member.uid, member.gid


def ensure_directory(root: Path, parts: tuple[str, ...], mode: int = 0o755) -> bool | None:
    """Make directory `parts` below `root` (missing parents 0o755), never through a symlink.

    True when it was made (with `mode`), False when it was a directory already, None when a
    symlink or a non-directory is on its path: the image decided, and it is left as it is.
    Used to add mount points to a finished tree with the unpacker's no-follow walk.
    """
    root_fd = os.open(root, _DIR_FLAGS)
    tree = _Tree(root_fd, rootless=False)
    try:
        parent = tree.directory(parts[:-1], create=True)
        assert parent is not None
        try:
            os.mkdir(parts[-1], 0o700, dir_fd=parent)
        except FileExistsError:
            info = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            return False if stat.S_ISDIR(info.st_mode) else None
        made = os.open(parts[-1], _DIR_FLAGS, dir_fd=parent)
        try:
            os.fchmod(made, mode)  # mkdir's mode is masked by the umask
        finally:
            os.close(made)
        return True
    except _Blocked:
        return None
    finally:
        tree.close()
        os.close(root_fd)
