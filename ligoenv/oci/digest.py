"""Content digests and the verifying reader every blob flows through."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ligoenv.oci.errors import DigestMismatch, InvalidReference

if TYPE_CHECKING:
    from hashlib import _Hash

_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"(sha256|sha512):([0-9a-f]+)")  # fullmatch: `$` allows a final newline


class Readable(Protocol):
    """What a blob is read from: a file, a response body, a VerifyingReader."""

    def read(self, n: int, /) -> bytes: ...


@dataclass(frozen=True, order=True)
class Digest:
    """A content digest such as `sha256:` + 64 lowercase hex characters."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        match = _DIGEST_RE.fullmatch(text)
        if not match:
            raise InvalidReference(
                f"invalid digest {text!r}: expected sha256: or sha512: followed by lowercase hex"
            )
        algorithm, hexpart = match.groups()
        if len(hexpart) != _HEX_LENGTH[algorithm]:
            raise InvalidReference(
                f"invalid digest {text!r}: {algorithm} needs {_HEX_LENGTH[algorithm]} hex "
                f"characters, got {len(hexpart)}"
            )
        return cls(algorithm, hexpart)

    @classmethod
    def of_bytes(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> _Hash:
        return hashlib.new(self.algorithm)

    def verify_bytes(self, data: bytes, what: str = "content") -> None:
        actual = Digest.of_bytes(data, self.algorithm)
        if actual != self:
            raise DigestMismatch(f"{what}: expected {self}, got {actual}")

    @property
    def short(self) -> str:
        return f"{self.algorithm}:{self.hex[:12]}"

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def chain_ids(diff_ids: Sequence[Digest]) -> list[Digest]:
    """The OCI ChainID of each layer prefix: equal ChainIDs mean equal unpacked trees.

    `ChainID(L0) = DiffID(L0)`, `ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(Ln))`.
    """
    chains: list[Digest] = []
    for diff_id in diff_ids:
        chains.append(Digest.of_bytes(f"{chains[-1]} {diff_id}".encode()) if chains else diff_id)
    return chains


class VerifyingReader:
    """A file-like reader that hashes while streaming and checks the digest at end of stream.

    It stops at the declared size (a longer stream is an error, not silently truncated) and
    raises DigestMismatch when the stream ends early or the digest differs. Consumers must
    read to the end (`drain()`), so that the check always runs.
    """

    def __init__(self, raw: Readable, digest: Digest, size: int | None, what: str) -> None:
        self._raw = raw
        self._digest = digest
        self._size = size
        self._what = what
        self._hash = digest.hasher()
        self._count = 0
        self._verified = False

    @property
    def bytes_read(self) -> int:
        return self._count

    @property
    def verified(self) -> bool:
        return self._verified

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = []
            while chunk := self.read(1 << 20):
                parts.append(chunk)
            return b"".join(parts)
        if n == 0 or self._verified:
            return b""
        chunk = self._raw.read(n)
        if not chunk:
            self._finish()
            return b""
        self._count += len(chunk)
        if self._size is not None and self._count > self._size:
            raise DigestMismatch(
                f"{self._what}: more than the declared {self._size} bytes (expected {self._digest})"
            )
        self._hash.update(chunk)
        return chunk

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def drain(self, chunk_size: int = 1 << 20) -> int:
        """Read to the end of the stream (running the check); return the total size."""
        while self.read(chunk_size):
            pass
        self._finish()
        return self._count

    def _finish(self) -> None:
        if self._verified:
            return
        if self._size is not None and self._count != self._size:
            raise DigestMismatch(
                f"{self._what}: stream ended after {self._count} of {self._size} bytes"
            )
        actual = Digest(self._digest.algorithm, self._hash.hexdigest())
        if actual != self._digest:
            raise DigestMismatch(f"{self._what}: expected {self._digest}, got {actual}")
        self._verified = True
