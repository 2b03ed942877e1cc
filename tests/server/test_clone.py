"""The hard-link clone of a published tree: the same tree as `cp --archive --link` makes, sharing
every file's inode and no directory, and a clear error when it cannot be made."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ligoenv.oci.rootfs import MAX_DEPTH
from ligoenv.store.errors import PublishError
from ligoenv_server.publishers.clone import HARDLINK, clone_method, clone_tree

ROOT = os.geteuid() == 0


def facts(root: Path) -> dict[str, Any]:
    """Per path: mode, owner, mtime, content or link target, extended attributes with their
    values; and which inode each non-directory is. (Not a directory's atime: reading the tree
    changes it.)"""
    out: dict[str, Any] = {}
    for directory, dirs, files, _fd in os.fwalk(root):
        for name in [".", *dirs, *files]:
            path = Path(directory) / name
            info = path.lstat()
            kind = stat.S_IFMT(info.st_mode)
            body = path.read_bytes() if stat.S_ISREG(kind) else \
                os.readlink(path) if stat.S_ISLNK(kind) else None
            xattrs = {key: os.getxattr(path, key, follow_symlinks=False)
                      for key in sorted(os.listxattr(path, follow_symlinks=False))}
            inode = None if stat.S_ISDIR(kind) else info.st_ino
            out[str(path.relative_to(root))] = (info.st_mode, info.st_uid, info.st_gid,
                                                info.st_mtime_ns, body, xattrs, inode)
    return out


def rich_tree(root: Path) -> Path:
    """Every kind of entry an unpacked image holds, with the attributes a clone must keep."""
    root.mkdir()
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/python3").write_bytes(b"\x7fELF python")
    os.link(root / "usr/bin/python3", root / "usr/bin/python3.11")  # a hard-link group
    (root / "usr/bin/tool").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "usr/bin/tool", 0o4755)
    os.symlink("python3", root / "usr/bin/python")
    os.symlink("/nowhere/at/all", root / "usr/bin/dangling")
    os.symlink("/usr", root / "usr-link")  # to a directory: linked, never followed
    (root / "empty").mkdir()
    os.mkfifo(root / "fifo")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "socket"))
    locked = root / "locked"
    locked.mkdir()
    (locked / "inside").write_text("x")
    for name, mode in (("tmp", 0o1777), ("shared", 0o2755), ("readonly", 0o555), ("private", 0o700)):
        (root / name).mkdir()
        (root / name / "f").write_text(name)
        os.chmod(root / name, mode)
    os.chmod(locked, 0o000)
    os.setxattr(root / "usr", "user.origin", b"layer 1")
    if ROOT:
        os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.chown(root / "usr/bin", 1000, 1001)
        os.chown(root / "shared", 12, 34)
        os.chmod(root / "shared", 0o2755)  # chown cleared setgid
        os.setxattr(root / "tmp", "trusted.note", b"only root sets this")
    directories = sorted(p for p in root.rglob("*") if p.is_dir() and not p.is_symlink())
    for number, directory in enumerate(directories):
        os.utime(directory, ns=(1_600_000_000_000_000_000 + number, 1_500_000_000_123_456_789 + number))
    os.utime(root, ns=(1_600_000_000_000_000_000, 1_400_000_000_000_000_000))
    return root


def test_the_clone_matches_cp_archive_link_and_shares_every_file(tmp_path: Path) -> None:
    source = rich_tree(tmp_path / "source")
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    subprocess.run(["cp", "--archive", "--link", "--no-target-directory", source, theirs], check=True)
    before = facts(source)
    clone_tree(source, ours, HARDLINK)
    assert facts(ours) == facts(theirs) == before
    # no directory is shared: a layer applied to the clone changes its own directories only
    source_dirs = {os.stat(d).st_ino for d, _, _ in os.walk(source)}
    assert source_dirs.isdisjoint(os.stat(d).st_ino for d, _, _ in os.walk(ours))


def test_a_tree_as_deep_as_the_unpacker_allows_is_cloned(tmp_path: Path) -> None:
    source = tmp_path / "source"
    deep = source.joinpath(*["d"] * (MAX_DEPTH - 1))
    deep.mkdir(parents=True)
    (deep / "bottom").write_text("found")
    clone_tree(source, tmp_path / "clone")
    assert (tmp_path / "clone").joinpath(*["d"] * (MAX_DEPTH - 1), "bottom").read_text() == "found"
    assert facts(tmp_path / "clone") == facts(source)


def test_an_existing_target_is_refused_and_left_alone(tmp_path: Path) -> None:
    source = rich_tree(tmp_path / "source")
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep").write_text("mine")
    with pytest.raises(PublishError, match=r"cannot clone .*source to .*target: File exists"):
        clone_tree(source, target)
    assert [p.name for p in target.iterdir()] == ["keep"]


@pytest.mark.parametrize("make", [lambda p: None, lambda p: p.write_text("a file"),
                                  lambda p: os.symlink("/", p)],
                         ids=["missing", "a file", "a symlink"])
def test_a_source_that_is_not_a_directory_is_a_clear_error(tmp_path: Path, make: Any) -> None:
    source = tmp_path / "source"
    make(source)
    with pytest.raises(PublishError, match=r"cannot clone .*source to .*target") as failed:
        clone_tree(source, tmp_path / "target")
    assert failed.value.temporary
    assert not (tmp_path / "target").exists()


def test_cloning_across_file_systems_fails_with_the_reason(tmp_path: Path) -> None:
    """Hard links cannot cross file systems: the error says so instead of copying."""
    if os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("/dev/shm is on the same file system as the test directory")
    source = rich_tree(tmp_path / "source")
    target = Path("/dev/shm") / f"ligoenv-clone-test-{os.getpid()}"
    try:
        with pytest.raises(PublishError, match="Invalid cross-device link"):
            clone_tree(source, target)
    finally:
        subprocess.run(["rm", "-rf", str(target)], check=True)


def test_hard_links_are_the_method_where_reflinks_are_missing(tmp_path: Path) -> None:
    """ext4 and tmpfs, where tests run, have no reflinks."""
    assert clone_method(tmp_path) == HARDLINK
    assert list(tmp_path.iterdir()) == []  # the probe cleans up
