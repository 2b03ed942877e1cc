"""The digest manifest index as values: tag events, digest records, and what a repository's
index answers (current digest, history, the digest at a time, platform images).

`RepositoryView` is what every reader returns, whatever the files behind it; `RepositoryIndex`
is a whole repository held in memory (a version-1 file, a migration, a test). The rule for
placing a tag event in history, late or not, is `place_event`: every writer uses it.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ligoenv.oci.digest import Digest
from ligoenv.oci.errors import NotFound, PlatformNotFound
from ligoenv.oci.platform import Platform
from ligoenv.store.errors import HistoryTooShort
from ligoenv.store.times import as_utc, format_time

if TYPE_CHECKING:
    from ligoenv.oci.manifest import ImageManifest

PUSH = "push"
UNTAG = "untag"


@dataclass(frozen=True)
class TagEvent:
    """The tag pointed at `digest` (None: the tag did not exist) from `since` until `until`."""

    digest: Digest | None
    since: datetime
    until: datetime | None
    source: str  # how we learned it, e.g. "webhook:distribution/gitlab" or "cli"
    event: str = PUSH  # "push" | "untag"

    def covers(self, when: datetime) -> bool:
        return self.since <= when and (self.until is None or when < self.until)

    def to_json(self) -> dict[str, Any]:
        return {"digest": _opt_str(self.digest), "from": format_time(self.since),
                "until": format_time(self.until) if self.until else None,
                "source": self.source, "event": self.event}


@dataclass(frozen=True)
class DigestRecord:
    """One published digest: an index (`platforms` lists its manifests) or one manifest.

    `extra` keeps fields this version does not know (added by newer writers) so that copying
    a record never drops them.
    """

    digest: Digest
    media_type: str
    platforms: dict[str, Digest] = field(default_factory=dict, hash=False)
    platform: str | None = None  # set for a manifest
    config: Digest | None = None
    layers: tuple[Digest, ...] = ()
    size: int | None = None
    path: str | None = None  # relative to the publish root, e.g. ".images/ab/abcd..."
    published: datetime | None = None
    # the directories made in the tree for runtime binds (absolute); None: not recorded
    bind_points: tuple[str, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    collected: datetime | None = None  # when garbage collection removed the tree at `path`
    chain: Digest | None = None  # the layer chain (OCI ChainID) the tree was cloned from
    # every layer chain of the image, bottom to top (the last is `chain`): garbage collection
    # keeps them, so that a rebuild can start from any of them; empty when not recorded
    chains: tuple[Digest, ...] = ()

    @property
    def is_manifest(self) -> bool:
        return self.platform is not None

    @property
    def tree(self) -> str | None:
        """`path` while the tree is there; None once it was collected."""
        return None if self.collected is not None else self.path

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.extra, "mediaType": self.media_type,
                               "platforms": {k: str(v) for k, v in self.platforms.items()}}
        if self.platform is not None:
            out["platform"] = self.platform
            out["layers"] = [str(layer) for layer in self.layers]
        if self.config is not None:
            out["config"] = str(self.config)
        if self.size is not None:
            out["size"] = self.size
        if self.path is not None:
            out["path"] = self.path
        if self.published is not None:
            out["published"] = format_time(self.published)
        if self.bind_points is not None:
            out["bind_points"] = list(self.bind_points)
        if self.collected is not None:
            out["collected"] = format_time(self.collected)
        if self.chain is not None:
            out["chain"] = str(self.chain)
        if self.chains:
            out["chains"] = [str(c) for c in self.chains]
        return out


def manifest_record(manifest: ImageManifest, platform: Platform | str,
                    chains: Sequence[Digest] = ()) -> DigestRecord:
    """The record of one platform's manifest (path and published time are the publisher's);
    `chains`: the layer chains its tree was built from, bottom to top."""
    name = str(platform)
    return DigestRecord(digest=manifest.digest, media_type=manifest.media_type,
                        platforms={name: manifest.digest}, platform=name,
                        config=manifest.config.digest,
                        layers=tuple(layer.digest for layer in manifest.layers),
                        size=manifest.total_size, chain=chains[-1] if chains else None,
                        chains=tuple(chains))


def place_event(events: Sequence[TagEvent], digest: Digest | None, when: datetime) -> int | None:
    """Where an event "the tag points at `digest` from `when`" goes in time-ordered `events`.

    The one rule for tag history, used by every writer: events may arrive late or twice (queue
    retries, replayed webhooks), so an event is placed by its own time, never simply appended,
    and a late event therefore never moves the current digest back. Returns the position to
    insert at, or None when the event covering `when` already says `digest` (nothing to do).
    """
    position = len(events)
    while position > 0 and events[position - 1].since > when:
        position -= 1
    if position > 0 and events[position - 1].digest == digest:
        return None
    return position


def insert_event(events: list[TagEvent], position: int, digest: Digest | None, when: datetime,
                 source: str, event: str) -> None:
    """Insert at `position` (from `place_event`), keeping `until` an unbroken line."""
    until = events[position].since if position < len(events) else None
    if position > 0:
        events[position - 1] = replace(events[position - 1], until=when)
    events.insert(position, TagEvent(digest, when, until, source, event))


def select_events(events: Sequence[TagEvent], *, limit: int | None = None,
                  since: datetime | None = None, before: datetime | None = None) -> list[TagEvent]:
    """The newest `limit` events that started in [since, before), oldest first."""
    chosen = [e for e in events if (since is None or e.since >= since)
              and (before is None or e.since < before)]
    return chosen[-limit:] if limit is not None and limit < len(chosen) else chosen


def event_at(events: Sequence[TagEvent], when: datetime, name: str, tag: str) -> Digest:
    """The digest of the event covering `when` in `events` (`name`'s `tag`, from its start)."""
    what = f"{name}:{tag}"
    if not events:
        raise NotFound(f"tag {tag!r} of {name} is not in the publish index")
    if when < events[0].since:
        raise HistoryTooShort(f"history of {what} starts at {format_time(events[0].since)}, "
                              f"after {format_time(when)}")
    for event in reversed(events):
        if event.since <= when:
            if event.digest is None:
                raise NotFound(f"{what} did not exist at {format_time(when)} "
                               f"(untagged at {format_time(event.since)})")
            return event.digest
    raise NotFound(f"{what} has no recorded digest at {format_time(when)}")  # pragma: no cover


class RepositoryView(abc.ABC):
    """What a repository's index answers. Readers fetch only the files an answer needs."""

    registry: str
    repository: str

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @abc.abstractmethod
    def current(self, tag: str) -> Digest | None:
        """The digest the tag points at now; None when unknown or untagged."""

    @abc.abstractmethod
    def has_tag(self, tag: str) -> bool:
        """True when the index has a history for `tag` (it may be untagged now)."""

    @abc.abstractmethod
    def history(self, tag: str, *, limit: int | None = None, since: datetime | None = None,
                before: datetime | None = None) -> list[TagEvent]:
        """The newest `limit` events of `tag` that started in [since, before), oldest first."""

    @abc.abstractmethod
    def at(self, tag: str, when: datetime) -> Digest:
        """The digest the tag pointed at, at time `when`."""

    @abc.abstractmethod
    def record(self, digest: Digest) -> DigestRecord | None:
        """The record of a published digest, or None."""

    def tag_names(self) -> list[str] | None:
        """Every tag's name, sorted (None when the location cannot list its directories)."""
        return None

    def platform_digest(self, top: Digest, platform: Platform | str) -> Digest:
        """The manifest digest for `platform` under `top` (an index or a manifest)."""
        record = self.record(top)
        if record is None:
            raise NotFound(f"digest {top.short} is not in the publish index of {self.name}")
        if str(platform) in record.platforms:
            return record.platforms[str(platform)]
        wanted = Platform.parse(str(platform))
        for name, digest in sorted(record.platforms.items()):
            if wanted.matches(Platform.parse(name)):
                return digest
        available = ", ".join(sorted(record.platforms)) or "none"
        raise PlatformNotFound(f"no image for platform {platform} in {self.name}@{top.short}; "
                               f"available: {available}")

    def path_of(self, digest: Digest, platform: Platform | str | None = None) -> str | None:
        """The published path (relative to the root) of `digest` for `platform` (default: host)."""
        try:
            manifest = self.platform_digest(digest, platform or Platform.host())
        except NotFound:
            record = self.record(digest)
            return record.tree if record is not None and platform is None else None
        record = self.record(manifest)
        return record.tree if record is not None else None


@dataclass
class RepositoryIndex(RepositoryView):
    """A whole repository's index in memory: a version-1 file, or one being migrated."""

    registry: str
    repository: str
    tags: dict[str, list[TagEvent]] = field(default_factory=dict)
    digests: dict[str, DigestRecord] = field(default_factory=dict)
    updated: datetime | None = None

    @classmethod
    def empty(cls, registry: str, repository: str) -> RepositoryIndex:
        return cls(registry, repository)

    def current(self, tag: str) -> Digest | None:
        history = self.tags.get(tag)
        return history[-1].digest if history else None

    def has_tag(self, tag: str) -> bool:
        return bool(self.tags.get(tag))

    def history(self, tag: str, *, limit: int | None = None, since: datetime | None = None,
                before: datetime | None = None) -> list[TagEvent]:
        return select_events(self.tags.get(tag, []), limit=limit, since=since, before=before)

    def at(self, tag: str, when: datetime) -> Digest:
        return event_at(self.tags.get(tag, []), as_utc(when), self.name, tag)

    def record(self, digest: Digest) -> DigestRecord | None:
        return self.digests.get(str(digest))

    def tag_names(self) -> list[str] | None:
        return sorted(tag for tag, events in self.tags.items() if events)

    def record_image(self, record: DigestRecord) -> None:
        """Add a digest; a digest already recorded keeps its record (records are immutable)."""
        self.digests.setdefault(str(record.digest), record)
        if record.published is not None:
            self._touch(record.published)

    def mark_collected(self, digest: Digest, when: datetime) -> bool:
        """Record that the tree of `digest` was removed at `when` (its history stays)."""
        record = self.digests.get(str(digest))
        if record is None or record.collected is not None:
            return False
        self.digests[str(digest)] = replace(record, collected=as_utc(when))
        self._touch(when)
        return True

    def last_tagged(self, record: DigestRecord) -> datetime | None:
        """When a tag last pointed at `record` (None: one does now); `published` if never."""
        ends = [e.until for events in self.tags.values() for e in events if e.digest == record.digest]
        if None in ends:
            return None
        if ends:
            return max(e for e in ends if e is not None)
        return record.published or datetime.min.replace(tzinfo=UTC)

    def move_tag(self, tag: str, digest: Digest, when: datetime, source: str) -> bool:
        """Record that `tag` points at `digest` from `when`; False when that was known already."""
        return self._set(tag, digest, as_utc(when), source, PUSH)

    def untag(self, tag: str, when: datetime, source: str) -> bool:
        """Record that `tag` stopped existing at `when`; False when it did not exist then."""
        if not self.tags.get(tag):
            return False
        return self._set(tag, None, as_utc(when), source, UNTAG)

    def _set(self, tag: str, digest: Digest | None, when: datetime, source: str,
             event: str) -> bool:
        history = self.tags.setdefault(tag, [])
        position = place_event(history, digest, when)
        if position is None:
            return False
        insert_event(history, position, digest, when, source, event)
        self._touch(when)
        return True

    def _touch(self, when: datetime) -> None:
        if self.updated is None or when > self.updated:
            self.updated = as_utc(when)


def _opt_str(value: object | None) -> str | None:
    return None if value is None else str(value)
