"""A blob that can be read while it downloads, so that unpacking a layer keeps pace with its
download instead of starting after it.

The downloader writes the blob to a temporary file and reports it here (`started`, `grew`,
`finished`); a reader gets a descriptor of that same file and blocks until the bytes it asks
for have been written. It sees the end of the blob only once the download has finished and
matched its digest: a tampered or truncated blob fails the reader as it fails the download, so
a tree unpacked from it never becomes visible (the unpacker writes into staging).
"""

from __future__ import annotations

import os
import threading

from ligoenv.oci.errors import LigoenvError


class DownloadFailed(LigoenvError):
    """The download a reader was following failed; the downloader holds the reason."""


class GrowingBlob:
    """One blob's download, as its downloader reports it."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._fd: int | None = None  # a descriptor of the file being written, ours to close
        self._written = 0
        self._done = False
        self._failed = False

    # -- the downloader's side --

    def started(self, fd: int) -> None:
        """The download writes to `fd` (opened for reading too, as mkstemp opens files)."""
        with self._changed:
            self._fd = os.dup(fd)  # still readable once the file is renamed or unlinked

    def grew(self, count: int) -> None:
        """`count` more bytes are in the file (written through, not buffered)."""
        with self._changed:
            self._written += count
            self._changed.notify_all()

    def finished(self, ok: bool) -> None:
        """The download ended: verified and in the cache, or failed (or will not be finished:
        another layer of the image failed). The first report stands."""
        with self._changed:
            if not self._done:
                self._done, self._failed = True, not ok
                self._changed.notify_all()

    # -- the reader's side --

    def follow(self) -> GrowingReader | None:
        """A reader from the blob's first byte, once the download has started; None when it
        has finished without being followed (or never had to download): read the cache."""
        with self._changed:
            while self._fd is None and not self._done:
                self._changed.wait()
            if self._done:
                return None
            return GrowingReader(self)

    def close(self) -> None:
        with self._changed:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _wait_for(self, end: int, reader: GrowingReader) -> tuple[int, int]:
        """Block until the file holds more than `end` bytes, the download has finished or
        `reader` is abandoned; (fd, bytes that may be read). Raises DownloadFailed if it failed."""
        with self._changed:
            while self._written <= end and not self._done and not reader.abandoned:
                self._changed.wait()
            if reader.abandoned:
                raise DownloadFailed("reading the download was abandoned")
            if self._failed:
                raise DownloadFailed("the download failed")
            assert self._fd is not None
            return self._fd, self._written

    def _wake(self) -> None:
        with self._changed:
            self._changed.notify_all()


class GrowingReader:
    """Reads a GrowingBlob from its start: `read(n)` returns up to n bytes as soon as any have
    arrived, b"" only at the end of a download that matched its digest."""

    def __init__(self, blob: GrowingBlob) -> None:
        self._blob = blob
        self._pos = 0
        self.abandoned = False

    def abandon(self) -> None:
        """Make a read waiting for more bytes (in another thread) give up with DownloadFailed:
        the unpacker, failing, must not wait for the rest of the download to stop its reader."""
        self.abandoned = True
        self._blob._wake()

    def read(self, n: int = -1) -> bytes:
        if n == 0:
            return b""
        fd, written = self._blob._wait_for(self._pos, self)
        end = min(self._pos + n, written) if n >= 0 else written
        pieces = []
        while self._pos < end:
            piece = os.pread(fd, end - self._pos, self._pos)
            if not piece:  # the file is shorter than reported: not what the downloader wrote
                raise DownloadFailed("the downloaded file ended early")
            pieces.append(piece)
            self._pos += len(piece)
        return b"".join(pieces)
