"""Reading digest manifest indexes from where they are published: a publish root, a CVMFS mount
or an HTTP mirror. Only names and paths that the index itself vouches for are ever followed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from ligoenv.errors import PublishIndexError
from ligoenv.index import RepositoryIndex, load_index, parse_index_text
from ligoenv.oci.digest import Digest
from ligoenv.oci.platform import Platform
from ligoenv.publishroot import INDEX_DIR, PublishRoot

MAX_INDEX_BYTES = 64 * 1024 * 1024  # far above any real repository's index
READ_DEADLINE = 15.0  # seconds for one whole answer from a mirror, then the registry is asked


class IndexReader:
    """Reads repository indexes from one location; see `open_index_reader`."""

    location: str

    def get(self, registry: str, repository: str, *,
            validate: bool = False) -> RepositoryIndex | None:
        """The index of `registry/repository`, or None when the location has none.

        `validate=True` also checks it against the JSON Schema (slower: for `ligoenv verify`).
        """
        raise NotImplementedError

    def image_path(self, registry: str, repository: str, digest: Digest,
                   platform: Platform | str | None = None) -> Path | None:
        """The unpacked tree of `digest` for `platform`, when it is on a local file system."""
        return None

    def manifest_path(self, registry: str, repository: str, manifest: Digest) -> Path | None:
        """The unpacked tree of one platform's `manifest`, when it is on a local file system."""
        return None


def check_names(index: RepositoryIndex, registry: str, repository: str, what: str) -> RepositoryIndex:
    """`index` if it describes `registry/repository`: a copy under another name must not answer."""
    if (index.registry, index.repository) != (registry, repository):
        raise PublishIndexError(f"{what} describes {index.name}, not {registry}/{repository}: "
                                "the index location is misconfigured")
    return index


class LocalIndexReader(IndexReader):
    """A publish root or a CVMFS mount (e.g. /cvmfs/singularity.opensciencegrid.org)."""

    def __init__(self, root: Path) -> None:
        self.root = PublishRoot(root)
        self.location = str(root)
        self._cache: dict[tuple[str, str], RepositoryIndex | None] = {}

    def get(self, registry: str, repository: str, *,
            validate: bool = False) -> RepositoryIndex | None:
        key = (registry, repository)
        if validate or key not in self._cache:
            path = self.root.index_path(registry, repository)
            index = load_index(path, validate=validate)
            self._cache[key] = check_names(index, registry, repository, str(path)) if index else None
        return self._cache[key]

    def image_path(self, registry: str, repository: str, digest: Digest,
                   platform: Platform | str | None = None) -> Path | None:
        index = self.get(registry, repository)
        return self._tree(index.path_of(digest, platform) if index is not None else None)

    def manifest_path(self, registry: str, repository: str, manifest: Digest) -> Path | None:
        index = self.get(registry, repository)
        record = index.digests.get(str(manifest)) if index is not None else None
        return self._tree(record.path if record is not None and record.is_manifest else None)

    def _tree(self, relative: str | None) -> Path | None:
        # The path comes from a file: only ever follow it to an image inside this root.
        if relative is None or not relative.startswith(".images/") or ".." in relative.split("/"):
            return None
        path = self.root.root / relative
        return path if path.is_dir() else None


class HttpIndexReader(IndexReader):
    """A mirror or server that serves a publish root's `.ligoenv/index/...` paths over HTTP(S).

    Each read is bounded as a whole: an answer that is not complete within `deadline` seconds
    of asking (a mirror trickling its body) counts as unreachable, like one that never answers.
    """

    def __init__(self, url: str, timeout: tuple[float, float] = (5.0, 30.0),
                 max_bytes: int = MAX_INDEX_BYTES, deadline: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.location = url.rstrip("/")
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.deadline = READ_DEADLINE if deadline is None else deadline
        self.clock = clock

    def get(self, registry: str, repository: str, *,
            validate: bool = False) -> RepositoryIndex | None:
        PublishRoot(Path("/")).index_path(registry, repository)  # rejects names unfit for a path
        url = f"{self.location}/{INDEX_DIR}/{registry}/{repository}.json"
        body = self._fetch(url)
        if body is None:
            return None
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise PublishIndexError(f"{url}: not UTF-8 text") from None
        return check_names(parse_index_text(text, url, validate=validate), registry, repository, url)

    def _fetch(self, url: str) -> bytes | None:
        """The body at `url` (None for 404), whole by the deadline and at most `max_bytes`."""
        import requests  # only URL locations pay for it

        from ligoenv.errors import RegistryUnavailable
        from ligoenv.oci.body import BodyStream, read_upto

        started = self.clock()
        # No single wait may outlast the deadline either (a mirror silent after connecting).
        timeout = (min(self.timeout[0], self.deadline), min(self.timeout[1], self.deadline))
        try:
            with requests.get(url, timeout=timeout, stream=True) as response:
                if response.status_code == 404:
                    return None
                if response.status_code != 200:
                    raise PublishIndexError(
                        f"index mirror answered HTTP {response.status_code} for {url}",
                        temporary=response.status_code >= 500 or response.status_code == 429)
                stream = BodyStream(response, self.location, url, timeout[1],
                                    deadline=started + self.deadline, clock=self.clock)
                body = read_upto(stream, self.max_bytes + 1)
        except requests.RequestException as error:
            raise PublishIndexError(f"index mirror {self.location} is unreachable "
                                    f"({type(error).__name__})", temporary=True) from None
        except RegistryUnavailable:
            raise PublishIndexError(f"index mirror {self.location} is unreachable (no whole answer "
                                    f"after {self.clock() - started:.1f} s)", temporary=True) from None
        if len(body) > self.max_bytes:
            raise PublishIndexError(f"{url} is larger than {self.max_bytes} bytes: not an index")
        return body


def open_reader(location: str | Path) -> IndexReader:
    """A reader for a local directory (publish root, CVMFS mount) or an http(s) URL."""
    text = str(location)
    if text.startswith(("http://", "https://")):
        return HttpIndexReader(text)
    if text.startswith("file://"):
        text = text[len("file://"):]
    return LocalIndexReader(Path(text).expanduser())
