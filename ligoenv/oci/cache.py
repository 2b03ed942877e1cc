"""LayerCache: content-addressed blobs on disk, each downloaded once however many images share it.

Blobs live at `<root>/blobs/<algorithm>/<hex>` and only ever appear there after verification;
they are checked again whenever they are read, since disks and people can change them later.
Threads and processes that want the same blob take an flock on `<root>/locks/...` in turn.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ligoenv.oci.digest import Digest, Readable, VerifyingReader
from ligoenv.oci.errors import DigestMismatch
from ligoenv.oci.manifest import Descriptor

if TYPE_CHECKING:  # a cache that is only read needs no HTTP client (`run --lock` stays fast)
    from ligoenv.oci.growing import GrowingBlob
    from ligoenv.oci.registry import RegistryClient


class CorruptCacheEntry(DigestMismatch):
    """A cached blob that no longer matches its digest; it has been removed: download it again."""


class LayerCache:
    """A directory of verified blobs, keyed by digest."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def default(cls) -> LayerCache:
        """The per-user cache of the command-line client."""
        import platformdirs

        return cls(platformdirs.user_cache_path("ligoenv") / "layers")

    def path_for(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.hex

    def has(self, descriptor: Descriptor) -> bool:
        """True when the blob is here with its declared size (its content was verified on arrival)."""
        try:
            return self.path_for(descriptor.digest).stat().st_size == descriptor.size
        except FileNotFoundError:
            return False

    def ensure(self, client: RegistryClient, repository: str, descriptor: Descriptor,
               progress: Callable[[int], None] | None = None,
               cancel: threading.Event | None = None, growing: GrowingBlob | None = None) -> Path:
        """The path of the blob, downloading it first unless it is already cached.

        Setting `cancel` stops a download before its next chunk (DownloadCancelled); `growing`
        hears of the download as it goes (RegistryClient.download_blob).
        """
        path = self.path_for(descriptor.digest)
        if self.has(descriptor):
            return path
        with self._locked(descriptor.digest):
            # Whoever held the lock before us may have fetched it meanwhile.
            if not self.has(descriptor):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # wrong size: truncated by a crash or tampered with
                client.download_blob(repository, descriptor, path, progress, cancel=cancel,
                                     growing=growing)
        return path

    def store(self, digest: Digest, size: int, stream: Readable) -> Path:
        """Add a blob from `stream` (a VerifyingReader, read here to its end) unless it is here.

        The blob appears in the cache only after the stream ended without a mismatch.
        """
        path = self.path_for(digest)
        with self._locked(digest):
            if path.is_file() and path.stat().st_size == size:
                return path
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out:
                    while chunk := stream.read(1 << 20):
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(name, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name)
                raise
        return path

    @contextlib.contextmanager
    def open(self, descriptor: Descriptor) -> Iterator[VerifyingReader]:
        """The cached blob as a stream that is checked against its digest as it is read.

        A blob that fails the check (while read, or drained when the block ends or fails) is
        removed from the cache and CorruptCacheEntry raised. The block's other errors pass on.
        """
        what = f"cached blob {descriptor.digest.short}"
        try:
            raw = self.path_for(descriptor.digest).open("rb")
        except FileNotFoundError:  # removed by another process that found it corrupt
            raise CorruptCacheEntry(f"{what} is no longer in {self.root}") from None
        with raw:
            reader = VerifyingReader(raw, descriptor.digest, descriptor.size, what)
            try:
                yield reader
                reader.drain()
            except Exception:
                # A corrupt blob can fail the archive before its digest does: check it first.
                mismatch = _mismatch(reader)
                if mismatch is None:
                    raise
                self._evict(descriptor, os.fstat(raw.fileno()))
                raise CorruptCacheEntry(f"{mismatch} (removed from {self.root})") from None

    def _evict(self, descriptor: Descriptor, bad: os.stat_result) -> None:
        with self._locked(descriptor.digest), contextlib.suppress(FileNotFoundError):
            path = self.path_for(descriptor.digest)
            current = path.stat()
            # Another process may have found it first and fetched a good copy: keep that one.
            if (current.st_dev, current.st_ino) == (bad.st_dev, bad.st_ino):
                path.unlink()

    @contextlib.contextmanager
    def _locked(self, digest: Digest) -> Iterator[None]:
        # Lock files stay: unlinking one while another process waits on it would split the lock.
        lock = self.root / "locks" / digest.algorithm / f"{digest.hex}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _mismatch(reader: VerifyingReader) -> DigestMismatch | None:
    """Why the blob behind `reader` is not what its digest says, read to its end; None if it is."""
    try:
        reader.drain()
    except DigestMismatch as error:
        return error
    return None
