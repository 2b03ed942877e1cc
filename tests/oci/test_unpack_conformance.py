"""apply_layer against an independent implementation: `umoci unpack --rootless` on the same layout.

Compared: paths, types, permission bits, file contents, symlink targets, hardlink groups and
the mtimes of all but directories. Intentional differences, each pinned by a test below:
- umoci --rootless ignores the tar owners (everything belongs to the caller); as root we keep
  them, so owners are not compared.
- setuid/setgid bits are dropped by default (umoci keeps them): compared without them, and
  exactly with keep_setuid=True.
- device nodes are skipped (umoci --rootless leaves an empty regular file in their place).
- an entry below a symlink is refused (umoci follows the symlink, scoped to the root).
- directory mtimes: a directory keeps the mtime of the last layer that lists it, set after its
  contents. umoci lets whiteouts, opaque markers and implied parent directories change the
  mtime of a directory afterwards (a directory it had already finished, even).
The Debian umoci (0.4.7) cannot read zstd layers: zstd is compared with our own gzip result.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ligoenv.oci.errors import UnsafeArchive
from ligoenv.oci.manifest import layer_compression
from ligoenv.oci.unpack import UnpackOptions, apply_layer
from testbed.ocibuild import LAYER_GZIP, LAYER_TAR, LAYER_ZSTD, Entry, Image, Layer, LayoutWriter
from testbed.trees import frozen_facts

pytestmark = pytest.mark.skipif(shutil.which("umoci") is None, reason="needs umoci")

T = 1_650_000_000

BASE = [
    Entry("./", "dir", mode=0o755, mtime=T),
    Entry("bin", "dir", mode=0o755, mtime=T),
    Entry("bin/sh", data=b"#!shell", mode=0o755, mtime=T),
    Entry("bin/su", data=b"#!su", mode=0o4755, mtime=T),
    Entry("bin/wall", data=b"#!wall", mode=0o2755, mtime=T),
    Entry("bin/bash", "hardlink", target="bin/sh"),
    Entry("etc", "dir", mode=0o755, mtime=T),
    Entry("etc/passwd", data=b"root:x:0:0\n", mode=0o644, mtime=T + 1),
    Entry("etc/shadow", data=b"root:*:\n", mode=0o640, uid=0, gid=42, mtime=T + 1),
    Entry("etc/readonly", data=b"ro", mode=0o444, mtime=T),
    Entry("etc/alternatives", "dir", mode=0o755, mtime=T),
    Entry("etc/alternatives/pager", "symlink", target="/bin/less", mtime=T),
    Entry("etc/alternatives/rel", "symlink", target="../passwd", mtime=T),
    Entry("home", "dir", mode=0o755, mtime=T),
    Entry("home/user", "dir", mode=0o700, uid=1000, gid=1000, mtime=T),
    Entry("home/user/.profile", data=b"export X=1\n", mode=0o600, uid=1000, gid=1000, mtime=T),
    Entry("tmp", "dir", mode=0o1777, mtime=T),
    Entry("var", "dir", mode=0o755, mtime=T),
    Entry("var/mail", "dir", mode=0o2775, mtime=T),
    Entry("var/cache", "dir", mode=0o755, mtime=T),
    Entry("var/cache/old", data=b"old", mtime=T),
    Entry("var/cache/sub", "dir", mode=0o755, mtime=T),
    Entry("var/cache/sub/old2", data=b"old2", mtime=T),
    Entry("var/cache/kept", "dir", mode=0o750, mtime=T),
    Entry("var/cache/kept/old3", data=b"old3", mtime=T),
    Entry("var/lib", "dir", mode=0o755, mtime=T),
    Entry("var/lib/tree", "dir", mode=0o755, mtime=T),
    Entry("var/lib/tree/a", "dir", mode=0o755, mtime=T),
    Entry("var/lib/tree/a/b", data=b"b", mtime=T),
    Entry("var/run", "fifo", mode=0o644, mtime=T),
    Entry("opt", "dir", mode=0o755, mtime=T),
    Entry("opt/was-dir", "dir", mode=0o755, mtime=T),
    Entry("opt/was-dir/inner", data=b"inner", mtime=T),
    Entry("opt/was-file", data=b"file", mtime=T),
    Entry("opt/was-link", "symlink", target="/etc", mtime=T),
    Entry("opt/empty", mtime=T),
    Entry("usr/lib/implied/file", data=b"parents implied", mtime=T),
]

MIDDLE = [
    Entry("etc", "dir", mode=0o750, mtime=T + 100),  # dir over dir: merged, new metadata
    Entry("etc/passwd", data=b"root:x:0:0\nuser:x:1000:1000\n", mode=0o644, mtime=T + 100),
    Entry("etc/.wh.readonly"),
    Entry("bin/.wh.wall"),
    Entry("bin/python3", data=b"\x7fELF" + bytes(range(256)) * 300, mode=0o755, mtime=T + 100),
    Entry("bin/python", "hardlink", target="bin/python3"),
    Entry("bin/sh-link", "hardlink", target="/bin/sh"),  # a hardlink to a lower layer's file
    Entry("var/cache/new", data=b"new, before the marker", mtime=T + 100),
    Entry("var/cache/kept", "dir", mode=0o750, mtime=T + 100),
    Entry("var/cache/kept/new3", data=b"new3", mtime=T + 100),
    Entry("var/cache/.wh..wh..opq"),
    Entry("var/cache/sub/new2", data=b"after the marker", mtime=T + 100),
    Entry("var/lib/.wh.tree"),
    Entry("opt/was-dir", data=b"a file now", mode=0o600, mtime=T + 100),
    Entry("opt/was-file", "dir", mode=0o711, mtime=T + 100),
    Entry("opt/was-file/child", data=b"child", mtime=T + 100),
    Entry("opt/was-link", "dir", mode=0o755, mtime=T + 100),
    Entry("opt/was-link/real", data=b"not in /etc", mtime=T + 100),
    Entry("home/user/.profile", "symlink", target="/etc/skel/.profile", mtime=T + 100),
    Entry("srv/same", "dir", mode=0o755, mtime=T + 100),
    Entry("srv/same/mine", data=b"this layer", mtime=T + 100),
    Entry("srv/same/.wh.mine"),  # a whiteout never hides its own layer's entries
]

TOP = [
    Entry("bin/.wh.python3"),  # the other link to the inode stays
    Entry("etc/passwd", "hardlink", target="bin/python"),
    Entry("usr/lib/implied/.wh..wh..opq"),
    Entry("usr/lib/implied/again", data=b"again", mtime=T + 200),
    Entry("var/mail/.wh.nothing-there"),
    Entry("nowhere/.wh.x"),
]


# A layer on top of BASE, MIDDLE and TOP that changes what they left in every way a layer can:
# applied to a hard-link clone of their tree (a layer chain), it must leave that tree as it was.
REWRITE = [
    Entry("bin/sh", data=b"#!new shell", mode=0o755, mtime=T + 300),  # one name of a link group
    Entry("bin/su", data=b"#!su", mode=0o700, mtime=T),  # the same file, new mode
    Entry("etc/passwd", data=b"root:x:0:0\n", mode=0o600, mtime=T + 300),  # linked to bin/python
    Entry("etc/.wh.shadow"),  # a file deleted
    Entry("var/cache/.wh.kept"),  # a directory deleted
    Entry("srv/same/.wh..wh..opq"),  # a directory emptied
    Entry("opt/was-file", "symlink", target="/srv", mtime=T + 300),  # a directory re-typed
    Entry("opt/empty", "dir", mode=0o700, mtime=T + 300),  # a file re-typed
    Entry("var/run", data=b"was a fifo", mtime=T + 300),  # a fifo re-typed
    Entry("etc/alternatives/pager", "symlink", target="/bin/more", mtime=T + 300),
    Entry("home/user", "dir", mode=0o750, uid=1000, gid=1000, mtime=T + 300),  # chmod a directory
    Entry("opt/bash-too", "hardlink", target="bin/bash"),  # a new name for a parent's file
]


def describe(root: Path, keep_setuid: bool) -> dict[str, Any]:
    """Comparable facts of a tree: per path its type, permissions, content or link, and mtime
    (not for directories)."""
    facts: dict[str, Any] = {}
    inodes: dict[int, list[str]] = {}
    for path in sorted([root, *root.rglob("*")]):
        name = str(path.relative_to(root))
        info = path.lstat()
        bits = stat.S_IMODE(info.st_mode)
        if stat.S_ISREG(info.st_mode) and not keep_setuid:
            bits &= ~0o6000
        kind = stat.S_IFMT(info.st_mode)
        body = path.read_bytes() if stat.S_ISREG(kind) else os.readlink(path) if stat.S_ISLNK(kind) else None
        facts[name] = (kind, oct(bits), body, None if stat.S_ISDIR(kind) else info.st_mtime_ns)
        if stat.S_ISREG(kind):
            inodes.setdefault(info.st_ino, []).append(name)
    facts["hardlink groups"] = sorted(group for group in inodes.values() if len(group) > 1)
    return facts


# Every directory of the image, with the mtime of the last layer that lists it; None for the
# directories no layer lists (made as parents of entries, at the time of unpacking).
DIRECTORY_MTIMES = {
    ".": T, "bin": T, "etc": T + 100, "etc/alternatives": T, "home": T, "home/user": T, "tmp": T,
    "var": T, "var/mail": T, "var/cache": T, "var/cache/kept": T + 100, "var/lib": T, "opt": T,
    "opt/was-file": T + 100, "opt/was-link": T + 100, "srv/same": T + 100,
    "srv": None, "usr": None, "usr/lib": None, "usr/lib/implied": None, "var/cache/sub": None,
}


def umoci_tree(tmp_path: Path, layers: list[Layer]) -> Path:
    LayoutWriter(tmp_path / "layout").add_image(Image(layers), "t")
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{tmp_path / 'layout'}:t", str(bundle)],
                   check=True, capture_output=True, timeout=120)
    return bundle / "rootfs"


def our_tree(target: Path, layers: list[Layer], **options: Any) -> Path:
    for layer in layers:
        apply_layer(io.BytesIO(layer.blob), layer_compression(layer.media_type), target,
                    UnpackOptions(**options), layer.diff_id)
    return target


def image(media_type: str) -> list[Layer]:
    return [Layer.from_entries(entries, media_type) for entries in (BASE, MIDDLE, TOP)]


def rewritten_image(media_type: str = LAYER_GZIP) -> list[Layer]:
    """`image` with REWRITE on top: the layer that changes what its parent chain holds."""
    return [*image(media_type), Layer.from_entries(REWRITE, media_type)]


@pytest.mark.parametrize("media_type", [LAYER_GZIP, LAYER_TAR])
@pytest.mark.parametrize("keep_setuid", [False, True])
def test_same_tree_as_umoci(tmp_path: Path, media_type: str, keep_setuid: bool) -> None:
    layers = image(media_type)
    theirs = describe(umoci_tree(tmp_path, layers), keep_setuid)
    ours = describe(our_tree(tmp_path / "ours", layers, keep_setuid=keep_setuid), keep_setuid)
    assert ours == theirs
    # the layers did what they say (so that agreeing with umoci means something)
    assert ours["opt/was-dir"][2] == b"a file now" and ours["opt/was-link/real"][2] == b"not in /etc"
    assert sorted(name for name in ours if name.startswith("var/cache/")) == [
        "var/cache/kept", "var/cache/kept/new3", "var/cache/new", "var/cache/sub", "var/cache/sub/new2"]
    assert ["bin/bash", "bin/sh", "bin/sh-link"] in ours["hardlink groups"]
    assert ["bin/python", "etc/passwd"] in ours["hardlink groups"]
    assert "srv/same/mine" in ours and "var/lib/tree" not in ours and "nowhere" not in ours
    assert sorted(name for name, fact in ours.items() if fact[0] == stat.S_IFDIR) == sorted(DIRECTORY_MTIMES)
    mtimes = {name: (tmp_path / "ours" / name).stat().st_mtime_ns // 10**9 for name in DIRECTORY_MTIMES}
    assert mtimes == {name: mtime or mtimes[name] for name, mtime in DIRECTORY_MTIMES.items()}


def test_a_layer_applied_to_a_hardlink_clone_matches_umoci_and_leaves_the_parent_alone(
        tmp_path: Path) -> None:
    """A layer chain: the parent tree cloned with hard links, the top layer applied to the clone."""
    *lower, top = rewritten_image()
    parent = our_tree(tmp_path / "parent", lower)
    before = frozen_facts(parent)
    subprocess.run(["cp", "-al", "--", str(parent), str(tmp_path / "child")], check=True, timeout=60)
    child = our_tree(tmp_path / "child", [top])
    assert frozen_facts(parent) == before
    assert describe(child, False) == describe(umoci_tree(tmp_path, [*lower, top]), False)
    ours = describe(child, False)
    assert ours["bin/sh"][2] == b"#!new shell" and ours["bin/bash"][2] == b"#!shell"
    assert ["bin/bash", "bin/sh-link", "opt/bash-too"] in ours["hardlink groups"]
    assert "etc/shadow" not in ours and "var/cache/kept" not in ours and "srv/same/mine" not in ours
    assert ours["opt/was-file"][2] == "/srv" and ours["opt/empty"][0] == stat.S_IFDIR


def test_zstd_layers_give_the_gzip_tree(tmp_path: Path) -> None:
    gzip_tree = describe(our_tree(tmp_path / "gzip", image(LAYER_GZIP)), False)
    zstd_tree = describe(our_tree(tmp_path / "zstd", image(LAYER_ZSTD)), False)
    assert zstd_tree == gzip_tree


@pytest.mark.skipif(os.geteuid() != 0, reason="keeping owners needs root")
def test_owners_differ_from_umoci_rootless_on_purpose(tmp_path: Path) -> None:
    layers = image(LAYER_GZIP)
    theirs, ours = umoci_tree(tmp_path, layers), our_tree(tmp_path / "ours", layers)
    assert (theirs / "home/user").stat().st_uid == os.geteuid()  # rootless: the caller owns all
    assert ((ours / "home/user").stat().st_uid, (ours / "home/user").stat().st_gid) == (1000, 1000)
    assert (ours / "etc/shadow").stat().st_gid == 42


def test_devices_are_skipped_where_umoci_leaves_empty_files(tmp_path: Path) -> None:
    layers = [Layer.from_entries([Entry("dev", "dir", mode=0o755, mtime=T),
                                  Entry("dev/null", "chardev", mode=0o666, mtime=T),
                                  Entry("dev/sda", "blockdev", mode=0o660, mtime=T)])]
    theirs = describe(umoci_tree(tmp_path, layers), False)
    ours = describe(our_tree(tmp_path / "ours", layers), False)
    assert theirs["dev/null"][0] == stat.S_IFREG and theirs["dev/null"][2] == b""
    assert {name: fact for name, fact in theirs.items() if name not in ("dev/null", "dev/sda")} == ours


def test_entries_below_a_symlink_are_refused_where_umoci_follows_it(tmp_path: Path) -> None:
    layers = [Layer.from_entries([Entry("etc", "dir", mode=0o755), Entry("link", "symlink", target="/etc"),
                                  Entry("link/passwd", data=b"through the link")])]
    assert (umoci_tree(tmp_path, layers) / "etc/passwd").read_bytes() == b"through the link"
    with pytest.raises(UnsafeArchive, match="goes through 'link'"):
        our_tree(tmp_path / "ours", layers)


def test_umoci_wrote_what_we_compare(tmp_path: Path) -> None:
    """Guards the comparison itself: umoci's bundle has the rootfs of the image we built."""
    rootfs = umoci_tree(tmp_path, image(LAYER_GZIP))
    config = json.loads((rootfs.parent / "config.json").read_text())
    assert config["root"]["path"] == "rootfs"
    assert (rootfs / "bin/python").read_bytes().startswith(b"\x7fELF")
