"""OCI image layouts as one tar file: written deterministically while verifying, read back verifying.

The writer streams each blob from its source straight into the tar (memory stays flat however
large the layers) and checks it against its digest on the way; entries are sorted and carry
fixed times and owners, so the same content always gives the same bytes. The reader streams
the tar once, keeping each blob only after its content matched the name it is stored under.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ligoenv.errors import ArchiveError, DigestMismatch
from ligoenv.oci.digest import Digest, Readable, VerifyingReader

LAYOUT_FILE = "oci-layout"
LAYOUT_VERSION = b'{"imageLayoutVersion":"1.0.0"}'
INDEX_FILE = "index.json"
BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE
CHUNK = 1 << 20
MAX_SMALL_FILE = 16 << 20  # index.json, lockfile, README: metadata, never large
_BLOB_NAME = re.compile(r"blobs/(sha256|sha512)/([0-9a-f]{64}|[0-9a-f]{128})")

# Opens a verifying stream over one blob; the writer reads it to its end.
BlobOpener = Callable[[], AbstractContextManager[Readable]]
Progress = Callable[[int], None]


@dataclass(frozen=True)
class BlobEntry:
    digest: Digest
    size: int
    open: BlobOpener = field(compare=False)


def blob_name(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.hex}"


def write_layout_tar(path: Path, files: Mapping[str, bytes], blobs: Mapping[Digest, BlobEntry], *,
                     mtime: int, progress: Progress | None = None) -> Digest:
    """Write `files` (index.json and companions) and `blobs` as one tar at `path`, atomically.

    Nothing appears at `path` unless every blob matched its digest and size. Returns the
    sha256 of the whole tar, hashed as it was written.
    """
    entries: dict[str, bytes | BlobEntry] = {LAYOUT_FILE: LAYOUT_VERSION, **files}
    entries.update({blob_name(d): entry for d, entry in blobs.items()})
    directories = sorted({name.rsplit("/", i)[0] for name in entries for i in (1, 2)
                          if name.count("/") >= i})
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            writer = _TarWriter(out, mtime)
            for name in sorted([*entries, *directories]):
                entry = entries.get(name)
                if entry is None:
                    writer.directory(name)
                elif isinstance(entry, bytes):
                    writer.file(name, entry)
                else:
                    writer.blob(name, entry, progress)
            writer.close()
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        return Digest("sha256", writer.hash.hexdigest())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


class _TarWriter:
    """USTAR entries with fixed owner, group and time; content streamed in chunks."""

    def __init__(self, out: BinaryIO, mtime: int) -> None:
        self._file = out
        self.mtime = mtime
        self.hash = hashlib.sha256()
        self.position = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self.hash.update(data)
        self.position += len(data)

    def _header(self, name: str, kind: bytes, size: int, mode: int) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.size, info.mode, info.mtime = kind, size, mode, self.mtime
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self.write(info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict"))

    def directory(self, name: str) -> None:
        self._header(name + "/", tarfile.DIRTYPE, 0, 0o755)

    def file(self, name: str, data: bytes) -> None:
        self._header(name, tarfile.REGTYPE, len(data), 0o644)
        self.write(data)
        self._pad(len(data))

    def blob(self, name: str, entry: BlobEntry, progress: Progress | None) -> None:
        self._header(name, tarfile.REGTYPE, entry.size, 0o644)
        with entry.open() as source:
            reader = VerifyingReader(source, entry.digest, entry.size, f"blob {entry.digest.short}")
            while chunk := reader.read(CHUNK):
                self.write(chunk)
                if progress is not None:
                    progress(len(chunk))
            reader.drain()
        self._pad(entry.size)

    def _pad(self, size: int) -> None:
        if size % BLOCK:
            self.write(bytes(BLOCK - size % BLOCK))

    def close(self) -> None:
        # Two zero blocks end the archive; the record padding is what tar itself writes.
        self.write(bytes(2 * BLOCK))
        position = self.position
        if position % RECORD:
            self.write(bytes(RECORD - position % RECORD))


@dataclass(frozen=True)
class LayoutContents:
    """What a layout tar held: its small files, the blobs kept (digest -> size), its own sha256."""

    files: dict[str, bytes]
    blobs: dict[Digest, int]
    sha256: Digest


class _HashingFile:
    """Hashes everything read through it, so the archive's checksum costs no second read."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.hash.update(data)
        return data

    def finish(self) -> Digest:
        while self.read(CHUNK):
            pass
        return Digest("sha256", self.hash.hexdigest())


# Stores one verified blob: given its digest and a stream of its bytes (read it to the end).
BlobSink = Callable[[Digest, int, VerifyingReader], object]


def read_layout_tar(path: Path, keep_blob: BlobSink) -> LayoutContents:
    """Stream the tar at `path`, handing each blob to `keep_blob` through a verifying reader.

    ArchiveError (one line, naming the entry) for a damaged or altered archive: a blob whose
    content differs from its name, a link or device entry, a missing layout file.
    """
    files: dict[str, bytes] = {}
    blobs: dict[Digest, int] = {}
    try:
        with path.open("rb") as raw:
            hashing = _HashingFile(raw)
            with tarfile.open(fileobj=hashing, mode="r|") as tar:  # type: ignore[call-overload]
                for member in tar:
                    _read_member(tar, member, files, blobs, keep_blob, path)
            checksum = hashing.finish()
    except FileNotFoundError:
        raise ArchiveError(f"no archive at {path}") from None
    except (tarfile.TarError, EOFError) as error:
        raise ArchiveError(f"{path} is not a readable tar archive ({error}): is it damaged?") from None
    if files.get(LAYOUT_FILE) is None or INDEX_FILE not in files:
        raise ArchiveError(f"{path} is not an OCI image layout archive (no {LAYOUT_FILE} or {INDEX_FILE})")
    return LayoutContents(files, blobs, checksum)


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, files: dict[str, bytes],
                 blobs: dict[Digest, int], keep_blob: BlobSink, path: Path) -> None:
    name = member.name.removeprefix("./")
    if member.isdir():
        return
    if not member.isfile():
        raise ArchiveError(f"{path}: entry {name} is a link or device: not an image archive")
    stream = tar.extractfile(member)
    assert stream is not None  # a regular file always has a stream
    match = _BLOB_NAME.fullmatch(name)
    if match:
        digest = Digest(match.group(1), match.group(2))
        reader = VerifyingReader(stream, digest, member.size, f"blob {digest}")
        try:
            keep_blob(digest, member.size, reader)
            reader.drain()
        except DigestMismatch:
            raise ArchiveError(f"{path}: blob {digest} does not match its digest: "
                               "the archive is damaged or was altered") from None
        blobs[digest] = member.size
    elif "/" not in name and member.size <= MAX_SMALL_FILE:
        files[name] = stream.read()


@contextlib.contextmanager
def open_file(path: Path) -> Iterator[BinaryIO]:
    """A blob source that is a plain file (the layer cache, an unpacked layout)."""
    with path.open("rb") as handle:
        yield handle
