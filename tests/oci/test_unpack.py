"""apply_layer: real tar/gzip/zstd layers onto real directories, hostile archives included."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import stat
import struct
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ligoenv.oci.digest import Digest, VerifyingReader
from ligoenv.oci.errors import DigestMismatch, LigoenvError, UnsafeArchive
from ligoenv.oci.manifest import layer_compression
from ligoenv.oci.rootfs import process_umask
from ligoenv.oci.unpack import UnpackOptions, UnpackReport, apply_layer
from testbed import hostile
from testbed.forked import in_child
from testbed.ocibuild import LAYER_GZIP, LAYER_TAR, LAYER_ZSTD, Entry, Layer, tar_bytes

T0 = 1_600_000_000
IS_ROOT = os.geteuid() == 0


def unpack(target: Path, *layers: bytes | Layer, **options: Any) -> list[UnpackReport]:
    """Apply layers in order; bytes are uncompressed tars."""
    reports = []
    for layer in layers:
        if isinstance(layer, Layer):
            blob, compression = layer.blob, layer_compression(layer.media_type)
        else:
            blob, compression = layer, "none"
        reports.append(apply_layer(io.BytesIO(blob), compression, target, UnpackOptions(**options)))
    return reports


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Everything observable under root (types, modes, mtimes, contents, link targets)."""
    found: dict[str, tuple[Any, ...]] = {}
    for path in sorted([root, *root.rglob("*")]):
        info = path.lstat()
        body = path.read_bytes() if path.is_file() and not path.is_symlink() else None
        link = os.readlink(path) if path.is_symlink() else None
        found[str(path.relative_to(root))] = (info.st_mode, info.st_mtime_ns, info.st_uid, body, link)
    return found


@pytest.fixture()
def target(tmp_path: Path) -> Path:
    return tmp_path / "target"


@pytest.fixture()
def sentinel(tmp_path: Path) -> Path:
    """A directory next to the target that no layer may touch."""
    root = tmp_path / "sentinel"
    (root / "sub").mkdir(parents=True)
    (root / "secret").write_bytes(b"do not touch")
    (root / "sub" / "file").write_bytes(b"nor this")
    return root


# --- formats and digests ---------------------------------------------------------------------

BASIC = [
    Entry("./", "dir", mode=0o755, mtime=T0),
    Entry("etc", "dir", mode=0o755, mtime=T0 + 1),
    Entry("etc/conf", data=b"key=value\n", mode=0o640, uid=1000, gid=1001, mtime=T0 + 2),
    Entry("etc/empty", mode=0o600),
    Entry("etc/big", data=bytes(range(256)) * 12_000, mode=0o644),  # crosses copy chunks
    Entry("etc/hard", "hardlink", target="etc/conf"),
    Entry("etc/abs", "symlink", target="/etc/conf", uid=1000, gid=1001, mtime=T0 + 3),
    Entry("etc/rel", "symlink", target="../etc/conf"),
    Entry("etc/pipe", "fifo", mode=0o620),
    Entry("implied/parents/file", data=b"i"),
]


@pytest.mark.parametrize("media_type", [LAYER_TAR, LAYER_GZIP, LAYER_ZSTD])
def test_every_kind_of_entry_in_every_compression(target: Path, media_type: str) -> None:
    layer = Layer.from_entries(BASIC, media_type)
    [report] = unpack(target, layer)
    assert report.diff_id == layer.diff_id
    assert report.bytes_written == len(b"key=value\n") + 256 * 12_000 + 1
    conf = target / "etc/conf"
    assert conf.read_bytes() == b"key=value\n" and mode(conf) == 0o640
    assert conf.stat().st_mtime_ns == (T0 + 2) * 10**9
    assert (target / "etc/big").read_bytes() == bytes(range(256)) * 12_000
    assert (target / "etc/empty").read_bytes() == b"" and mode(target / "etc/empty") == 0o600
    assert (target / "etc/hard").stat().st_ino == conf.stat().st_ino
    assert os.readlink(target / "etc/abs") == "/etc/conf"
    assert (target / "etc/abs").lstat().st_mtime_ns == (T0 + 3) * 10**9
    assert os.readlink(target / "etc/rel") == "../etc/conf"
    assert stat.S_ISFIFO((target / "etc/pipe").lstat().st_mode) and mode(target / "etc/pipe") == 0o620
    assert (target / "implied/parents/file").read_bytes() == b"i"
    assert mode(target / "implied") == 0o755
    # directories get their mtimes after their contents are written
    assert (target / "etc").stat().st_mtime_ns == (T0 + 1) * 10**9
    assert target.stat().st_mtime_ns == T0 * 10**9


@pytest.mark.skipif(not IS_ROOT, reason="keeping owners needs root")
def test_owners_are_kept_as_root(target: Path) -> None:
    unpack(target, Layer.from_entries([*BASIC, Entry("owned", "dir", uid=7, gid=8, mode=0o750)]))
    conf, link = (target / "etc/conf").stat(), (target / "etc/abs").lstat()
    assert (conf.st_uid, conf.st_gid) == (1000, 1001)
    assert (link.st_uid, link.st_gid) == (1000, 1001)
    assert ((target / "owned").stat().st_uid, (target / "owned").stat().st_gid) == (7, 8)


def test_without_preserve_owner_files_belong_to_the_current_user(target: Path) -> None:
    unpack(target, Layer.from_entries(BASIC), preserve_owner=False)
    for path in (target / "etc/conf", target / "etc/abs", target / "etc/pipe"):
        info = path.lstat()
        assert (info.st_uid, info.st_gid) == (os.geteuid(), os.getegid())


def test_the_blob_is_read_to_its_end_so_its_digest_is_checked(target: Path) -> None:
    layer = Layer.from_entries(BASIC)
    reader = VerifyingReader(io.BytesIO(layer.blob), layer.digest, len(layer.blob), "layer")
    apply_layer(reader, "gzip", target, expected_diff_id=layer.diff_id)  # type: ignore[arg-type]
    assert reader.verified

    wrong = Digest.of_bytes(b"something else")
    reader = VerifyingReader(io.BytesIO(layer.blob), wrong, len(layer.blob), "layer")
    with pytest.raises(DigestMismatch):
        apply_layer(reader, "gzip", target / "again")  # type: ignore[arg-type]


def test_a_wrong_diff_id_is_refused(target: Path) -> None:
    layer = Layer.from_entries(BASIC)
    with pytest.raises(DigestMismatch, match="diff_id"):
        apply_layer(io.BytesIO(layer.blob), "gzip", target, expected_diff_id=Digest.of_bytes(b"x"))
    sha512 = Digest.of_bytes(tar_bytes(BASIC), "sha512")
    report = apply_layer(io.BytesIO(layer.blob), "gzip", target / "again", expected_diff_id=sha512)
    assert report.diff_id == sha512


def test_a_corrupt_download_is_a_digest_mismatch_not_a_hostile_archive(target: Path) -> None:
    layer = Layer.from_entries(BASIC)
    corrupt = bytearray(layer.blob)
    corrupt[len(corrupt) // 2: len(corrupt) // 2 + 64] = b"\xff" * 64
    reader = VerifyingReader(io.BytesIO(bytes(corrupt)), layer.digest, len(corrupt), "layer")
    with pytest.raises(DigestMismatch):
        apply_layer(reader, "gzip", target)  # type: ignore[arg-type]
    with pytest.raises(UnsafeArchive, match="not a valid gzip-compressed tar"):
        apply_layer(io.BytesIO(bytes(corrupt)), "gzip", target / "again")


def test_truncated_and_mislabelled_layers_are_refused(target: Path) -> None:
    layer = Layer.from_entries(BASIC)
    with pytest.raises(UnsafeArchive, match="not a valid gzip-compressed tar"):
        apply_layer(io.BytesIO(layer.blob[:-20]), "gzip", target)
    with pytest.raises(UnsafeArchive, match="not a valid zstd-compressed tar"):
        apply_layer(io.BytesIO(layer.blob), "zstd", target)
    with pytest.raises(UnsafeArchive, match="unknown layer compression"):
        apply_layer(io.BytesIO(layer.blob), "bzip2", target)


def test_empty_layers(target: Path) -> None:
    empty_tar = tar_bytes([])
    reports = unpack(target, b"", empty_tar, Layer.from_tar(b"\0" * 1024),
                     Layer.from_tar(empty_tar, LAYER_ZSTD))
    assert [r.diff_id for r in reports] == [Digest.of_bytes(b""), Digest.of_bytes(empty_tar),
                                            Digest.of_bytes(b"\0" * 1024), Digest.of_bytes(empty_tar)]
    assert list(target.iterdir()) == []


def test_multi_member_gzip_is_one_stream(target: Path) -> None:
    tar = tar_bytes(BASIC)
    blob = gzip.compress(tar[:5000], mtime=0) + gzip.compress(tar[5000:], mtime=0)
    report = apply_layer(io.BytesIO(blob), "gzip", target)
    assert report.diff_id == Digest.of_bytes(tar)
    assert (target / "etc/big").stat().st_size == 256 * 12_000


# --- whiteouts and replacement ---------------------------------------------------------------

def test_whiteouts_remove_files_and_trees_from_lower_layers(target: Path) -> None:
    unpack(target, tar_bytes([Entry("a/f", data=b"1"), Entry("a/keep", data=b"k"),
                              Entry("d/x/y/z", data=b"deep"), Entry("ro", "dir", mode=0o555),
                              Entry("ro/inner", "dir", mode=0o500), Entry("ro/inner/f", mode=0o400)]))
    unpack(target, tar_bytes([Entry("a/.wh.f"), Entry(".wh.d"), Entry(".wh.ro"),
                              Entry("a/.wh.missing"), Entry("nowhere/.wh.x"),
                              Entry("nodir/.wh..wh..opq"), Entry("a/.wh..wh.plnk")]))
    assert sorted(p.name for p in target.iterdir()) == ["a"]  # no parent made for a whiteout
    assert sorted(p.name for p in (target / "a").iterdir()) == ["keep"]


def test_opaque_directory_hides_lower_entries_only(target: Path) -> None:
    unpack(target, tar_bytes([Entry("o", "dir", mode=0o755), Entry("o/old", data=b"o"),
                              Entry("o/sub", "dir", mode=0o755), Entry("o/sub/old2", data=b"o"),
                              Entry("o/kept", "dir", mode=0o755), Entry("o/kept/old3", data=b"o"),
                              Entry("other/stays", data=b"s")]))
    # the marker may come before or after this layer's own entries: those always stay
    unpack(target, tar_bytes([Entry("o/new", data=b"n"), Entry("o/kept/new3", data=b"n"),
                              Entry("o/.wh..wh..opq"), Entry("o/sub/new2", data=b"n")]))
    found = sorted(str(p.relative_to(target)) for p in target.rglob("*"))
    assert found == ["o", "o/kept", "o/kept/new3", "o/new", "o/sub", "o/sub/new2",
                     "other", "other/stays"]


def test_a_whiteout_never_removes_what_its_own_layer_wrote(target: Path) -> None:
    unpack(target, tar_bytes([Entry("s/keep", data=b"old"), Entry("s/lower", data=b"l")]))
    unpack(target, tar_bytes([Entry("s/.wh.keep"), Entry("s/keep", data=b"new"),
                              Entry("s/mine", data=b"m"), Entry("s/.wh.mine"), Entry("s/.wh.lower")]))
    assert {p.name: p.read_bytes() for p in (target / "s").iterdir()} == {"keep": b"new", "mine": b"m"}


def test_files_directories_and_links_replace_each_other(target: Path, sentinel: Path) -> None:
    unpack(target, tar_bytes([Entry("a", "dir", mode=0o755), Entry("a/f", data=b"x"),
                              Entry("b", data=b"file"), Entry("c", "symlink", target=str(sentinel)),
                              Entry("d", data=b"file"), Entry("e", "symlink", target="../sentinel/secret")]))
    unpack(target, tar_bytes([Entry("a", data=b"now a file", mode=0o600),
                              Entry("b", "dir", mode=0o701), Entry("b/g", data=b"g"),
                              Entry("c", "dir", mode=0o755), Entry("c/inside", data=b"in"),
                              Entry("d", "symlink", target="/etc/passwd"),
                              Entry("e", data=b"replaced the link")]))
    assert (target / "a").read_bytes() == b"now a file" and mode(target / "a") == 0o600
    assert mode(target / "b") == 0o701 and (target / "b/g").read_bytes() == b"g"
    assert not (target / "c").is_symlink() and (target / "c/inside").read_bytes() == b"in"
    assert os.readlink(target / "d") == "/etc/passwd"
    assert not (target / "e").is_symlink() and (target / "e").read_bytes() == b"replaced the link"
    assert sorted(p.name for p in sentinel.iterdir()) == ["secret", "sub"]
    assert (sentinel / "secret").read_bytes() == b"do not touch"


def test_a_directory_over_a_directory_merges_and_takes_the_new_metadata(target: Path) -> None:
    unpack(target, tar_bytes([Entry("d", "dir", mode=0o755, mtime=T0), Entry("d/f", data=b"f")]))
    unpack(target, tar_bytes([Entry("d", "dir", mode=0o700, mtime=T0 + 10), Entry("d/g", data=b"g")]))
    assert sorted(p.name for p in (target / "d").iterdir()) == ["f", "g"]
    assert mode(target / "d") == 0o700 and (target / "d").stat().st_mtime_ns == (T0 + 10) * 10**9


def test_lower_directories_keep_their_mtime_when_a_layer_writes_into_them(target: Path) -> None:
    unpack(target, tar_bytes([Entry("./", "dir", mode=0o755, mtime=T0), Entry("d", "dir", mtime=T0),
                              Entry("d/old", data=b"o")]))
    unpack(target, tar_bytes([Entry("d/new", data=b"n"), Entry("d/.wh.old"), Entry("top", data=b"t")]))
    assert (target / "d").stat().st_mtime_ns == T0 * 10**9
    assert target.stat().st_mtime_ns == T0 * 10**9


def test_hardlinks_to_lower_layers_and_over_existing_entries(target: Path) -> None:
    unpack(target, tar_bytes([Entry("bin/python3.11", data=b"elf", mode=0o755),
                              Entry("bin/python", data=b"old")]))
    unpack(target, tar_bytes([Entry("bin/python", "hardlink", target="bin/python3.11"),
                              Entry("usr/bin/python", "hardlink", target="/bin/python3.11"),
                              Entry("bin/python3.11", "hardlink", target="bin/python3.11")]))
    inode = (target / "bin/python3.11").stat().st_ino
    assert (target / "bin/python").stat().st_ino == inode == (target / "usr/bin/python").stat().st_ino
    assert (target / "bin/python3.11").read_bytes() == b"elf"


def test_changed_entries_are_made_anew_so_hard_links_from_other_trees_keep_their_inode(
        tmp_path: Path, target: Path) -> None:
    """A tree cloned with hard links (layer chains) shares its files' inodes with the tree it
    came from: a layer changes the clone by replacing entries, never by writing through them."""
    other = tmp_path / "other"
    other.mkdir()
    for name in ("content", "mode", "owner", "symlink", "dir", "gone", "relinked", "source"):
        (other / name).write_bytes(b"shared " + name.encode())
        (other / name).chmod(0o644)
        os.utime(other / name, ns=(T0 * 10**9, T0 * 10**9))
    target.mkdir()
    for path in other.iterdir():
        os.link(path, target / path.name)
    before = snapshot(other)
    unpack(target, tar_bytes([
        Entry("content", data=b"new", mode=0o644, mtime=T0 + 5),
        Entry("mode", data=b"shared mode", mode=0o600, mtime=T0),
        Entry("owner", data=b"shared owner", mode=0o644, uid=1000, gid=1000, mtime=T0),
        Entry("symlink", "symlink", target="content"), Entry("dir", "dir", mode=0o700),
        Entry(".wh.gone"), Entry("relinked", "hardlink", target="content")]))
    assert snapshot(other) == before
    assert all((other / name).stat().st_nlink == 1 for name in ("content", "mode", "relinked"))
    assert (target / "content").read_bytes() == b"new" and mode(target / "mode") == 0o600
    assert (target / "relinked").stat().st_ino == (target / "content").stat().st_ino
    assert (target / "source").stat().st_ino == (other / "source").stat().st_ino  # unchanged: shared


def test_file_modes_are_exact_whatever_the_umask(target: Path) -> None:
    """Files are made with their final permission bits; where the umask would clear some of
    them, they are set again."""
    old = os.umask(0o077)
    process_umask.cache_clear()
    try:
        unpack(target, tar_bytes([Entry("d", "dir", mode=0o775), Entry("d/rw", data=b"r", mode=0o664),
                                  Entry("d/x", data=b"x", mode=0o755), Entry("d/su", data=b"s", mode=0o4755),
                                  Entry("d/ro", data=b"o", mode=0o444)]), keep_setuid=True)
    finally:
        os.umask(old)
        process_umask.cache_clear()
    assert {p.name: mode(p) for p in (target / "d").iterdir()} == {
        "rw": 0o664, "x": 0o755, "su": 0o4755, "ro": 0o444}
    assert mode(target / "d") == 0o775


def test_a_default_acl_in_the_target_does_not_change_the_modes(target: Path) -> None:
    target.mkdir()
    # u::rwx g::r-x o::--- as the kernel stores it: version 2, then (tag, perm, id) entries
    acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, 0xFFFFFFFF)
                                          for tag, perm in ((0x01, 7), (0x04, 5), (0x20, 0)))
    try:
        os.setxattr(target, "system.posix_acl_default", acl)
    except OSError as err:
        pytest.skip(f"no POSIX ACLs here: {err.strerror}")
    unpack(target, tar_bytes([Entry("f", data=b"f", mode=0o644), Entry("d/g", data=b"g", mode=0o755)]))
    assert mode(target / "f") == 0o644 and mode(target / "d/g") == 0o755


@pytest.mark.skipif(not IS_ROOT, reason="keeping owners needs root")
def test_files_in_a_setgid_directory_get_the_group_of_their_entry(target: Path) -> None:
    unpack(target, tar_bytes([Entry("shared", "dir", mode=0o2775, gid=42)]))
    unpack(target, tar_bytes([Entry("shared/mine", data=b"m", gid=0),
                              Entry("shared/theirs", data=b"t", gid=42),
                              Entry("shared/sub/deep", data=b"d", gid=0),
                              Entry("shared/link", "symlink", target="mine", gid=0)]))
    names = ("mine", "theirs", "sub/deep", "link")
    groups = {name: (target / "shared" / name).lstat().st_gid for name in names}
    assert groups == {"mine": 0, "theirs": 42, "sub/deep": 0, "link": 0}


def test_directory_metadata_is_set_after_the_contents_of_the_same_layer(target: Path) -> None:
    unpack(target, tar_bytes([Entry("ro", "dir", mode=0o555, mtime=T0),
                              Entry("ro/sub", "dir", mode=0o500, mtime=T0 + 1),
                              Entry("ro/sub/f", data=b"f", mode=0o400), Entry("ro/g", data=b"g")]))
    assert (mode(target / "ro"), mode(target / "ro/sub")) == (0o555, 0o500)
    assert (target / "ro").stat().st_mtime_ns == T0 * 10**9
    assert (target / "ro/sub").stat().st_mtime_ns == (T0 + 1) * 10**9
    assert (target / "ro/sub/f").read_bytes() == b"f"


# --- modes, devices, owners ------------------------------------------------------------------

def test_setuid_and_setgid_bits_are_dropped_and_reported(target: Path) -> None:
    [report] = unpack(target, hostile.setuid_file())
    assert report.dropped_setuid == ("bin/su", "bin/wall")
    assert mode(target / "bin/su") == 0o755 and mode(target / "bin/wall") == 0o755


def test_setuid_bits_are_kept_on_request_and_directories_keep_setgid_and_sticky(target: Path) -> None:
    dirs = tar_bytes([Entry("tmp", "dir", mode=0o1777), Entry("var/mail", "dir", mode=0o2775)])
    reports = unpack(target, hostile.setuid_file(), dirs, keep_setuid=True)
    assert [r.dropped_setuid for r in reports] == [(), ()]
    assert mode(target / "bin/su") == 0o4755 and mode(target / "bin/wall") == 0o2755
    assert mode(target / "tmp") == 0o1777 and mode(target / "var/mail") == 0o2775


def test_device_nodes_are_skipped_and_reported(target: Path) -> None:
    [report] = unpack(target, hostile.devices())
    assert report.skipped_devices == ("dev/sda", "dev/mem")
    assert sorted(p.name for p in (target / "dev").iterdir()) == ["ok"]


def run_as_nobody(function: Callable[[], Any]) -> Any:
    """Run `function` in a forked child with uid/gid 65534; return its JSON result or raise."""
    return in_child(function, prepare=_become_nobody)


def _become_nobody() -> None:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


@pytest.mark.skipif(not IS_ROOT, reason="switches to the nobody user")
def test_without_root_layers_write_into_read_only_directories_and_modes_come_back() -> None:
    base = Path(tempfile.mkdtemp(prefix="ligoenv-rootless-"))  # pytest's tmp_path is root-only
    try:
        base.chmod(0o755)
        os.chown(base, 65534, 65534)
        lower = tar_bytes([Entry("ro", "dir", mode=0o555), Entry("ro/f", data=b"f", mode=0o444),
                           Entry("ro/sub", "dir", mode=0o500), Entry("ro/sub/x", data=b"x"),
                           Entry("locked", "dir", mode=0o000), Entry("locked/a", data=b"a"),
                           Entry("owned", data=b"o", uid=1000, gid=1000)])
        upper = tar_bytes([Entry("ro/g", data=b"g"), Entry("ro/.wh.f"), Entry("ro/sub/.wh.x"),
                           Entry("ro/sub/y", data=b"y"), Entry("locked/b", data=b"b")])

        def both_layers() -> dict[str, Any]:
            for layer in (lower, upper):
                apply_layer(io.BytesIO(layer), "none", base / "root")
            root = base / "root"
            modes = {name: mode(root / name) for name in ("ro", "ro/sub", "locked")}
            owner = (root / "owned").stat().st_uid
            for name in ("ro", "ro/sub", "locked"):
                (root / name).chmod(0o755)  # to look inside
            names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
            return {"modes": modes, "names": names, "owner": owner}

        result = run_as_nobody(both_layers)
        assert result["modes"] == {"ro": 0o555, "ro/sub": 0o500, "locked": 0o000}
        assert result["names"] == ["locked", "locked/a", "locked/b", "owned", "ro", "ro/g",
                                   "ro/sub", "ro/sub/y"]
        assert result["owner"] == 65534
    finally:
        shutil.rmtree(base)


@pytest.mark.skipif(not IS_ROOT, reason="switches to the nobody user")
def test_a_file_system_error_is_one_line_naming_the_entry() -> None:
    base = Path(tempfile.mkdtemp(prefix="ligoenv-rootless-"))
    try:
        os.chown(base, 65534, 65534)
        layer = tar_bytes([Entry("etc/owned", data=b"o", uid=1000, gid=1000)])

        def keep_owner_without_root() -> None:
            apply_layer(io.BytesIO(layer), "none", base / "root", UnpackOptions(preserve_owner=True))

        with pytest.raises(AssertionError) as failure:
            run_as_nobody(keep_owner_without_root)
        assert str(failure.value) == (f"LigoenvError: cannot unpack 'etc/owned' into {base / 'root'}: "
                                      "Operation not permitted")
    finally:
        shutil.rmtree(base)


# --- hostile archives ------------------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(hostile.REJECTED))
def test_hostile_layers_are_refused_and_nothing_outside_changes(tmp_path: Path, target: Path,
                                                                sentinel: Path, case: str) -> None:
    before, neighbours = snapshot(sentinel), sorted(os.listdir(tmp_path))
    lower = tar_bytes([Entry("etc/passwd", data=b"root"), Entry("x", "dir", mode=0o755)])
    unpack(target, lower)
    with pytest.raises(UnsafeArchive):
        unpack(target, hostile.REJECTED[case](sentinel))
    assert snapshot(sentinel) == before
    assert sorted(os.listdir(tmp_path)) == [*neighbours, "target"]


def test_a_target_that_is_not_a_directory_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(LigoenvError, match=f"cannot unpack into {tmp_path / 'file'}: File exists"):
        unpack(tmp_path / "file", tar_bytes([]))


def test_whiteouts_of_entries_this_layer_replaced_are_harmless(target: Path) -> None:
    unpack(target, tar_bytes([Entry("x/y/old", data=b"o")]))
    unpack(target, tar_bytes([Entry("x/y/z", data=b"z"), Entry("x", data=b"file"), Entry("x", "dir"),
                              Entry("x/.wh.y"), Entry("x/.wh..wh..opq"), Entry("x/new", data=b"n")]))
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == ["x", "x/new"]


def test_a_refusal_names_the_entry_and_the_link(target: Path) -> None:
    with pytest.raises(UnsafeArchive, match="layer entry 'a/passwd' goes through 'a', which is a symlink"):
        unpack(target, hostile.symlink_write_through("/etc"))


def test_defused_layers_stay_inside(tmp_path: Path, target: Path, sentinel: Path) -> None:
    before = snapshot(sentinel)
    unpack(target, hostile.symlink_then_replace(str(sentinel / "secret")),
           tar_bytes([Entry("a", "symlink", target=str(sentinel))]), tar_bytes([Entry(".wh.a")]),
           tar_bytes([Entry("rel", "symlink", target="../sentinel")]), tar_bytes([Entry(".wh.rel")]))
    assert (target / "x").read_bytes() == b"replaced"
    assert sorted(os.listdir(target)) == ["x"]
    assert snapshot(sentinel) == before
    assert sorted(os.listdir(tmp_path)) == ["sentinel", "target"]


@pytest.mark.parametrize("bomb,compression", [(hostile.gzip_bomb, "gzip"), (hostile.zstd_bomb, "zstd")])
def test_decompression_bombs_stop_at_the_cap(target: Path, bomb: Callable[[], bytes],
                                             compression: str) -> None:
    blob = bomb()
    assert len(blob) < 2 * 2**20
    options = UnpackOptions(max_expanded_bytes=10 * 2**20)
    with pytest.raises(UnsafeArchive, match="more than 10485760 bytes"):
        apply_layer(io.BytesIO(blob), compression, target, options)
    assert (target / "bomb").stat().st_size <= 10 * 2**20
    assert [t for t in threading.enumerate() if t.name == "ligoenv-unpack"] == []


def test_sparse_files_are_filled_and_capped(target: Path) -> None:
    [report] = unpack(target, hostile.sparse_file(3 * 2**20))
    assert (target / "sparse").read_bytes() == b"\0" * (3 * 2**20 - 512) + b"D" * 512
    assert report.bytes_written == 3 * 2**20
    with pytest.raises(UnsafeArchive, match="writes more than 10485760 bytes"):
        unpack(target / "bomb", hostile.sparse_file(2**40), max_expanded_bytes=10 * 2**20)


def test_a_sparse_layer_of_absurd_ratio_stops_at_the_ratio_floor(target: Path) -> None:
    blob = gzip.compress(hostile.sparse_file(2**40), mtime=0)
    assert len(blob) < 4096
    with pytest.raises(UnsafeArchive, match=r"more than 1000 times its size.*max_expansion_ratio"):
        apply_layer(io.BytesIO(blob), "gzip", target, UnpackOptions(max_expansion_ratio=1000),
                    compressed_size=len(blob))
    assert (target / "sparse").stat().st_size <= 64 * 2**20 + 2**20


def test_a_stream_of_absurd_ratio_is_refused_and_a_genuine_layer_passes(target: Path) -> None:
    bomb = hostile.zstd_bomb()
    with pytest.raises(UnsafeArchive, match="max_expansion_ratio"):
        apply_layer(io.BytesIO(bomb), "zstd", target, UnpackOptions(max_expansion_ratio=10),
                    compressed_size=len(bomb))
    genuine = tar_bytes([Entry("big", data=os.urandom(2**20) * 80)])
    report = apply_layer(io.BytesIO(genuine), "none", target / "fits",
                         UnpackOptions(max_expansion_ratio=10), compressed_size=len(genuine))
    assert report.expanded_bytes > 64 * 2**20  # past the floor, within the ratio


def test_refusing_early_stops_the_decompressing_thread(target: Path) -> None:
    layer = Layer.from_entries([Entry("../escape"), Entry("big", data=os.urandom(3 * 2**20) * 8)])
    with pytest.raises(UnsafeArchive, match="climbs out"):
        unpack(target, layer)
    assert [t for t in threading.enumerate() if t.name == "ligoenv-unpack"] == []


def test_the_cap_counts_uncompressed_bytes(target: Path) -> None:
    layer = tar_bytes(BASIC)
    with pytest.raises(UnsafeArchive, match="decompression bomb"):
        apply_layer(io.BytesIO(layer), "none", target, UnpackOptions(max_expanded_bytes=len(layer) - 1))
    apply_layer(io.BytesIO(layer), "none", target / "fits", UnpackOptions(max_expanded_bytes=len(layer)))


def test_the_cap_counts_the_earlier_layers_too(target: Path) -> None:
    layer = tar_bytes(BASIC)
    options = UnpackOptions(max_expanded_bytes=2 * len(layer) - 1)
    first = apply_layer(io.BytesIO(layer), "none", target, options)
    assert first.expanded_bytes == first.tar_bytes == len(layer)
    with pytest.raises(UnsafeArchive, match=f"the layers expand to more than {2 * len(layer) - 1} bytes"):
        apply_layer(io.BytesIO(layer), "none", target, options, expanded_before=first.expanded_bytes)


def test_sparse_files_count_against_the_cap_with_the_earlier_layers(target: Path) -> None:
    [report] = unpack(target, hostile.sparse_file(3 * 2**20))
    assert report.expanded_bytes == 3 * 2**20 > report.tar_bytes
    with pytest.raises(UnsafeArchive, match="the layers write more than 4194304 bytes"):
        apply_layer(io.BytesIO(hostile.sparse_file(3 * 2**20)), "none", target / "again",
                    UnpackOptions(max_expanded_bytes=4 * 2**20), expanded_before=report.expanded_bytes)


def test_long_but_legal_names_work(target: Path) -> None:
    name = "/".join(["d" * 100] * 20) + "/" + "f" * 255
    unpack(target, hostile._pax_entry({"path": name}))
    assert (target / name).is_file()


def test_a_layer_lists_what_it_made_but_not_its_hard_links_to_lower_files(target: Path) -> None:
    unpack(target, Layer.from_entries([Entry("bin/bash", data=b"bash"), Entry("etc/gone", data=b"x"),
                                       Entry("etc/kept", data=b"k")]))
    changed: set[str] = set()
    layer = Layer.from_entries([
        Entry("opt/new", data=b"new"),  # its parent is implied
        Entry("bin/sh", "hardlink", target="bin/bash"),  # a lower layer's inode: not listed
        Entry("opt/x", data=b"x", mode=0o666),
        Entry("opt/x-too", "hardlink", target="opt/x"),  # this layer's inode: listed
        Entry("opt/x", "symlink", target="new"),  # the link keeps the new inode
        Entry("etc/.wh.gone"),
        Entry("srv", "dir", mode=0o777),
    ])
    apply_layer(io.BytesIO(layer.blob), layer_compression(layer.media_type), target,
                changed=changed)
    assert changed == {"bin", "opt", "opt/new", "opt/x", "opt/x-too", "srv"}
    assert (target / "opt/x-too").read_bytes() == b"x" and (target / "bin/sh").samefile(target / "bin/bash")
