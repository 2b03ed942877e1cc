"""The digest manifest index: per repository, every tag's history and every published digest.

One JSON file per repository (`schemas/index.schema.json`), written atomically by publishers and
read by the client from a publish root, a CVMFS mount or an HTTP mirror (`ligoenv.indexreader`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ligoenv.atomicfile import write_atomic
from ligoenv.errors import HistoryTooShort, NotFound, PlatformNotFound, PublishIndexError, UsageError
from ligoenv.oci.digest import Digest
from ligoenv.oci.platform import Platform

if TYPE_CHECKING:
    from ligoenv.indexreader import IndexReader
    from ligoenv.oci.manifest import ImageManifest

SCHEMA_VERSION = 1
PUSH = "push"
UNTAG = "untag"


def format_time(when: datetime, *, whole_seconds: bool = False) -> str:
    """RFC 3339 UTC with a `Z`; fractions of a second only when there are some (and wanted).

    Naive times are taken to be UTC. Lockfiles use `whole_seconds=True`.
    """
    when = as_utc(when)
    if whole_seconds:
        when = when.replace(microsecond=0)
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{when.microsecond:06d}Z" if when.microsecond else f"{text}Z"


def parse_time(text: str) -> datetime:
    """`2026-03-01`, `2026-03-01T12:00[:00]`, with `Z` or `+02:00` or neither (then UTC)."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"invalid time {text!r}: use e.g. 2026-03-01, 2026-03-01T12:00 or 2026-03-01T12:00Z "
            "(times without an offset are UTC)"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def as_utc(when: datetime) -> datetime:
    """`when` in UTC; a naive time is taken to be UTC already."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


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
    """One published digest: an index (`platforms` lists its manifests) or one manifest."""

    digest: Digest
    media_type: str
    platforms: dict[str, Digest] = field(default_factory=dict, hash=False)
    platform: str | None = None  # set for a manifest
    config: Digest | None = None
    layers: tuple[Digest, ...] = ()
    size: int | None = None
    path: str | None = None  # relative to the publish root, e.g. ".images/ab/abcd..."
    published: datetime | None = None

    @property
    def is_manifest(self) -> bool:
        return self.platform is not None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type,
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
        return out


def manifest_record(manifest: ImageManifest, platform: Platform | str) -> DigestRecord:
    """The record of one platform's manifest (path and published time are the publisher's)."""
    name = str(platform)
    return DigestRecord(digest=manifest.digest, media_type=manifest.media_type,
                        platforms={name: manifest.digest}, platform=name,
                        config=manifest.config.digest,
                        layers=tuple(layer.digest for layer in manifest.layers),
                        size=manifest.total_size)


@dataclass
class RepositoryIndex:
    """The index of one repository. Mutated by publishers, then saved with `save_index`."""

    registry: str
    repository: str
    tags: dict[str, list[TagEvent]] = field(default_factory=dict)
    digests: dict[str, DigestRecord] = field(default_factory=dict)
    updated: datetime | None = None

    @classmethod
    def empty(cls, registry: str, repository: str) -> RepositoryIndex:
        return cls(registry, repository)

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    # -- reading -------------------------------------------------------------------------

    def current(self, tag: str) -> Digest | None:
        """The digest the tag points at now; None when unknown or untagged."""
        history = self.tags.get(tag)
        return history[-1].digest if history else None

    def history(self, tag: str) -> list[TagEvent]:
        return list(self.tags.get(tag, []))

    def at(self, tag: str, when: datetime) -> Digest:
        """The digest the tag pointed at, at time `when`."""
        when = as_utc(when)
        history = self.tags.get(tag)
        if not history:
            raise NotFound(f"tag {tag!r} of {self.name} is not in the publish index")
        if when < history[0].since:
            raise HistoryTooShort(
                f"history of {self.name}:{tag} starts at {format_time(history[0].since)}, "
                f"after {format_time(when)}")
        for event in history:
            if event.covers(when):
                if event.digest is None:
                    raise NotFound(f"{self.name}:{tag} did not exist at {format_time(when)} "
                                   f"(untagged at {format_time(event.since)})")
                return event.digest
        raise NotFound(f"{self.name}:{tag} has no recorded digest at {format_time(when)}")

    def platform_digest(self, top: Digest, platform: Platform | str) -> Digest:
        """The manifest digest for `platform` under `top` (an index or a manifest)."""
        record = self.digests.get(str(top))
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
            record = self.digests.get(str(digest))
            return record.path if record is not None and platform is None else None
        record = self.digests.get(str(manifest))
        return record.path if record is not None else None

    # -- updating ------------------------------------------------------------------------

    def record_image(self, record: DigestRecord) -> None:
        """Add or refresh a digest; its first published time and known platforms are kept."""
        old = self.digests.get(str(record.digest))
        if old is not None:
            record = replace(record, platforms={**old.platforms, **record.platforms},
                             published=old.published or record.published,
                             path=record.path or old.path)
        self.digests[str(record.digest)] = record
        if record.published is not None:
            self._touch(record.published)

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
        if not history or when < history[0].since:
            # Also the case of an event delivered late, older than everything we know.
            until = history[0].since if history else None
            history.insert(0, TagEvent(digest, when, until, source, event))
        else:
            position = next(i for i in range(len(history) - 1, -1, -1)
                            if history[i].since <= when)
            old = history[position]
            if old.digest == digest:
                return False
            # Events can arrive out of order (queue retries): split the entry that covers
            # `when`, so the history stays one unbroken, time-ordered line.
            history[position] = replace(old, until=when)
            history.insert(position + 1, TagEvent(digest, when, old.until, source, event))
        self._touch(when)
        return True

    def _touch(self, when: datetime) -> None:
        if self.updated is None or when > self.updated:
            self.updated = as_utc(when)

    def prune(self, keep_untagged_days: float, now: datetime,
              log: Callable[[str], None]) -> list[Digest]:
        """Drop digests no tag has pointed at for `keep_untagged_days`; log and return each.

        Histories are kept: they still say what a tag meant, the digest is just no longer
        published. Never called implicitly.
        """
        cutoff = as_utc(now) - timedelta(days=keep_untagged_days)
        keep = {key for key, record in self.digests.items()
                if (last := self._last_tagged(record)) is None or last >= cutoff}
        keep |= {str(d) for key in keep for d in self.digests[key].platforms.values()}
        dropped = [Digest.parse(key) for key in sorted(set(self.digests) - keep)]
        for digest in dropped:
            record = self.digests.pop(str(digest))
            log(f"pruned {self.name}@{digest} ({record.path or 'no path'}): "
                f"untagged for more than {keep_untagged_days:g} days")
        if dropped:
            self._touch(now)
        return dropped

    def _last_tagged(self, record: DigestRecord) -> datetime | None:
        """When a tag last pointed at `record` (None: one does now); `published` if never."""
        ends = [e.until for events in self.tags.values() for e in events if e.digest == record.digest]
        if None in ends:
            return None
        if ends:
            return max(e for e in ends if e is not None)
        return record.published or datetime.min.replace(tzinfo=UTC)

    # -- JSON ----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "schemaVersion": SCHEMA_VERSION, "registry": self.registry,
            "repository": self.repository,
            "updated": format_time(self.updated) if self.updated else None,
            "tags": {tag: {"current": _opt_str(self.current(tag)),
                           "history": [e.to_json() for e in events]}
                     for tag, events in self.tags.items() if events},
            "digests": {key: record.to_json() for key, record in self.digests.items()},
        }

    @classmethod
    def from_json(cls, data: Any, *, validate: bool = True, what: str = "index") -> RepositoryIndex:
        """Parse an index document; PublishIndexError names the bad field.

        `validate=False` skips the JSON Schema (and the jsonschema import) for fast reads; the
        parse still checks every field it uses.
        """
        if validate:
            from ligoenv.schemas import validate as validate_schema

            validate_schema(data, "index", PublishIndexError, what)
        from ligoenv.indexjson import IndexParser

        return IndexParser(what).index(data)


def dumps_index(index: RepositoryIndex) -> str:
    """Deterministic text: sorted keys, two-space indent, trailing newline."""
    return json.dumps(index.to_json(), indent=2, sort_keys=True) + "\n"


def load_index(path: Path, *, validate: bool = False) -> RepositoryIndex | None:
    """The index at `path`, or None when there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        raise PublishIndexError(f"cannot read index {path}: {error.strerror}") from None
    return parse_index_text(text, str(path), validate=validate)


def parse_index_text(text: str, what: str, *, validate: bool = False) -> RepositoryIndex:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as error:  # ValueError: also a 5,000-digit number
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise PublishIndexError(f"{what}: not valid JSON ({reason})") from None
    return RepositoryIndex.from_json(data, validate=validate, what=what)


def save_index(path: Path, index: RepositoryIndex) -> None:
    """Write atomically: temp file in the same directory, fsync, rename, fsync the directory."""
    data = index.to_json()
    from ligoenv.schemas import validate as validate_schema

    validate_schema(data, "index", PublishIndexError, f"refusing to write index {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, dumps_index(index))


def _opt_str(value: object | None) -> str | None:
    return None if value is None else str(value)


def open_index_reader(location: str | Path) -> IndexReader:
    """A reader for a local directory (publish root, CVMFS mount) or an http(s) URL."""
    from ligoenv.indexreader import open_reader

    return open_reader(location)
