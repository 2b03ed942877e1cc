"""Safe, streamed layer unpacking: apply one OCI layer (tar, gzip or zstd) onto a directory tree.

Whiteouts and opaque directories follow the OCI image spec; nothing is written through a symlink.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import tarfile
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from isal import isal_zlib  # ISA-L's inflate: about twice zlib's speed, the same API

from ligoenv.oci.digest import Digest, Readable
from ligoenv.oci.errors import DigestMismatch, LigoenvError, UnsafeArchive
from ligoenv.oci.growing import GrowingReader
from ligoenv.oci.rootfs import RatioCap, RootfsWriter
from ligoenv.oci.tarstream import TarEntry, TarReader

CHUNK = 1 << 20  # copy buffer
INFLATE_CHUNK = 4 << 20  # what the decompressing thread hands over at a time: fewer GIL handoffs
AHEAD = 4  # chunks the decompressing thread may run ahead
_FORMATS = {"none": "tar archive", "gzip": "gzip-compressed tar", "zstd": "zstd-compressed tar"}


@dataclass(frozen=True)
class UnpackOptions:
    keep_setuid: bool = False  # setuid/setgid bits of regular files dropped by default
    # decompression-bomb cap: what all layers of one image expand to together (pull passes
    # each apply_layer what the earlier layers took)
    max_expanded_bytes: int | None = 64 * 1024**3
    preserve_owner: bool | None = None  # None: keep tar uid/gid when euid == 0, else current user
    # per layer: what it may expand to, in times its compressed size (see RatioCap); None: no cap
    max_expansion_ratio: int | None = None

    def ratio_cap(self, compressed_size: int | None) -> RatioCap | None:
        if self.max_expansion_ratio is None or compressed_size is None:
            return None
        return RatioCap(self.max_expansion_ratio, compressed_size)


@dataclass(frozen=True)
class UnpackReport:
    diff_id: Digest  # of the uncompressed tar stream: sha256, or expected_diff_id's algorithm
    bytes_written: int
    skipped_devices: tuple[str, ...]
    dropped_setuid: tuple[str, ...]
    tar_bytes: int  # the uncompressed tar stream

    @property
    def expanded_bytes(self) -> int:
        """What the layer counts against max_expanded_bytes: its tar stream, or what its files
        wrote where sparse files filled holes."""
        return max(self.tar_bytes, self.bytes_written)


def apply_layer(blob: Readable, compression: str, target: Path,
                options: UnpackOptions = UnpackOptions(),
                expected_diff_id: Digest | None = None, *, expanded_before: int = 0,
                compressed_size: int | None = None, changed: set[str] | None = None) -> UnpackReport:
    """Apply the layer read from `blob` onto `target` (created if missing); report what was done.

    Reads `blob` to its end so that a VerifyingReader's check always runs. Raises UnsafeArchive
    for hostile or malformed input, DigestMismatch when the uncompressed stream is not
    `expected_diff_id`. A failed layer leaves `target` half-written: unpack into a staging tree.
    `expanded_before` is what the image's earlier layers expanded to (the sum of their reports'
    `expanded_bytes`): the cap counts them too. `compressed_size` (the layer descriptor's size)
    lets `options.max_expansion_ratio` refuse a layer that expands absurdly early. `changed`,
    when given, receives the relative paths the layer made or changed (`RootfsWriter.changed`):
    all that needs sealing in a clone of a sealed tree.
    """
    algorithm = expected_diff_id.algorithm if expected_diff_id else "sha256"
    source = _decompressor(blob, compression)
    ratio_cap = options.ratio_cap(compressed_size)
    writer = _writer(target, options, expanded_before, ratio_cap)
    stream = _Expanded(source, algorithm, options.max_expanded_bytes, expanded_before, ratio_cap)
    try:
        for member, data in _members(stream):
            writer.apply(member, data)
        writer.finish()
        if changed is not None:
            changed.update(writer.changed())
        diff_id = stream.drain()
    except _format_errors() as err:
        stream.close()  # the blob is ours again
        _drain(blob)  # a corrupt download says so (DigestMismatch) before the archive is blamed
        raise UnsafeArchive(f"layer is not a valid {_FORMATS[compression]}: {err}") from None
    except BaseException:
        if isinstance(blob, GrowingReader):
            blob.abandon()  # its reading thread must not wait for the rest of the download
        raise
    finally:
        stream.close()
        writer.close()
    _drain(blob)
    if expected_diff_id is not None and diff_id != expected_diff_id:
        raise DigestMismatch(f"uncompressed layer: expected diff_id {expected_diff_id}, got {diff_id}")
    return UnpackReport(diff_id, writer.bytes_written, tuple(writer.skipped_devices),
                        tuple(writer.dropped_setuid), stream.received)


def _writer(target: Path, options: UnpackOptions, written_before: int,
            ratio_cap: RatioCap | None) -> RootfsWriter:
    chown = options.preserve_owner if options.preserve_owner is not None else os.geteuid() == 0
    try:
        target.mkdir(parents=True, exist_ok=True)
        return RootfsWriter(target, chown=chown, keep_setuid=options.keep_setuid,
                            max_bytes=options.max_expanded_bytes, written_before=written_before,
                            ratio_cap=ratio_cap)
    except OSError as err:
        raise LigoenvError(f"cannot unpack into {target}: {err.strerror}") from None


# --- the uncompressed stream ---------------------------------------------------------------

class _Gunzip:
    """gzip members in sequence (multi-member streams are valid), inflated in bounded chunks."""

    def __init__(self, blob: Readable) -> None:
        self._blob = blob
        self._inflater: Any = None  # a zlib decompressor while inside a member
        self._input = b""

    def read(self, n: int) -> bytes:
        while True:
            if not self._input:
                self._input = self._blob.read(CHUNK)
                if not self._input:
                    return self._finish()
            if self._inflater is None:
                self._inflater = isal_zlib.decompressobj(wbits=31)
            # max_length bounds memory: a bomb never inflates a whole input chunk at once
            out: bytes = self._inflater.decompress(self._input, n)
            if self._inflater.eof:
                self._input, self._inflater = self._inflater.unused_data, None
            else:
                self._input = self._inflater.unconsumed_tail
            if out:
                return out

    def _finish(self) -> bytes:
        if self._inflater is None:
            return b""
        out: bytes = self._inflater.flush()
        if not self._inflater.eof:
            raise zlib.error("the gzip stream ends in the middle of a member")  # one error type
        self._inflater = None
        return out


def _decompressor(blob: Readable, compression: str) -> Readable:
    if compression == "gzip":
        return _Gunzip(blob)
    if compression == "zstd":
        import zstandard

        reader: Readable = zstandard.ZstdDecompressor().stream_reader(
            blob,  # type: ignore[arg-type]  # it only calls read(): any Readable will do
            read_size=CHUNK, read_across_frames=True, closefd=False)
        return reader
    if compression == "none":
        return blob
    raise UnsafeArchive(f"unknown layer compression {compression!r}: expected none, gzip or zstd")


def _format_errors() -> tuple[type[BaseException], ...]:
    import zstandard

    isal_error = cast(type[BaseException], isal_zlib.error)  # a class; its stub says otherwise
    return (zlib.error, isal_error, zstandard.ZstdError, tarfile.TarError)


class _Expanded:
    """The uncompressed tar stream as tarfile reads it: hashed, counted and capped.

    A thread decompresses and hashes ahead while the caller writes files: zlib, zstandard,
    hashlib and reads release the GIL, so inflating really overlaps writing.
    """

    def __init__(self, source: Readable, algorithm: str, limit: int | None, before: int,
                 ratio_cap: RatioCap | None = None) -> None:
        self.received = 0
        self.error: BaseException | None = None
        self._hash = hashlib.new(algorithm)
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=AHEAD)
        self._stop = threading.Event()
        self._buf = b""
        self._pos = 0
        self._ended = False
        self._ratio_cap = ratio_cap
        self._thread = threading.Thread(target=self._produce, args=(source, limit, before),
                                        name="ligoenv-unpack", daemon=True)
        self._thread.start()

    def read(self, n: int) -> bytes:
        if self._pos >= len(self._buf):
            if self._ended:
                return b""
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._ended, self.error = True, item
                raise item
            self._buf, self._pos, self._ended = item, 0, not item
            self.received += len(item)
        if self._pos == 0 and n >= len(self._buf):
            self._pos = len(self._buf)
            return self._buf
        chunk = self._buf[self._pos:self._pos + n]
        self._pos += len(chunk)
        return chunk

    def chunk(self) -> bytes:
        """The next piece of the stream as the thread handed it over; b"" at its end."""
        if self._pos < len(self._buf):
            rest, self._pos = self._buf[self._pos:], len(self._buf)
            return rest
        return self.read(INFLATE_CHUNK)

    def drain(self) -> Digest:
        """Read what tarfile left unread (end-of-archive padding); the digest of the stream."""
        while self.read(CHUNK):
            pass
        self._thread.join()
        return Digest(self._hash.name, self._hash.hexdigest())

    def close(self) -> None:
        """Stop the thread and wait for it: once emptied, the queue takes its last chunk."""
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._thread.join()

    def _produce(self, source: Readable, limit: int | None, before: int) -> None:
        size = before
        try:
            while not self._stop.is_set():
                chunk = source.read(INFLATE_CHUNK)
                size += len(chunk)
                if limit is not None and size > limit:
                    what = "the layers expand" if before else "layer expands"
                    raise UnsafeArchive(f"{what} to more than {limit} bytes (a decompression "
                                        "bomb?); if the image is genuine, raise the cap "
                                        "([publisher] max_expanded_bytes on a server)")
                if self._ratio_cap is not None:
                    self._ratio_cap.check(size - before)
                self._hash.update(chunk)
                self._queue.put(chunk)
                if not chunk:
                    return
        except Exception as err:  # handed to the reading thread, which raises it
            self._queue.put(err)


def _drain(blob: Readable) -> None:
    while blob.read(CHUNK):
        pass


def _members(stream: _Expanded) -> Iterator[tuple[TarEntry, Iterable[bytes | memoryview]]]:
    """Each entry of the tar stream with its data, read in order, one entry in memory at a time."""
    reader = TarReader(stream.chunk)
    while (entry := reader.next()) is not None:
        yield entry, (reader.data(entry) if entry.isreg() else ())
