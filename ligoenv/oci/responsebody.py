"""Reading a registry's response bodies: blobs as they arrive, until they stall; documents
(manifests, configs, token and error answers) whole, by a wall-clock deadline, under a size cap.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import requests
import urllib3.exceptions

from ligoenv.oci.errors import RegistryError, RegistryUnavailable
from ligoenv.oci.httperrors import url_path

MAX_ANSWER_BYTES = 16 << 20  # a token, a tag list or an error: anything bigger is not one
_CHUNK = 1 << 20
Clock = Callable[[], float]


class AnswerTooSlow(RegistryUnavailable):
    """An answer that did not arrive whole in time; `waiting` says what did not come."""

    def __init__(self, message: str, waiting: str) -> None:
        super().__init__(message)
        self.waiting = waiting


class BodyStream(io.RawIOBase):
    """A streamed response body; each read returns what one network read brings.

    No bytes for `timeout` seconds (the socket's read timeout) ends it, and so does `deadline`
    (a `clock()` time) passing before the body is complete. Either, or a lost connection, is
    RegistryUnavailable naming the registry.
    """

    def __init__(self, response: requests.Response, registry: str, what: str, timeout: float, *,
                 deadline: float | None = None, clock: Clock = time.monotonic) -> None:
        self._raw = response.raw
        self._raw.decode_content = True
        self._registry, self._what, self._timeout = registry, what, timeout
        self._deadline, self._clock = deadline, clock

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        return super().read(size) or b""  # None only comes from non-blocking streams

    def readinto(self, buffer: Any) -> int:
        if self._deadline is not None and self._clock() > self._deadline:
            waiting = f"registry {self._registry} did not send {self._what}"
            raise AnswerTooSlow(f"{waiting} within {self._timeout:g} s", waiting)
        try:
            # read1: whatever has arrived, so that a trickle neither blocks the deadline check
            # nor a caller who wants to stop between chunks
            data = self._raw.read1(len(buffer))
        except urllib3.exceptions.ReadTimeoutError:
            raise AnswerTooSlow(f"registry {self._registry} sent no data for {self._timeout:g} s "
                                f"while sending {self._what}",
                                f"registry {self._registry} did not send {self._what}") from None
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as error:
            raise RegistryUnavailable(f"registry {self._registry}: connection lost while reading "
                                      f"{self._what} ({type(error).__name__})") from None
        buffer[: len(data)] = data
        return len(data)


def attempt_deadline(response: requests.Response, timeout: float, clock: Clock = time.monotonic) -> float:
    """`timeout` seconds after the request was sent (`elapsed` runs from then to the headers)."""
    return clock() - response.elapsed.total_seconds() + timeout


def read_upto(stream: BodyStream, limit: int) -> bytes:
    """The body, or its first `limit` bytes if it is longer."""
    parts: list[bytes] = []
    size = 0
    while size < limit:
        chunk = stream.read(min(_CHUNK, limit - size))
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


def preload(response: requests.Response, registry: str, timeout: float, deadline: float,
            clock: Clock = time.monotonic) -> None:
    """Read a small body now, by `deadline`, so that `.content` and `.json()` cannot hang on it."""
    method = response.request.method if response.request is not None else "GET"
    what = f"the answer to {method} {url_path(response.url)}"
    try:
        data = read_upto(BodyStream(response, registry, what, timeout, deadline=deadline, clock=clock),
                         MAX_ANSWER_BYTES + 1)
    except BaseException:
        response.close()
        raise
    if len(data) > MAX_ANSWER_BYTES:
        response.close()
        raise RegistryError(f"registry {registry}: {what} is larger than {MAX_ANSWER_BYTES} bytes")
    response._content = data  # what requests fills in when it reads a body itself
