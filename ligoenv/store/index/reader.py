"""Reading a repository's index from where it is published, fetching only the files an answer
needs: `resolve TAG` reads the tag's pointer, `--at` and `history` that tag's segments, a
digest its own record. A repository not yet migrated is read from its version-1 file.

Only names and paths that the index itself vouches for are ever followed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from ligoenv.oci.digest import Digest
from ligoenv.oci.platform import Platform
from ligoenv.store.errors import PublishIndexError
from ligoenv.store.index import paths
from ligoenv.store.index.codec import IndexParser, TagPointer, loads
from ligoenv.store.index.files import V1_FILE_BYTES, HttpFiles, IndexFiles, LocalFiles
from ligoenv.store.index.model import (
    DigestRecord,
    RepositoryIndex,
    RepositoryView,
    TagEvent,
    event_at,
    select_events,
)
from ligoenv.store.publishroot import PublishRoot
from ligoenv.store.times import as_utc

_UNREAD = object()


class StoredRepository(RepositoryView):
    """A repository's index read lazily from `files`; each file is read at most once."""

    def __init__(self, files: IndexFiles, registry: str, repository: str) -> None:
        self.files = files
        self.registry = registry
        self.repository = repository
        self._json: dict[str, Any] = {}
        self._legacy: Any = _UNREAD

    # -- files ---------------------------------------------------------------------------

    def _read(self, relative: str) -> tuple[Any, str] | None:
        """The parsed JSON at `relative` and its name for errors; None when absent."""
        what = f"{self.files.location}/{relative}"
        if relative not in self._json:
            body = self.files.read(relative)
            self._json[relative] = None if body is None else loads(body, what)
        data = self._json[relative]
        return None if data is None else (data, what)

    def pointer(self, tag: str) -> TagPointer | None:
        """The tag's current pointer (version 2), or None."""
        found = self._read(paths.pointer_file(self.registry, self.repository, tag))
        if found is None:
            return None
        return IndexParser(found[1]).pointer(found[0], self.registry, self.repository, tag)

    def segment(self, tag: str, number: int) -> list[TagEvent]:
        """History segment `number` of `tag`, oldest first (the last event's `until` unset)."""
        found = self._read(paths.segment_file(self.registry, self.repository, tag, number))
        if found is None:
            raise PublishIndexError(f"{self.name}:{tag}: history segment {number} is missing "
                                    f"from {self.files.location}")
        return IndexParser(found[1]).segment(found[0], self.registry, self.repository, tag, number)

    def legacy(self) -> RepositoryIndex | None:
        """The version-1 index, when the repository has not been converted to version 2."""
        if self._legacy is _UNREAD:
            self._legacy = None
            if self._read(paths.marker_file(self.registry, self.repository)) is None:
                relative = paths.v1_file(self.registry, self.repository)
                body = self.files.read(relative, V1_FILE_BYTES)
                if body is not None:
                    what = f"{self.files.location}/{relative}"
                    index = IndexParser(what).index(loads(body, what))
                    self._legacy = check_names(index, self.registry, self.repository, what)
        return self._legacy  # type: ignore[no-any-return]

    @property
    def exists(self) -> bool:
        """True when the location has an index of this repository (either version)."""
        return (self._read(paths.marker_file(self.registry, self.repository)) is not None
                or self.legacy() is not None)

    # -- answers -------------------------------------------------------------------------

    def current(self, tag: str) -> Digest | None:
        pointer = self.pointer(tag)
        if pointer is not None:
            return pointer.digest
        legacy = self.legacy()
        return legacy.current(tag) if legacy is not None else None

    def has_tag(self, tag: str) -> bool:
        if self.pointer(tag) is not None:
            return True
        legacy = self.legacy()
        return legacy is not None and legacy.has_tag(tag)

    def history(self, tag: str, *, limit: int | None = None, since: datetime | None = None,
                before: datetime | None = None) -> list[TagEvent]:
        pointer = self.pointer(tag)
        if pointer is None:
            legacy = self.legacy()
            return legacy.history(tag, limit=limit, since=since, before=before) if legacy else []
        if limit is not None and limit <= 0:
            return []
        since = as_utc(since) if since is not None else None
        before = as_utc(before) if before is not None else None
        newest = (self.segment_before(tag, pointer, before) if before is not None
                  else pointer.segments - 1)
        chosen: list[TagEvent] = []
        for number in range(newest, -1, -1):  # newest first: --limit reads only what it shows
            events = self._chained(tag, pointer, number)
            chosen = select_events(events, since=since, before=before) + chosen
            if (limit is not None and len(chosen) >= limit) or (
                    since is not None and events[0].since < since):
                break
        return chosen[-limit:] if limit is not None else chosen

    def at(self, tag: str, when: datetime) -> Digest:
        when = as_utc(when)
        pointer = self.pointer(tag)
        if pointer is None:
            legacy = self.legacy()
            if legacy is not None:
                return legacy.at(tag, when)
            return event_at([], when, self.name, tag)
        if when >= pointer.last.since:
            return event_at([pointer.last], when, self.name, tag)
        if when < pointer.first:
            return event_at([self.segment(tag, 0)[0]], when, self.name, tag)
        number = self.segment_before(tag, pointer, when, inclusive=True)
        return event_at(self.segment(tag, number), when, self.name, tag)

    def record(self, digest: Digest) -> DigestRecord | None:
        found = self._read(paths.record_file(self.registry, self.repository, digest))
        if found is not None:
            return IndexParser(found[1]).record_file(found[0], self.registry, self.repository,
                                                     digest)
        legacy = self.legacy()
        return legacy.record(digest) if legacy is not None else None

    def tag_names(self) -> list[str] | None:
        names = self.files.list_dir(paths.tags_dir(self.registry, self.repository))
        legacy = self.legacy() if names is None else None
        return sorted(legacy.tags) if legacy is not None else names

    # -- segments ------------------------------------------------------------------------

    def _chained(self, tag: str, pointer: TagPointer, number: int) -> list[TagEvent]:
        """Segment `number` with its last event's `until` taken from the next segment."""
        events = self.segment(tag, number)
        if number + 1 < pointer.segments:
            events[-1] = replace(events[-1], until=self.segment(tag, number + 1)[0].since)
        return events

    def segment_before(self, tag: str, pointer: TagPointer, when: datetime, *,
                        inclusive: bool = False) -> int:
        """The newest segment starting before `when` (at or before, when `inclusive`): a
        binary search, so a decade of history costs a handful of small reads."""
        low, high = 0, pointer.segments - 1
        while low < high:
            middle = (low + high + 1) // 2
            start = self.segment(tag, middle)[0].since
            if start < when or (inclusive and start == when):
                low = middle
            else:
                high = middle - 1
        return low


def check_names(index: RepositoryIndex, registry: str, repository: str, what: str) -> RepositoryIndex:
    """`index` if it describes `registry/repository`: a copy under another name must not answer."""
    if (index.registry, index.repository) != (registry, repository):
        raise PublishIndexError(f"{what} describes {index.name}, not {registry}/{repository}: "
                                "the index location is misconfigured")
    return index


class IndexReader:
    """Reads repository indexes from one location; see `open_reader`."""

    def __init__(self, files: IndexFiles) -> None:
        self.files = files
        self.location = files.location
        self._repositories: dict[tuple[str, str], StoredRepository] = {}

    def get(self, registry: str, repository: str) -> StoredRepository:
        """The index of `registry/repository` (read lazily: nothing is fetched yet)."""
        key = (registry, repository)
        if key not in self._repositories:
            self._repositories[key] = StoredRepository(self.files, registry, repository)
        return self._repositories[key]

    def image_path(self, registry: str, repository: str, digest: Digest,
                   platform: Platform | str | None = None) -> Path | None:
        """The unpacked tree of `digest` for `platform`, when it is on a local file system."""
        return None

    def manifest_path(self, registry: str, repository: str, manifest: Digest) -> Path | None:
        """The unpacked tree of one platform's `manifest`, when it is on a local file system."""
        return None


class LocalIndexReader(IndexReader):
    """A publish root or a CVMFS mount (e.g. /cvmfs/singularity.opensciencegrid.org)."""

    def __init__(self, root: Path) -> None:
        super().__init__(LocalFiles(root))
        self.root = PublishRoot(root)

    def image_path(self, registry: str, repository: str, digest: Digest,
                   platform: Platform | str | None = None) -> Path | None:
        return self._tree(self.get(registry, repository).path_of(digest, platform))

    def manifest_path(self, registry: str, repository: str, manifest: Digest) -> Path | None:
        record = self.get(registry, repository).record(manifest)
        return self._tree(record.tree if record is not None and record.is_manifest else None)

    def _tree(self, relative: str | None) -> Path | None:
        # The path comes from a file: only ever follow it to an image inside this root.
        if relative is None or not relative.startswith(".images/") or ".." in relative.split("/"):
            return None
        path = self.root.root / relative
        return path if path.is_dir() else None


class HttpIndexReader(IndexReader):
    """A mirror or server that serves a publish root's `.ligoenv/index/...` paths over HTTP(S)."""

    def __init__(self, url: str, timeout: tuple[float, float] = (5.0, 30.0),
                 max_bytes: int | None = None, deadline: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(HttpFiles(url, timeout, max_bytes, deadline, clock))


def open_reader(location: str | Path) -> IndexReader:
    """A reader for a local directory (publish root, CVMFS mount) or an http(s) URL."""
    text = absolute_location(str(location))
    if text.startswith(("http://", "https://")):
        return HttpIndexReader(text)
    return LocalIndexReader(Path(text))


def absolute_location(location: str) -> str:
    """`location` as it means the same from any directory (a lockfile records it): a URL as it
    is, a path (or file:// URL) made absolute."""
    if location.startswith(("http://", "https://")):
        return location
    path = location.removeprefix("file://")
    return os.path.abspath(os.path.expanduser(path))


def load_repository(files: IndexFiles, registry: str, repository: str) -> RepositoryIndex | None:
    """A whole repository in memory, from either version (for migration checks, tools, tests).

    Reads every file: use a `StoredRepository` to answer questions.
    """
    stored = StoredRepository(files, registry, repository)
    legacy = stored.legacy()
    if legacy is not None:
        return legacy
    if not stored.exists:
        return None
    index = RepositoryIndex.empty(registry, repository)
    for tag in stored.tag_names() or []:
        index.tags[tag] = stored.history(tag)
    digests = files.list_dir(f"{paths.repository_dir(registry, repository)}/_digests") or []
    for algorithm in digests:
        base = f"{paths.repository_dir(registry, repository)}/_digests/{algorithm}"
        for fan in files.list_dir(base) or []:
            for name in files.list_dir(f"{base}/{fan}") or []:
                if name.endswith(".json"):
                    digest = Digest.parse(f"{algorithm}:{name[:-len('.json')]}")
                    record = stored.record(digest)
                    if record is not None:
                        index.digests[str(digest)] = record
    return index


def list_repositories(root: Path, registry: str, *, after: str = "", limit: int = 100) -> list[str]:
    """Up to `limit` repositories of `registry` in version 2 under publish root `root`, in
    order of their path components, after the repository `after`.

    Walks only the directories at or after the cursor, so a page costs about the same
    whether the root holds ten repositories or ten thousand.
    """
    check = paths.repository_dir(registry, "x")  # rejects a registry unfit for a path
    base = root / check[: -len("/x")]
    cursor = tuple(after.split("/")) if after else ()
    found: list[str] = []

    def walk(directory: Path, parts: tuple[str, ...]) -> None:
        try:
            names = sorted(e.name for e in os.scandir(directory)
                           if e.is_dir(follow_symlinks=False) and not e.name.startswith(("_", ".")))
        except (FileNotFoundError, NotADirectoryError):
            return
        for name in names:
            here = (*parts, name)
            if here < cursor[: len(here)]:
                continue  # the whole subtree sorts before the cursor
            if here > cursor and (directory / name / "_repository.json").is_file():
                found.append("/".join(here))
            if len(found) >= limit:
                return
            walk(directory / name, here)
            if len(found) >= limit:
                return

    walk(base, ())
    return found
