"""TarReader against tarfile: the same entries from archives of GNU tar in every format (sparse
files included) and of tarfile itself, read in large chunks and in chunks that split headers."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ligoenv.oci.errors import UnsafeArchive
from ligoenv.oci.tarstream import TarReader
from testbed import hostile
from testbed.ocibuild import Entry, tar_bytes


def chunks_of(blob: bytes, size: int) -> Callable[[], bytes]:
    stream = io.BytesIO(blob)
    return lambda: stream.read(size)


def ours(blob: bytes, chunk: int) -> list[tuple[Any, ...]]:
    reader = TarReader(chunks_of(blob, chunk))
    found = []
    while (entry := reader.next()) is not None:
        body = hashlib.sha256(b"".join(reader.data(entry))).hexdigest() if entry.isreg() else None
        found.append((entry.name.rstrip("/"), entry.type, entry.mode, entry.uid, entry.gid,
                      entry.mtime, entry.size if entry.isreg() else 0, entry.linkname, body))
    return found


def theirs(blob: bytes) -> list[tuple[Any, ...]]:
    found = []
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r|") as tar:  # type: ignore[call-overload]
        for member in tar:
            body = None
            if member.isreg():
                body = hashlib.sha256(tar.extractfile(member).read()).hexdigest()
            found.append((member.name.rstrip("/"), member.type, member.mode, member.uid, member.gid,
                          member.mtime, member.size if member.isreg() else 0, member.linkname, body))
    return found


def same_as_tarfile(blob: bytes) -> list[tuple[Any, ...]]:
    expected = theirs(blob)
    assert ours(blob, 4 << 20) == expected
    assert ours(blob, 700) == expected  # headers and pax records split across chunks
    return expected


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tree with what real layers hold: long names and links, hard links, a fifo, sparse files."""
    root = tmp_path_factory.mktemp("source")
    deep = root / "d" / ("x" * 120) / "sub"
    deep.mkdir(parents=True)
    (deep / "f").write_bytes(b"deep")
    (root / "d" / ("n" * 110)).write_bytes(b"y" * 150)
    (root / "a").write_bytes(b"hi\n")
    os.link(root / "a", root / "hard")
    os.symlink("a", root / "sym")
    os.symlink("t" * 200, root / "longlink")
    os.mkfifo(root / "fifo")
    (root / "caf\u00e9").write_bytes(b"utf-8 name")
    with (root / "sparse").open("wb") as sparse:
        sparse.truncate(5 << 20)
        for offset, data in ((1_000_000, b"DATA"), (4_000_000, b"END")):
            sparse.seek(offset)
            sparse.write(data)
    with (root / "holes-only").open("wb") as holes:
        holes.truncate(3 << 20)
    return root


GNU_TAR = [["--format=gnu"], ["--format=oldgnu"], ["--format=posix"], ["--format=ustar"],
           ["--format=v7"], ["--format=gnu", "--sparse"], ["--format=oldgnu", "--sparse"],
           *[["--format=posix", "--sparse", f"--sparse-version={v}"] for v in ("0.0", "0.1", "1.0")]]


@pytest.mark.parametrize("options", GNU_TAR, ids=" ".join)
def test_gnu_tar_archives_read_as_tarfile_reads_them(source: Path, options: list[str]) -> None:
    made = subprocess.run(["tar", *options, "-cf", "-", "-C", str(source), "."], capture_output=True)
    limited = "--format=ustar" in options or "--format=v7" in options  # they leave long names out
    assert made.returncode == (2 if limited else 0), made.stderr
    entries = same_as_tarfile(made.stdout)
    if not limited:
        assert {name.split("/")[-1] for name, *_ in entries} >= {"sparse", "n" * 110, "f", "caf\u00e9"}


@pytest.mark.parametrize("form", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_tarfile_archives_read_the_same(form: int) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=form) as tar:
        for name, kind, extra in [("p/" * 40 + "file", tarfile.REGTYPE, b"data" * 300),
                                  ("dir/", tarfile.DIRTYPE, b""), ("link", tarfile.SYMTYPE, b""),
                                  ("big-owner", tarfile.REGTYPE, b"x")]:
            info = tarfile.TarInfo(name)
            info.type, info.size, info.mode, info.mtime = kind, len(extra), 0o640, 1_700_000_000
            if name == "link":
                info.linkname = "l" * 150 if form != tarfile.USTAR_FORMAT else "target"
            if name == "big-owner" and form != tarfile.USTAR_FORMAT:
                info.uid = info.gid = 2**21 + 5  # base-256 in GNU headers, a pax record otherwise
            if form == tarfile.PAX_FORMAT and name == "dir/":
                info.pax_headers = {"mtime": "1700000000.25", "comment": "ignored"}
            tar.addfile(info, io.BytesIO(extra))
    entries = same_as_tarfile(buffer.getvalue())
    assert len(entries) == 4


def test_global_pax_headers_apply_to_what_follows() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"uid": "77", "mtime": "5"}) as tar:
        for name in ("one", "two"):
            tar.addfile(tarfile.TarInfo(name), io.BytesIO(b""))
    entries = same_as_tarfile(buffer.getvalue())
    assert [(uid, mtime) for _name, _type, _mode, uid, _gid, mtime, *_ in entries] == [(77, 5.0), (77, 5.0)]


def test_hostile_headers_read_as_tarfile_reads_them() -> None:
    """Names that the writer refuses must reach it exactly as tarfile would hand them over."""
    for blob in (hostile.nul_in_name(), hostile.long_name(), hostile.escape_dotdot(), hostile.absolute_path(),
                 hostile.sparse_file(3 << 20), hostile.devices(), hostile.setuid_file()):
        same_as_tarfile(blob)


def test_empty_streams_and_missing_end_blocks() -> None:
    assert ours(b"", 512) == []
    assert ours(b"\0" * 1024, 512) == []
    whole = tar_bytes([Entry("f", data=b"x")])
    assert ours(whole[:1024], 100) == ours(whole, 100)  # without the end-of-archive blocks


def test_an_empty_file_has_no_pieces_to_write() -> None:
    """An empty file costs no write(): its data is no pieces at all, not one empty piece."""
    reader = TarReader(chunks_of(tar_bytes([Entry("empty"), Entry("next", data=b"x")]), 4096))
    empty = reader.next()
    assert empty is not None and empty.size == 0 and list(reader.data(empty)) == []
    following = reader.next()
    assert following is not None and following.name == "next"
    assert b"".join(reader.data(following)) == b"x"


@pytest.mark.parametrize("damage,message", [
    (lambda blob: blob[:148] + b"0000000\0" + blob[156:], "bad checksum"),
    (lambda blob: blob[:300], "unexpected end of data"),
    (lambda blob: blob[:512 + 2], "unexpected end of data"),
])
def test_damaged_archives_are_read_errors(damage: Callable[[bytes], bytes], message: str) -> None:
    blob = damage(tar_bytes([Entry("f", data=b"x" * 600)]))
    with pytest.raises(tarfile.ReadError, match=message):
        ours(blob, 4096)


def test_malformed_pax_records_are_read_errors() -> None:
    blob = bytearray(hostile._pax_entry({"path": "name"}))
    at = blob.index(b" path=")
    blob[at - 2:at] = b"99"  # a record length past the end of the header
    blob[148:156] = b" " * 8
    blob[148:156] = b"%06o\0 " % sum(blob[:512])
    with pytest.raises(tarfile.ReadError, match="invalid pax header"):
        TarReader(chunks_of(bytes(blob), 4096)).next()


def test_extension_headers_are_capped() -> None:
    with pytest.raises(UnsafeArchive, match="tar extension header of"):
        TarReader(chunks_of(hostile.long_pax_header(), 4096)).next()
    with pytest.raises(UnsafeArchive, match="extension headers for one entry"):
        TarReader(chunks_of(hostile.header_chain(), 4096)).next()
