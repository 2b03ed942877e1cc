"""Builders for hostile layers: archives that try to escape, overwrite or exhaust the target.

Each builder returns an uncompressed tar (bytes) unless it says otherwise. `sentinel` is a
directory next to the unpack target that no layer may touch.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import zstandard

from testbed.ocibuild import Entry, tar_bytes

MiB = 1 << 20


def escape_dotdot() -> bytes:
    return tar_bytes([Entry("../escape", data=b"out")])


def escape_dotdot_nested() -> bytes:
    return tar_bytes([Entry("a", "dir", mode=0o755), Entry("a/../../escape", data=b"out")])


def absolute_path() -> bytes:
    """An absolute entry name: refused, never written at /abs/path nor guessed to be abs/path."""
    return tar_bytes([Entry("/abs/path", data=b"in")])


def symlink_write_through(link_target: str) -> bytes:
    """`a -> link_target`, then a file `a/passwd` that would be written through the link."""
    return tar_bytes([Entry("a", "symlink", target=link_target), Entry("a/passwd", data=b"owned")])


def symlink_dir_through(link_target: str) -> bytes:
    """`a -> link_target`, then a directory `a/sub` that would be created through the link."""
    return tar_bytes([Entry("a", "symlink", target=link_target), Entry("a/sub", "dir", mode=0o755)])


def symlink_then_replace(link_target: str) -> bytes:
    """`x -> link_target`, then a regular file `x`: the file replaces the link, never writes through."""
    return tar_bytes([Entry("x", "symlink", target=link_target), Entry("x", data=b"replaced")])


def hardlink_outside(link_target: str = "../sentinel/secret") -> bytes:
    return tar_bytes([Entry("h", "hardlink", target=link_target)])


def hardlink_through_symlink(sentinel: Path) -> bytes:
    """`a -> sentinel`, then a hardlink to `a/secret`, which is the sentinel's file."""
    return tar_bytes([Entry("a", "symlink", target=str(sentinel)),
                      Entry("h", "hardlink", target="a/secret")])


def hardlink_to_symlink(sentinel: Path) -> bytes:
    """A hardlink to a symlink that points outside: only regular files may be linked."""
    return tar_bytes([Entry("s", "symlink", target=str(sentinel / "secret")),
                      Entry("h", "hardlink", target="s")])


def whiteout(name: str) -> bytes:
    """A whiteout entry with the given (possibly hostile) name, e.g. `.wh...`."""
    return tar_bytes([Entry(name)])


def whiteout_through_symlink(sentinel: Path) -> bytes:
    """`a -> sentinel`, then `a/.wh.secret`: would delete the sentinel's file."""
    return tar_bytes([Entry("a", "symlink", target=str(sentinel)), Entry("a/.wh.secret")])


def opaque_through_symlink(sentinel: Path) -> bytes:
    """`a -> sentinel`, then `a/.wh..wh..opq`: would empty the sentinel."""
    return tar_bytes([Entry("a", "symlink", target=str(sentinel)), Entry("a/.wh..wh..opq")])


def opaque_through_relative_symlink() -> bytes:
    """`a -> ../sentinel` (relative to the target root), then `a/.wh..wh..opq`."""
    return tar_bytes([Entry("a", "symlink", target="../sentinel"), Entry("a/.wh..wh..opq")])


def devices() -> bytes:
    return tar_bytes([Entry("dev", "dir", mode=0o755), Entry("dev/sda", "blockdev", mode=0o660),
                      Entry("dev/mem", "chardev", mode=0o640), Entry("dev/ok", data=b"fine")])


def setuid_file() -> bytes:
    return tar_bytes([Entry("bin", "dir", mode=0o755), Entry("bin/su", data=b"#!", mode=0o4755),
                      Entry("bin/wall", data=b"#!", mode=0o2755)])


def nul_in_name() -> bytes:
    return _pax_entry({"path": "a\x00b"})


def long_pax_header(size: int = 2 * MiB) -> bytes:
    """A pax header larger than any real one, that tarfile would read into memory."""
    return _pax_entry({"comment": "x" * size})


def long_name(length: int = 5000) -> bytes:
    return _pax_entry({"path": "d/" * (length // 2)})


def long_component() -> bytes:
    return _pax_entry({"path": "x" * 300})


def deep_path(depth: int = 300) -> bytes:
    return _pax_entry({"path": "/".join(["d"] * depth)})


def header_chain(count: int = 50) -> bytes:
    """A member preceded by many GNU long-name headers, each chaining to the next."""
    buffer = io.BytesIO()
    for _ in range(count):
        info = tarfile.TarInfo("././@LongLink")
        info.type = tarfile.GNUTYPE_LONGNAME
        name = b"n" * 10 + b"\0"
        info.size = len(name)
        buffer.write(info.tobuf(format=tarfile.USTAR_FORMAT))
        buffer.write(name + b"\0" * (512 - len(name)))
    buffer.write(tar_bytes([Entry("f", data=b"x")]))
    return buffer.getvalue()


def file_under_file() -> bytes:
    """A file, then an entry below it as if it were a directory."""
    return tar_bytes([Entry("f", data=b"x"), Entry("f/g", data=b"y")])


def root_replaced() -> bytes:
    return tar_bytes([Entry("./", "symlink", target="/")])


def garbage() -> bytes:
    return b"this is not a tar archive" * 100


def sparse_file(real_size: int, data: bytes = b"D" * 512) -> bytes:
    """An old-GNU sparse file: `data` at its end, a hole of zeros before it.

    Large `real_size` makes a bomb that expands on disk, not in the stream.
    """
    info = tarfile.TarInfo("sparse")
    info.type = tarfile.GNUTYPE_SPARSE
    info.size = len(data)
    header = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    header[386:398] = _tar_number(real_size - len(data))  # the first entry of the sparse map
    header[398:410] = _tar_number(len(data))
    header[483:495] = _tar_number(real_size)
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    padding = -len(data) % 512
    return bytes(header) + data + b"\0" * (padding + 1024)


def _tar_number(value: int) -> bytes:
    """A 12-byte tar number field: octal, or GNU base-256 when too large for 11 octal digits."""
    if value < 8**11:
        return b"%011o\0" % value
    return b"\x80" + value.to_bytes(11, "big")


def gzip_bomb(expanded: int = 200 * MiB) -> bytes:
    """A gzip layer of `expanded` zeros in one file, a few hundred kB compressed."""
    zeros = gzip.compress(b"\0" * MiB, compresslevel=9, mtime=0)
    return gzip.compress(_big_file_header(expanded), mtime=0) + zeros * (expanded // MiB)


def zstd_bomb(expanded: int = 200 * MiB) -> bytes:
    compressor = zstandard.ZstdCompressor(level=19)
    zeros = compressor.compress(b"\0" * MiB)
    return compressor.compress(_big_file_header(expanded)) + zeros * (expanded // MiB)


def _big_file_header(size: int) -> bytes:
    info = tarfile.TarInfo("bomb")
    info.size = size
    return info.tobuf(format=tarfile.PAX_FORMAT)


def _pax_entry(headers: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("placeholder")
        info.pax_headers = headers
        tar.addfile(info, io.BytesIO(b""))
    return buffer.getvalue()


# Every hostile layer that must be refused with UnsafeArchive, by name; builders take the sentinel.
REJECTED: dict[str, Callable[[Path], bytes]] = {
    "dotdot": lambda _: escape_dotdot(),
    "dotdot-nested": lambda _: escape_dotdot_nested(),
    "absolute-name": lambda _: absolute_path(),
    "symlink-abs-write-through": lambda _: symlink_write_through("/etc"),
    "symlink-sentinel-write-through": lambda sentinel: symlink_write_through(str(sentinel)),
    "symlink-relative-write-through": lambda _: symlink_write_through("../../x"),
    "symlink-relative-sentinel": lambda _: symlink_write_through("../sentinel"),
    "symlink-dir-through": lambda sentinel: symlink_dir_through(str(sentinel)),
    "hardlink-dotdot": lambda _: hardlink_outside("../sentinel/secret"),
    "hardlink-absolute-missing": lambda sentinel: hardlink_outside(str(sentinel / "secret")),
    "hardlink-through-symlink": hardlink_through_symlink,
    "hardlink-to-symlink": hardlink_to_symlink,
    "whiteout-dotdot": lambda _: whiteout(".wh..."),
    "whiteout-dot": lambda _: whiteout(".wh.."),
    "whiteout-empty": lambda _: whiteout(".wh."),
    "whiteout-nested-dotdot": lambda _: whiteout("a/.wh..."),
    "whiteout-through-symlink": whiteout_through_symlink,
    "opaque-through-symlink": opaque_through_symlink,
    "opaque-through-relative-symlink": lambda _: opaque_through_relative_symlink(),
    "nul-in-name": lambda _: nul_in_name(),
    "long-pax-header": lambda _: long_pax_header(),
    "long-name": lambda _: long_name(),
    "long-component": lambda _: long_component(),
    "deep-path": lambda _: deep_path(),
    "header-chain": lambda _: header_chain(),
    "file-under-file": lambda _: file_under_file(),
    "root-replaced": lambda _: root_replaced(),
    "garbage": lambda _: garbage(),
}
