"""Writing the version-2 index: each publish or untag is planned as the few files it changes
(a new digest record, the tag's newest history segment, its pointer), then written atomically,
records and segments before the pointer, so a reader never sees a tag point at a digest whose
record is not there. Bytes written per publish do not depend on how long the history is.

A repository still in version 1 is converted whole on its first write (`convert`); the
version-1 file is then ignored by readers and removed by `ligoenv-server index migrate`.
Callers serialise writes to one repository (the publishers' per-repository lock, or a CVMFS
lease) and plan again inside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from ligoenv.oci.atomicfile import write_atomic
from ligoenv.oci.digest import Digest
from ligoenv.store.index import paths
from ligoenv.store.index.codec import (
    TagPointer,
    dumps,
    header,
    pointer_json,
    record_json,
    segment_json,
)
from ligoenv.store.index.files import LocalFiles
from ligoenv.store.index.model import (
    PUSH,
    UNTAG,
    DigestRecord,
    RepositoryIndex,
    RepositoryView,
    TagEvent,
    insert_event,
    place_event,
)
from ligoenv.store.index.reader import StoredRepository
from ligoenv.store.times import as_utc


@dataclass
class IndexChange:
    """The files one change writes under the publish root `root`, in the order they must be
    written."""

    root: Path
    registry: str
    repository: str
    writes: list[tuple[str, str]] = field(default_factory=list)  # (relative path, text)
    checks: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (schema, new data)
    tag: str | None = None  # the tag the change is about
    tag_changed: bool = False  # an event was added to the tag's history
    current: Digest | None = None  # the tag's digest after the change
    records: dict[str, DigestRecord] = field(default_factory=dict)  # recorded by this change

    @property
    def changed(self) -> bool:
        return bool(self.writes)

    @property
    def size(self) -> int:
        """Bytes this change writes."""
        return sum(len(text.encode()) for _, text in self.writes)

    def apply(self, *, validate: bool = True) -> None:
        """Write every file atomically, in order (records, segments, pointers, marker)."""
        if validate:
            self.validate()
        for relative, text in self.writes:
            path = self.root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, text)

    def view(self, stored: StoredRepository) -> RepositoryView:
        """What the repository will answer once the change is written (`stored`: before it),
        for planning the links that follow the index."""
        return PendingView(stored, self)

    def add(self, relative: str, data: dict[str, Any], check: dict[str, Any] | None = None) -> None:
        """Write `data` at `relative`; `check` is the part of it that is new (default: all),
        validated before anything is written: older events were checked when first written."""
        self.writes.append((relative, dumps(data)))
        self.checks.append((relative, data if check is None else check))

    def validate(self) -> None:
        """Check what is new against the JSON Schemas: refuse to write what readers would not take."""
        from ligoenv.store.errors import PublishIndexError
        from ligoenv.store.schemas import validate

        for relative, data in self.checks:
            validate(data, schema_of(relative), PublishIndexError,
                     f"refusing to write index file {relative}")


def schema_of(relative: str) -> str:
    """The name of the schema (in `schemas/`) of the version-2 file at `relative`."""
    return f"index-{paths.kind_of(relative) or 'record'}"


class PendingView(RepositoryView):
    """A repository as it will be after `change`: its tag's new current digest, its new
    records; every other answer is what is stored now."""

    def __init__(self, stored: StoredRepository, change: IndexChange) -> None:
        self.stored, self.change = stored, change
        self.registry, self.repository = stored.registry, stored.repository

    def current(self, tag: str) -> Digest | None:
        return self.change.current if tag == self.change.tag else self.stored.current(tag)

    def has_tag(self, tag: str) -> bool:
        return (tag == self.change.tag and self.change.tag_changed) or self.stored.has_tag(tag)

    def history(self, tag: str, *, limit: int | None = None, since: datetime | None = None,
                before: datetime | None = None) -> list[TagEvent]:
        return self.stored.history(tag, limit=limit, since=since, before=before)

    def at(self, tag: str, when: datetime) -> Digest:
        return self.stored.at(tag, when)

    def record(self, digest: Digest) -> DigestRecord | None:
        return self.change.records.get(str(digest)) or self.stored.record(digest)


class IndexWriter:
    """Plans changes to the index under the publish root `root` (see `IndexChange.apply`)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def stored(self, registry: str, repository: str) -> StoredRepository:
        """What is on disk now (read afresh: another writer may have changed it)."""
        return StoredRepository(LocalFiles(self.root), registry, repository)

    def plan_publish(self, registry: str, repository: str, records: list[DigestRecord],
                     tag: str | None, digest: Digest, when: datetime, source: str) -> IndexChange:
        """Record `records` and, with a tag, that it points at `digest` from `when`."""
        change = self._publish(registry, repository, records, tag, digest, when, source)
        change.tag = tag
        change.records = {str(r.digest): r for r in records}
        return change

    def _publish(self, registry: str, repository: str, records: list[DigestRecord],
                 tag: str | None, digest: Digest, when: datetime, source: str) -> IndexChange:
        stored = self.stored(registry, repository)
        legacy = stored.legacy()
        if legacy is not None:
            for record in records:
                legacy.record_image(record)
            if tag:
                legacy.move_tag(tag, digest, when, source)
            return self._converted(legacy, tag)
        change = IndexChange(self.root, registry, repository)
        for record in records:
            old = stored.record(record.digest)
            if old is None or old.collected is not None:  # published again: its tree is back
                change.add(paths.record_file(registry, repository, record.digest),
                           record_json(registry, repository, record))
        if tag:
            self._event(change, stored, tag, digest, as_utc(when), source, PUSH)
        return self._marked(change, stored)

    def plan_collected(self, registry: str, repository: str, digests: list[Digest],
                       when: datetime) -> IndexChange:
        """Record that garbage collection removed the trees of `digests` at `when`: their
        records are rewritten with `collected` (the one change to a record after it is written;
        a mirror caching records for long shows it late). Histories are untouched."""
        stored = self.stored(registry, repository)
        legacy = stored.legacy()
        if legacy is not None:
            for digest in digests:
                legacy.mark_collected(digest, when)
            return self._converted(legacy, None)
        change = IndexChange(self.root, registry, repository)
        for digest in digests:
            record = stored.record(digest)
            if record is not None and record.collected is None:
                change.add(paths.record_file(registry, repository, digest),
                           record_json(registry, repository, replace(record, collected=as_utc(when))))
        return change

    def plan_untag(self, registry: str, repository: str, tag: str, when: datetime,
                   source: str) -> IndexChange:
        """Record that `tag` stopped existing at `when` (nothing when it never existed)."""
        change = self._untag(registry, repository, tag, when, source)
        change.tag = tag
        return change

    def _untag(self, registry: str, repository: str, tag: str, when: datetime,
               source: str) -> IndexChange:
        stored = self.stored(registry, repository)
        legacy = stored.legacy()
        if legacy is not None:
            if not legacy.untag(tag, when, source):
                return IndexChange(self.root, registry, repository, current=legacy.current(tag))
            return self._converted(legacy, tag)
        change = IndexChange(self.root, registry, repository)
        if stored.pointer(tag) is not None:
            self._event(change, stored, tag, None, as_utc(when), source, UNTAG)
        else:
            change.current = None
        return self._marked(change, stored)

    def _event(self, change: IndexChange, stored: StoredRepository, tag: str,
               digest: Digest | None, when: datetime, source: str, kind: str) -> None:
        """Add one event to `tag`'s history: rewrite the segment it falls in (the newest,
        unless it is late), or start a new segment when the newest is full."""
        pointer = stored.pointer(tag)
        if pointer is None:
            event = TagEvent(digest, when, None, source, kind)
            self._write_tag(change, tag, 0, [event], event, TagPointer(tag, event, 1, 1, when))
            return
        number = (pointer.segments - 1 if when >= pointer.last.since
                  else stored.segment_before(tag, pointer, when, inclusive=True))
        events = stored.segment(tag, number)
        position = place_event(events, digest, when)
        change.current = pointer.digest
        if position is None:
            return
        newest = number == pointer.segments - 1 and position == len(events)
        if newest and len(events) >= paths.SEGMENT_EVENTS:
            number, events, position = number + 1, [], 0
        insert_event(events, position, digest, when, source, kind)
        last = events[-1] if newest else pointer.last
        self._write_tag(change, tag, number, events, events[position], TagPointer(
            tag, replace(last, until=None), max(pointer.segments, number + 1), pointer.events + 1,
            min(pointer.first, when)))

    def _write_tag(self, change: IndexChange, tag: str, number: int, events: list[TagEvent],
                   new: TagEvent, pointer: TagPointer) -> None:
        registry, repository = change.registry, change.repository
        change.add(paths.segment_file(registry, repository, tag, number),
                   segment_json(registry, repository, tag, number, events),
                   segment_json(registry, repository, tag, number, [new]))
        change.add(paths.pointer_file(registry, repository, tag),
                   pointer_json(registry, repository, pointer))
        change.tag_changed = True
        change.current = pointer.digest

    def _marked(self, change: IndexChange, stored: StoredRepository) -> IndexChange:
        if change.writes and not stored.exists:
            change.add(*marker(change.registry, change.repository))
        return change

    def _converted(self, index: RepositoryIndex, tag: str | None) -> IndexChange:
        change = convert(self.root, index)
        change.current = index.current(tag) if tag else None
        change.tag_changed = bool(tag)
        return change


def marker(registry: str, repository: str) -> tuple[str, dict[str, Any]]:
    """The file that says a repository is in version 2 (written last when converting)."""
    return (paths.marker_file(registry, repository), header(registry, repository))


def convert(root: Path, index: RepositoryIndex) -> IndexChange:
    """Every version-2 file of a whole repository: records, then each tag's segments and
    pointer, then the marker, so that a reader of the half-written result is never misled."""
    registry, repository = index.registry, index.repository
    change = IndexChange(root, registry, repository)
    for key in sorted(index.digests):
        record = index.digests[key]
        change.add(paths.record_file(registry, repository, record.digest),
                   record_json(registry, repository, record))
    for tag in sorted(index.tags):
        events = index.tags[tag]
        if not events:
            continue
        chunks = [events[i:i + paths.SEGMENT_EVENTS]
                  for i in range(0, len(events), paths.SEGMENT_EVENTS)]
        for number, chunk in enumerate(chunks):
            change.add(paths.segment_file(registry, repository, tag, number),
                       segment_json(registry, repository, tag, number, chunk))
        pointer = TagPointer(tag, replace(events[-1], until=None), len(chunks), len(events),
                             events[0].since)
        change.add(paths.pointer_file(registry, repository, tag),
                   pointer_json(registry, repository, pointer))
    change.add(*marker(registry, repository))
    return change
