"""OCI image layouts as one tar file: written deterministically while verifying, read back verifying.

The writer streams each blob from its source straight into the tar (memory stays flat however
large the layers) and checks it against its digest on the way; entries are sorted and carry
fixed times and owners, so the same content always gives the same bytes. The reader streams
the tar once, keeping each blob only after its content matched the name it is stored under.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import re
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ligoenv.oci.digest import Digest, VerifyingReader
from ligoenv.oci.errors import ArchiveError, DigestMismatch
from ligoenv.oci.workers import run_all

LAYOUT_FILE = "oci-layout"
LAYOUT_VERSION = b'{"imageLayoutVersion":"1.0.0"}'
INDEX_FILE = "index.json"
BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE
CHUNK = 1 << 20
MAX_SMALL_FILE = 16 << 20  # index.json, lockfile, README: metadata, never large
_BLOB_NAME = re.compile(r"blobs/(sha256|sha512)/([0-9a-f]{64}|[0-9a-f]{128})")

# Opens a stream over one blob that checks it against its digest; the writer reads it to its end.
BlobOpener = Callable[[], AbstractContextManager[VerifyingReader]]
Progress = Callable[[int], None]


@dataclass(frozen=True)
class BlobEntry:
    digest: Digest
    size: int
    open: BlobOpener = field(compare=False)


def blob_name(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.hex}"


def write_layout_tar(path: Path, files: Mapping[str, bytes], blobs: Mapping[Digest, BlobEntry], *,
                     mtime: int, progress: Progress | None = None, threads: int = 4) -> Digest:
    """Write `files` (index.json and companions) and `blobs` as one tar at `path`, atomically.

    Every entry's size is known, so the whole tar is planned first: headers and small files
    are written in order, and blobs are streamed into their places by `threads` at once, each
    checked against its digest as it arrives. Nothing appears at `path` unless every blob
    matched. Returns the sha256 of the whole tar. Like tar itself, no fsync: the archive is
    made again from its lockfile, and its checksum tells a damaged copy.
    """
    plan = _plan({LAYOUT_FILE: LAYOUT_VERSION, **files, **{blob_name(d): e for d, e in blobs.items()}},
                 mtime)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "r+b") as out:
            out.truncate(plan.size)  # zeros: padding and the end blocks need no writing
            for offset, data in plan.fixed:
                os.pwrite(out.fileno(), data, offset)
            _fill_blobs(out.fileno(), plan.blobs, progress, threads)
            checksum = _sha256_of(out)
        os.replace(temporary, path)
        return checksum
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


@dataclass(frozen=True)
class _Plan:
    size: int
    fixed: list[tuple[int, bytes]]  # (offset, bytes): headers, small files
    blobs: list[tuple[int, BlobEntry]]  # (offset of the content, blob)


def _plan(entries: Mapping[str, bytes | BlobEntry], mtime: int) -> _Plan:
    """Where every entry goes: sorted names, directories included, fixed owners and times."""
    directories = {name.rsplit("/", i)[0] for name in entries for i in (1, 2) if name.count("/") >= i}
    fixed: list[tuple[int, bytes]] = []
    blobs: list[tuple[int, BlobEntry]] = []
    offset = 0
    for name in sorted([*entries, *directories]):
        entry = entries.get(name)
        size = 0 if entry is None else len(entry) if isinstance(entry, bytes) else entry.size
        fixed.append((offset, _header(name, entry is None, size, mtime)))
        offset += BLOCK
        if isinstance(entry, bytes):
            fixed.append((offset, entry))
        elif entry is not None:
            blobs.append((offset, entry))
        offset += -(-size // BLOCK) * BLOCK
    offset += 2 * BLOCK  # two zero blocks end the archive; then tar's own record padding
    return _Plan(-(-offset // RECORD) * RECORD, fixed, blobs)


def _header(name: str, directory: bool, size: int, mtime: int) -> bytes:
    info = tarfile.TarInfo(name + "/" if directory else name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.size, info.mode, info.mtime = size, 0o755 if directory else 0o644, mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")


def _fill_blobs(fd: int, blobs: list[tuple[int, BlobEntry]], progress: Progress | None,
                threads: int) -> None:
    """Stream each blob into its place; the first failure cancels the blobs not yet started."""
    lock = threading.Lock()

    def advance(count: int) -> None:
        if progress is not None:
            with lock:
                progress(count)

    # Largest first, so that one big layer does not start last and finish alone.
    ordered = sorted(blobs, key=lambda item: item[1].size, reverse=True)
    run_all([functools.partial(_fill_one, fd, offset, entry, advance) for offset, entry in ordered],
            threads, "ligoenv-archive")


def _fill_one(fd: int, offset: int, entry: BlobEntry, advance: Progress) -> None:
    with entry.open() as reader:
        position = offset
        while chunk := reader.read(CHUNK):
            os.pwrite(fd, chunk, position)
            position += len(chunk)
            advance(len(chunk))
        reader.drain()  # raises DigestMismatch unless all of it, and only it, was the blob


def file_sha256(path: Path) -> Digest:
    """The sha256 of a whole file (an archive's own checksum, to cite beside its lockfile)."""
    with path.open("rb") as handle:
        return _sha256_of(handle)


def _sha256_of(handle: BinaryIO) -> Digest:
    handle.seek(0)
    digest = hashlib.sha256()
    while chunk := handle.read(CHUNK):
        digest.update(chunk)
    return Digest("sha256", digest.hexdigest())


@dataclass(frozen=True)
class LayoutContents:
    """What a layout tar held: its small files, and the blobs kept (digest -> size)."""

    files: dict[str, bytes]
    blobs: dict[Digest, int]


# Takes one blob: its digest, size, a verifying stream of its bytes (read by the sink or
# drained after it) and where its bytes start in the tar file.
BlobSink = Callable[[Digest, int, VerifyingReader, int], object]


def read_layout_tar(path: Path, keep_blob: BlobSink) -> LayoutContents:
    """Stream the tar at `path`, handing each blob to `keep_blob` through a verifying reader.

    ArchiveError (one line, naming the entry) for a damaged or altered archive: a blob whose
    content differs from its name, a link or device entry, a missing layout file.
    """
    files: dict[str, bytes] = {}
    blobs: dict[Digest, int] = {}
    try:
        with tarfile.open(path, mode="r|") as tar:
            for member in tar:
                _read_member(tar, member, files, blobs, keep_blob, path)
    except FileNotFoundError:
        raise ArchiveError(f"no archive at {path}") from None
    except (tarfile.TarError, EOFError) as error:
        raise ArchiveError(f"{path} is not a readable tar archive ({error}): is it damaged?") from None
    if files.get(LAYOUT_FILE) is None or INDEX_FILE not in files:
        raise ArchiveError(f"{path} is not an OCI image layout archive (no {LAYOUT_FILE} or {INDEX_FILE})")
    return LayoutContents(files, blobs)


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
            keep_blob(digest, member.size, reader, member.offset_data)
            reader.drain()
        except DigestMismatch:
            raise ArchiveError(f"{path}: blob {digest} does not match its digest: "
                               "the archive is damaged or was altered") from None
        blobs[digest] = member.size
    elif "/" not in name and member.size <= MAX_SMALL_FILE:
        files[name] = stream.read()


@contextlib.contextmanager
def verified_bytes(digest: Digest, data: bytes) -> Iterator[VerifyingReader]:
    """A blob held in memory (a manifest), checked like any other."""
    yield VerifyingReader(io.BytesIO(data), digest, len(data), f"blob {digest.short}")
