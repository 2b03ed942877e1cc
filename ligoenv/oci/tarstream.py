"""A streaming tar reader for layers: headers parsed straight from the decompressed chunks.

It reads what `tarfile` reads in stream mode (ustar, GNU and pax headers, GNU long names and
links, pax global headers, the GNU sparse formats old, 0.0, 0.1 and 1.0) at a fraction of its
cost per header: one struct unpack, a checksum from zlib's adler32, and file data handed out as
views of the chunks it arrived in instead of copies. Extension headers are capped in size and in
number per entry. Malformed input raises `tarfile.ReadError`.
"""

from __future__ import annotations

import re
import struct
import tarfile
from collections.abc import Callable, Iterable, Iterator
from zlib import adler32

from ligoenv.oci.errors import UnsafeArchive

BLOCK = 512
MAX_HEADER_BYTES = 1 << 20  # one pax or GNU long-name header
MAX_HEADER_CHAIN = 8  # extension headers in front of one entry
ZEROS = bytes(1 << 20)  # what a sparse file's holes are filled from

# name mode uid gid size mtime chksum type linkname magic version uname gname major minor prefix
_HEADER = struct.Struct("100s8s8s8s12s12s8sc100s6s2s32s32s8s8s155s12x")
_SIGNED = struct.Struct("148b8x356b")
REGULAR_TYPES = frozenset((b"0", b"\0", b"7", b"S"))  # as tarfile's: a contiguous file is one too
DEVICE_TYPES = frozenset((b"3", b"4"))
HARDLINK = b"1"
_NO_DATA = frozenset((b"1", b"2", b"3", b"4", b"5", b"6"))  # types whose size field is not data
_PAX = frozenset((b"x", b"g", b"X"))
_GNU_LONG = frozenset((b"L", b"K"))
_POSIX_MAGIC = b"ustar\0"
_ENCODING, _ERRORS = "utf-8", "surrogateescape"
_IN_DATA: list[tuple[int, int]] = []  # marks a GNU sparse 1.0 map, which heads the data


class TarEntry:
    """One member of the archive: what the writer needs of a header, extensions applied."""

    __slots__ = ("gid", "linkname", "mode", "mtime", "name", "size", "sparse", "type", "uid")

    def __init__(self, name: str, type: bytes, mode: int, uid: int, gid: int,
                 mtime: float, size: int, linkname: str) -> None:
        self.name = name
        self.type = type
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtime = mtime
        self.size = size  # of the file's contents (a sparse file's holes included)
        self.linkname = linkname
        self.sparse: list[tuple[int, int]] | None = None  # (offset, length) of stored regions

    def isreg(self) -> bool:
        return self.type in REGULAR_TYPES

    def isdir(self) -> bool:
        return self.type == b"5"

    def issym(self) -> bool:
        return self.type == b"2"

    def islnk(self) -> bool:
        return self.type == b"1"

    def isfifo(self) -> bool:
        return self.type == b"6"

    def isdev(self) -> bool:
        return self.type in DEVICE_TYPES


class TarReader:
    """Entries of a tar stream, in order; `next()` skips what the caller left of the last one.

    `chunk()` returns the next piece of the uncompressed stream (any size), b"" at its end.
    """

    def __init__(self, chunk: Callable[[], bytes]) -> None:
        self._chunk = chunk
        self._buf = b""
        self._pos = 0
        self._skip = 0  # bytes of the current entry (data and padding) not yet consumed
        self._global: dict[str, str] = {}  # pax global header records
        self.started = False  # a header block was read: the stream is not empty

    # -- headers --

    def next(self) -> TarEntry | None:
        """The next entry, None at the end of the archive."""
        if self._skip:
            if self._pos + self._skip <= len(self._buf):  # the usual padding: in this chunk
                self._pos += self._skip
            else:
                self._discard(self._skip)
            self._skip = 0
        overrides: dict[str, object] = {}
        chain = 0
        while True:
            buf, pos = self._header()
            if buf is None:
                return None
            fields = _HEADER.unpack_from(buf, pos)
            kind = fields[7]
            if kind in _PAX or kind in _GNU_LONG:
                chain += 1
                if chain > MAX_HEADER_CHAIN:
                    raise UnsafeArchive(f"more than {MAX_HEADER_CHAIN} tar extension headers for one entry")
                size = _number(fields[4])
                if size > MAX_HEADER_BYTES or size < 0:
                    raise UnsafeArchive(f"tar extension header of {size} bytes (limit {MAX_HEADER_BYTES})")
                data = self._read(size)
                self._discard(-size % BLOCK)
                if kind in _GNU_LONG:
                    key = "path" if kind == b"L" else "linkpath"
                    overrides.setdefault(key, _text(data))
                else:
                    records = _pax_records(data)
                    if kind == b"g":
                        self._global.update(records)
                    else:
                        _pax_overrides(records, data, overrides)
                continue
            return self._entry(fields, buf, pos, overrides)

    def _header(self) -> tuple[bytes, int] | tuple[None, int]:
        """A checked header block as (buffer, offset); (None, 0) at the end of the archive."""
        buf, pos = self._buf, self._pos
        if pos + BLOCK <= len(buf):
            self._pos = pos + BLOCK
        else:
            buf, pos = self._read(BLOCK, partial=True), 0
            if len(buf) < BLOCK:
                if not buf:
                    return None, 0  # an empty layer, or an archive without its end blocks
                raise tarfile.ReadError("unexpected end of data")
        view = memoryview(buf)
        total = (adler32(view[pos:pos + 256]) & 0xFFFF) + (adler32(view[pos + 256:pos + BLOCK]) & 0xFFFF) - 2
        self.started = True
        if total == 0:
            return None, 0  # a zero block ends the archive
        stored = buf[pos + 148:pos + 156]
        try:
            checksum = _number(stored)
        except tarfile.ReadError:
            raise tarfile.ReadError("invalid header") from None
        unsigned = total - sum(stored) + 256
        if checksum != unsigned and checksum != 256 + sum(_SIGNED.unpack_from(buf, pos)):
            raise tarfile.ReadError("bad checksum")
        return buf, pos

    def _entry(self, fields: tuple[bytes, ...], buf: bytes, pos: int,
               overrides: dict[str, object]) -> TarEntry:
        kind = fields[7]
        name = _text(fields[0])
        if fields[9] == _POSIX_MAGIC and fields[15][:1] != b"\0":  # ustar splits long names
            name = _text(fields[15]) + "/" + name
        entry = TarEntry(name, kind, _number(fields[1]), _number(fields[2]), _number(fields[3]),
                         _number(fields[5]), _number(fields[4]), "")
        if kind == b"1" or kind == b"2":
            entry.linkname = _text(fields[8])
        elif kind == b"\0" and name.endswith("/"):
            entry.type = b"5"  # old V7 tar wrote directories as files with a trailing slash
        real = self._old_gnu_sparse(entry, buf, pos) if kind == b"S" else None
        if self._global:
            _apply(entry, _pax_overrides(self._global, b"", {}, sparse=False))
        if overrides:
            _apply(entry, overrides)
            real = overrides.get("realsize", real)  # type: ignore[assignment]
        stored = 0 if entry.type in _NO_DATA else entry.size
        self._skip = stored + (-stored % BLOCK)
        if entry.sparse is _IN_DATA:
            entry.sparse = self._sparse_map_from_data()
        if real is not None:
            entry.size = real
        return entry

    def _old_gnu_sparse(self, entry: TarEntry, buf: bytes, pos: int) -> int:
        """Read the old GNU sparse map (in the header, then in extension blocks); the real size."""
        regions = _sparse_structs(buf, pos + 386, 4)
        extended = buf[pos + 482]
        real = _number(buf[pos + 483:pos + 495])
        while extended:
            block = self._read(BLOCK)
            regions += _sparse_structs(block, 0, 21)
            extended = block[504]
            if len(regions) > MAX_HEADER_BYTES // 24:
                raise UnsafeArchive(f"sparse map of {entry.name!r} has more than "
                                    f"{MAX_HEADER_BYTES // 24} regions")
        entry.sparse = regions
        return real

    def _sparse_map_from_data(self) -> list[tuple[int, int]]:
        """GNU sparse 1.0: decimal numbers, one a line, at the start of the data, block-padded."""
        text = b""
        while True:
            if self._skip < BLOCK:
                raise tarfile.ReadError("sparse map longer than the entry")
            text += self._read(BLOCK)
            self._skip -= BLOCK
            lines = text.split(b"\n")
            if len(text) > MAX_HEADER_BYTES:
                raise UnsafeArchive(f"sparse map of more than {MAX_HEADER_BYTES} bytes")
            try:
                count = int(lines[0]) if len(lines) > 1 else -1
                if 0 <= count <= len(lines) // 2 - 1:  # the count and 2 * count complete lines
                    numbers = [int(n) for n in lines[1:1 + 2 * count]]
                    return list(zip(numbers[::2], numbers[1::2], strict=True))
            except ValueError:
                raise tarfile.ReadError("invalid sparse map") from None

    # -- data --

    def data(self, entry: TarEntry) -> Iterable[bytes | memoryview]:
        """The contents of the regular file `entry`, in pieces: a tuple of one view when it came
        whole in one chunk (the view keeps that chunk alive), else an iterator whose views are
        valid until the next call."""
        if entry.sparse is not None:
            return self._sparse_data(entry)
        size = entry.size
        if not size:
            return ()  # nothing to write: an empty file (conda has thousands) takes no write()
        buf, pos = self._buf, self._pos
        if pos + size <= len(buf):  # the common case: one view, no copy
            self._pos = pos + size
            self._skip -= size
            return (memoryview(buf)[pos:pos + size],)
        return self._pieces(size)

    def _pieces(self, size: int) -> Iterator[bytes | memoryview]:
        while size:
            piece = self._take(size)
            size -= len(piece)
            self._skip -= len(piece)
            yield piece

    def _sparse_data(self, entry: TarEntry) -> Iterator[bytes | memoryview]:
        assert entry.sparse is not None
        at = 0
        for offset, length in entry.sparse:
            if offset < at or length < 0 or offset + length > entry.size:
                raise tarfile.ReadError(f"invalid sparse map for {entry.name!r}")
            yield from _zeros(offset - at)
            if length > self._skip:
                raise tarfile.ReadError(f"sparse data of {entry.name!r} is longer than the entry")
            yield from self._pieces(length)
            at = offset + length
        yield from _zeros(entry.size - at)

    # -- the stream --

    def _take(self, most: int) -> bytes | memoryview:
        """Up to `most` bytes (at least one) from the stream, as a view where possible."""
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            buf, pos = self._refill(), 0
        end = min(len(buf), pos + most)
        self._pos = end
        return memoryview(buf)[pos:end]

    def _refill(self) -> bytes:
        self._buf = buf = self._chunk()
        self._pos = 0
        if not buf:
            raise tarfile.ReadError("unexpected end of data")
        return buf

    def _read(self, size: int, partial: bool = False) -> bytes:
        """Exactly `size` bytes as one bytes object (fewer only if `partial` and the stream ends)."""
        buf, pos = self._buf, self._pos
        if pos + size <= len(buf):
            self._pos = pos + size
            return buf[pos:pos + size]
        pieces = [buf[pos:]]
        left = size - (len(buf) - pos)
        while left:
            chunk = self._chunk()
            if not chunk:
                self._buf, self._pos = b"", 0
                if partial:
                    return b"".join(pieces)
                raise tarfile.ReadError("unexpected end of data")
            pieces.append(chunk[:left])
            self._buf, self._pos = chunk, min(left, len(chunk))
            left -= self._pos
        return b"".join(pieces)

    def _discard(self, size: int) -> None:
        while size:
            size -= len(self._take(size))


def _zeros(count: int) -> Iterator[bytes | memoryview]:
    view = memoryview(ZEROS)
    while count > 0:
        piece = view[:count]
        count -= len(piece)
        yield piece


def _text(field: bytes) -> str:
    end = field.find(b"\0")
    return (field if end < 0 else field[:end]).decode(_ENCODING, _ERRORS)


def _number(field: bytes) -> int:
    """A numeric header field: octal digits up to a NUL, or GNU base-256 (as tarfile.nti)."""
    if field[-1] == 0:  # the usual form: digits and one NUL
        try:
            return int(field[:-1], 8)
        except ValueError:
            pass
    if field[:1] in (b"\x80", b"\xff"):
        value = int.from_bytes(field[1:], "big")
        return value - 256 ** (len(field) - 1) if field[0] == 0xFF else value
    digits = field.split(b"\0", 1)[0].strip()
    if not digits:
        return 0
    try:
        return int(digits, 8)
    except ValueError:
        raise tarfile.ReadError("invalid header") from None


def _sparse_structs(buf: bytes, pos: int, count: int) -> list[tuple[int, int]]:
    regions = []
    for at in range(pos, pos + 24 * count, 24):
        offset, length = _number(buf[at:at + 12]), _number(buf[at + 12:at + 24])
        if offset or length:
            regions.append((offset, length))
    return regions


def _pax_records(data: bytes) -> dict[str, str]:
    """`LEN KEY=VALUE\\n` records; values decoded as tarfile does (UTF-8, raw bytes kept)."""
    records: dict[str, str] = {}
    pos, size = 0, len(data)
    while pos < size:
        space = data.find(b" ", pos, pos + 21)
        try:
            end = pos + int(data[pos:space]) if space > pos else -1
        except ValueError:
            end = -1
        equals = data.find(b"=", space, end)
        if not (space < equals < end <= size and data[end - 1] == 0x0A):
            if not data[pos:].strip(b"\0"):
                break  # padding after the records
            raise tarfile.ReadError("invalid pax header")
        key = data[space + 1:equals].decode(_ENCODING, _ERRORS)
        records[key] = data[equals + 1:end - 1].decode(_ENCODING, _ERRORS)
        pos = end
    return records


def _pax_overrides(records: dict[str, str], raw: bytes, into: dict[str, object], *,
                   sparse: bool = True) -> dict[str, object]:
    """Entry fields set by pax records (as tarfile applies them), added where not yet set.

    `size` is what the entry stores; a sparse file's map goes in `sparse` (or _IN_DATA) and the
    size of the file it makes in `realsize`.
    """
    found: dict[str, object] = {}
    for key, value in records.items():
        if key == "path":
            found["path"] = value.rstrip("/")
        elif key == "linkpath":
            found["linkpath"] = value
        elif key in ("uid", "gid", "size"):
            found[key] = _pax_int(value)
        elif key == "mtime":
            found[key] = _pax_float(value)
    regions = _pax_sparse(records, raw) if sparse else None
    if regions is not None:
        found["sparse"] = regions
        found["realsize"] = _pax_int(records.get("GNU.sparse.realsize", records.get("GNU.sparse.size", "0")))
        if "GNU.sparse.name" in records:
            found["path"] = records["GNU.sparse.name"]
    for field, setting in found.items():
        into.setdefault(field, setting)
    return into


def _pax_sparse(records: dict[str, str], raw: bytes) -> list[tuple[int, int]] | None:
    if "GNU.sparse.map" in records:  # version 0.1
        numbers = [_pax_int(n) for n in records["GNU.sparse.map"].split(",") if n]
        return list(zip(numbers[::2], numbers[1::2], strict=False))
    if "GNU.sparse.size" in records:  # version 0.0: the keys repeat, so read them from the raw text
        offsets = [int(n) for n in re.findall(rb"\d+ GNU\.sparse\.offset=(\d+)\n", raw)]
        lengths = [int(n) for n in re.findall(rb"\d+ GNU\.sparse\.numbytes=(\d+)\n", raw)]
        return list(zip(offsets, lengths, strict=False))
    if records.get("GNU.sparse.major") == "1" and records.get("GNU.sparse.minor") == "0":
        return _IN_DATA  # version 1.0: the map is at the start of the data
    return None


def _pax_int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 0  # as tarfile


def _pax_float(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return 0.0


def _apply(entry: TarEntry, overrides: dict[str, object]) -> None:
    for key, value in overrides.items():
        if key == "path":
            entry.name = value  # type: ignore[assignment]
        elif key == "linkpath":
            entry.linkname = value  # type: ignore[assignment]
        elif key != "realsize":
            setattr(entry, key, value)  # uid, gid, size, mtime, sparse
