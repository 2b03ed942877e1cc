"""Complete an unpacked image tree so Apptainer/Singularity and bubblewrap can run it as is.

Adds `.singularity.d/` (see `ligoenv.store.singularityd`: actions, env scripts from the OCI Env, a
runscript from Entrypoint/Cmd, labels) with the root links Apptainer's sandboxes carry,
bind-point directories, empty /etc/hosts and /etc/resolv.conf and a `.cvmfscatalog`.

Every file is written to a new inode (temporary file, then rename), never through an existing
one: a tree may be a hard-linked clone whose files are shared with other trees.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ligoenv.oci.errors import UnsafeArchive
from ligoenv.oci.manifest import ImageConfig
from ligoenv.oci.rootfs import MAX_PATH_BYTES, ensure_directory
from ligoenv.store import singularityd
from ligoenv.store.provenance import PROVENANCE_FILE, Provenance
from ligoenv.store.singularityd import ENV_SCRIPT, LABELS, RUNSCRIPT

__all__ = ["BIND_POINTS", "ENV_SCRIPT", "LABELS", "RUNSCRIPT", "complete_tree", "completion_paths"]

# Where Apptainer can bind host paths without OverlayFS: directories that exist in the image.
# A site replaces this list ([publisher] bind_points); the runtimes' own mount points are
# always added, since a read-only tree without them cannot run at all.
# (S108: paths inside the image, never used on this host)
BIND_POINTS = ("/cvmfs", "/srv", "/hdfs", "/gpfs", "/dev", "/proc", "/sys", "/tmp", "/var/tmp",  # noqa: S108
               "/home")
RUNTIME_MOUNTS = ("/dev", "/proc", "/sys", "/tmp", "/var/tmp", "/home")  # noqa: S108
_STICKY_DIRS = {"/tmp", "/var/tmp"}  # noqa: S108


def normal_bind_point(text: str) -> str:
    """`/gpfs/data/` -> `/gpfs/data`; ValueError in words for what cannot be a mount point."""
    if not text.startswith("/"):
        raise ValueError(f"{text!r} is not an absolute path")
    if "\x00" in text or len(os.fsencode(text)) >= MAX_PATH_BYTES:
        raise ValueError(f"{text[:64]!r} is not a usable path")
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"{text!r} climbs out of the image with '..'")
    if not parts:
        raise ValueError("'/' is the image's root, not a mount point")
    return "/" + "/".join(parts)


def with_runtime_mounts(bind_points: Sequence[str]) -> tuple[str, ...]:
    """The configured bind points, then the runtimes' own mount points they lack."""
    return (*bind_points, *(point for point in RUNTIME_MOUNTS if point not in bind_points))


def complete_tree(tree: Path, config: ImageConfig, *, bind_points: Sequence[str] = BIND_POINTS,
                  provenance: Provenance | None = None) -> tuple[str, ...]:
    """Add what Apptainer/Singularity and bwrap need to `tree`. Running it twice changes nothing.

    Never follows a symlink of the image: a `/home -> /var/home` link stays as it is, and a
    hostile `.singularity.d -> /etc` is replaced rather than written through. `bind_points` are
    absolute paths (see `normal_bind_point`); returns those that are directories in the tree
    (one the image has as a symlink or a file is left alone and not listed). `provenance` goes
    into labels.json and /.ligoenv/provenance.json.
    """
    if not tree.is_dir() or tree.is_symlink():
        raise UnsafeArchive(f"cannot complete {tree}: not a directory")
    made = tuple(point for point in with_runtime_mounts(bind_points) if _bind_point(tree, point))
    labels = provenance.labels() if provenance is not None else None
    for relative, (content, mode) in singularityd.files(config, labels).items():
        _write(tree, relative, content, mode)
    _real_dir(tree, ".singularity.d/libs")  # where `--nv` binds the host's GPU libraries
    for name, target in singularityd.ROOT_LINKS.items():
        _link_if_missing(tree, name, target)
    for name in ("etc/hosts", "etc/resolv.conf"):
        _empty_file_if_missing(tree, name)
    _write(tree, ".cvmfscatalog", "", 0o644)
    if provenance is not None:
        _write(tree, PROVENANCE_FILE, provenance.file_json(made), 0o644)
    return made


def completion_paths(config: ImageConfig, bind_points: Sequence[str] = BIND_POINTS) -> set[str]:
    """Every relative path `complete_tree` may make or replace, with its parent directories:
    what needs sealing after completing a clone of a sealed tree (nothing else was written)."""
    made = [*singularityd.files(config), ".singularity.d/libs", *singularityd.ROOT_LINKS,
            "etc/hosts", "etc/resolv.conf", ".cvmfscatalog", PROVENANCE_FILE,
            *(point.strip("/") for point in with_runtime_mounts(bind_points))]
    paths: set[str] = set()
    for path in made:
        parts = path.split("/")
        paths.update("/".join(parts[:depth]) for depth in range(1, len(parts) + 1))
    return paths


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


def _bind_point(tree: Path, point: str) -> bool:
    """Make a bind-point directory; False when the image has a symlink or file on its path."""
    mode = 0o1777 if point in _STICKY_DIRS else 0o755
    return ensure_directory(tree, tuple(point.strip("/").split("/")), mode) is not None


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
