"""Fetching index files by their relative path from where they are published: a directory
(a publish root or a CVMFS mount) or an HTTP(S) mirror or read API serving the same paths.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ligoenv.store.errors import PublishIndexError

if TYPE_CHECKING:
    import requests

SMALL_FILE_BYTES = 4 * 1024 * 1024  # a version-2 file is tens of KiB; far above any real one
V1_FILE_BYTES = 64 * 1024 * 1024  # a version-1 file holds a repository's whole history
READ_DEADLINE = 15.0  # seconds for one whole file from a mirror, then the registry is asked


class IndexFiles:
    """Reads index files of one location; see `LocalFiles` and `HttpFiles`."""

    location: str

    def read(self, relative: str, max_bytes: int = SMALL_FILE_BYTES) -> bytes | None:
        """The bytes of the file at `relative`, or None when there is none."""
        raise NotImplementedError

    def list_dir(self, relative: str) -> list[str] | None:
        """Sorted names in the directory `relative` (None: absent or not listable here)."""
        return None


class LocalFiles(IndexFiles):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = str(root)

    def read(self, relative: str, max_bytes: int = SMALL_FILE_BYTES) -> bytes | None:
        path = self.root / relative
        try:
            with open(path, "rb") as handle:
                data = handle.read(max_bytes + 1)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None  # a directory: a longer repository name, not our file
        except OSError as error:
            raise PublishIndexError(f"cannot read index {path}: {error.strerror}") from None
        if len(data) > max_bytes:
            raise PublishIndexError(f"{path} is larger than {max_bytes} bytes: not an index file")
        return data

    def list_dir(self, relative: str) -> list[str] | None:
        try:
            return sorted(entry.name for entry in os.scandir(self.root / relative)
                          if not entry.name.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as error:
            raise PublishIndexError(f"cannot list {self.root / relative}: {error.strerror}") from None


class HttpFiles(IndexFiles):
    """A static mirror of a publish root, or the read API: the same paths under a URL.

    One session keeps the connection for the few files an answer needs. Each file has a size
    cap and is bounded as a whole: one not complete within `deadline` seconds of asking (a
    mirror trickling its body) counts as unreachable, like one that never answers.
    """

    def __init__(self, url: str, timeout: tuple[float, float] = (5.0, 30.0),
                 max_bytes: int | None = None, deadline: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.location = url.rstrip("/")
        self.timeout = timeout
        self.max_bytes = max_bytes  # overrides every cap (tests)
        self.deadline = READ_DEADLINE if deadline is None else deadline
        self.clock = clock
        self._session: requests.Session | None = None

    def read(self, relative: str, max_bytes: int = SMALL_FILE_BYTES) -> bytes | None:
        import requests  # only URL locations pay for it

        from ligoenv.oci.errors import RegistryUnavailable
        from ligoenv.oci.responsebody import BodyStream, read_upto

        url = f"{self.location}/{relative}"
        cap = self.max_bytes if self.max_bytes is not None else max_bytes
        if self._session is None:
            self._session = requests.Session()
        started = self.clock()
        # No single wait may outlast the deadline either (a mirror silent after connecting).
        timeout = (min(self.timeout[0], self.deadline), min(self.timeout[1], self.deadline))
        try:
            with self._session.get(url, timeout=timeout, stream=True) as response:
                if response.status_code == 404:
                    return None
                if response.status_code != 200:
                    raise PublishIndexError(
                        f"index mirror answered HTTP {response.status_code} for {url}",
                        temporary=response.status_code >= 500 or response.status_code == 429)
                stream = BodyStream(response, self.location, url, timeout[1],
                                    deadline=started + self.deadline, clock=self.clock)
                body = read_upto(stream, cap + 1)
        except requests.RequestException as error:
            raise PublishIndexError(f"index mirror {self.location} is unreachable "
                                    f"({type(error).__name__})", temporary=True) from None
        except RegistryUnavailable:
            raise PublishIndexError(f"index mirror {self.location} is unreachable (no whole answer "
                                    f"after {self.clock() - started:.1f} s)", temporary=True) from None
        if len(body) > cap:
            raise PublishIndexError(f"{url} is larger than {cap} bytes: not an index file")
        return body
