"""Index files as JSON: the version-1 single file and the version-2 files, both ways.

Parsing names the field in every error (`tags.x.history[0].from`) and checks every field it
uses, so that reads need not import jsonschema; writers validate against `schemas/` as well.
Text is deterministic: sorted keys, compact, one trailing newline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from ligoenv.oci.digest import Digest
from ligoenv.store import boundedjson
from ligoenv.store.errors import PublishIndexError
from ligoenv.store.index.model import DigestRecord, RepositoryIndex, TagEvent
from ligoenv.store.jsonfields import JsonFields, kind_name
from ligoenv.store.times import format_time

V1 = 1
V2 = 2
RECORD_FIELDS = ("mediaType", "platforms", "platform", "config", "layers", "size", "path",
                 "published", "bind_points", "collected", "chain", "chains")


@dataclass(frozen=True)
class TagPointer:
    """A tag's current pointer (version 2): its newest event and the shape of its history."""

    tag: str
    last: TagEvent  # `until` is None: it is the current state
    segments: int  # history segments 0 .. segments-1, the newest last
    events: int  # events in all segments
    first: datetime  # when the history starts

    @property
    def digest(self) -> Digest | None:
        return self.last.digest


def dumps(data: Any) -> str:
    """Deterministic JSON text for an index file."""
    return json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n"


def loads(text: bytes | str, what: str) -> Any:
    try:
        return boundedjson.loads(text)
    except boundedjson.TooDeep:
        raise PublishIndexError(f"{what}: not valid JSON (nested too deeply)") from None
    except ValueError as error:  # also bad UTF-8, a 5,000-digit number
        raise PublishIndexError(f"{what}: not valid JSON ({error})") from None


def header(registry: str, repository: str, **more: Any) -> dict[str, Any]:
    """The fields every version-2 file starts with: they say whose file it is."""
    return {"schemaVersion": V2, "registry": registry, "repository": repository, **more}


def pointer_json(registry: str, repository: str, pointer: TagPointer) -> dict[str, Any]:
    last = pointer.last
    return header(registry, repository, tag=pointer.tag, digest=_opt_str(last.digest),
                  **{"from": format_time(last.since)}, source=last.source, event=last.event,
                  segments=pointer.segments, events=pointer.events,
                  first=format_time(pointer.first))


def segment_json(registry: str, repository: str, tag: str, number: int,
                 events: list[TagEvent]) -> dict[str, Any]:
    # `until` is not stored: it is the next event's `from`, so an append rewrites nothing old.
    return header(registry, repository, tag=tag, segment=number, events=[
        {"digest": _opt_str(e.digest), "from": format_time(e.since), "source": e.source,
         "event": e.event} for e in events])


def record_json(registry: str, repository: str, record: DigestRecord) -> dict[str, Any]:
    return header(registry, repository, digest=str(record.digest), **record.to_json())


def _opt_str(value: object | None) -> str | None:
    return None if value is None else str(value)


class IndexParser(JsonFields):
    """Turns index JSON into values, naming the field in every error (`tags.x.history[0].from`)."""

    def __init__(self, what: str) -> None:
        super().__init__(what, PublishIndexError)

    def index(self, data: Any) -> RepositoryIndex:
        if not isinstance(data, dict):
            raise self.fail("(top level)", "expected an object")
        if data.get("schemaVersion") != V1:
            raise self.fail("schemaVersion", f"unsupported {data.get('schemaVersion')!r}, expected 1")
        updated = data.get("updated")
        tags = self.get(data, "tags", dict, "")
        digests = self.get(data, "digests", dict, "")
        return RepositoryIndex(
            registry=self.get(data, "registry", str, ""),
            repository=self.get(data, "repository", str, ""),
            tags={tag: self.history(entry, f"tags.{tag}.") for tag, entry in tags.items()},
            digests={str(self.digest(key, f"digests.{key}")): self.record(key, value)
                     for key, value in digests.items()},
            updated=self.time(updated, "updated") if updated is not None else None,
        )

    def history(self, entry: Any, where: str) -> list[TagEvent]:
        items = self.get(entry, "history", list, where)
        return [self.event(item, f"{where}history[{i}].") for i, item in enumerate(items)]

    def event(self, item: Any, where: str) -> TagEvent:
        digest = self.get(item, "digest", (str, type(None)), where)
        until = self.get(item, "until", (str, type(None)), where)
        return TagEvent(
            digest=self.digest(digest, f"{where}digest") if digest is not None else None,
            since=self.time(self.get(item, "from", str, where), f"{where}from"),
            until=self.time(until, f"{where}until") if until is not None else None,
            source=self.get(item, "source", str, where),
            event=self.get(item, "event", str, where),
        )

    def record(self, key: str, value: Any) -> DigestRecord:
        where = "" if isinstance(value, dict) and "schemaVersion" in value else f"digests.{key}."
        platforms = self.get(value, "platforms", dict, where)
        optional = {name: value.get(name) for name in ("platform", "config", "size", "path",
                                                       "published", "collected", "chain")}
        size = optional["size"]
        if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
            raise self.fail(f"{where}size", f"expected {kind_name(int)}")
        return DigestRecord(
            digest=self.digest(key, f"digests.{key}"),
            media_type=self.get(value, "mediaType", str, where),
            platforms={str(p): self.digest(d, f"{where}platforms.{p}") for p, d in platforms.items()},
            platform=str(optional["platform"]) if optional["platform"] is not None else None,
            config=self.digest(optional["config"], f"{where}config") if optional["config"] else None,
            layers=tuple(self.digest(d, f"{where}layers[{i}]")
                         for i, d in enumerate(value.get("layers") or [])),
            size=size,
            path=str(optional["path"]) if optional["path"] is not None else None,
            published=(self.time(optional["published"], f"{where}published")
                       if optional["published"] is not None else None),
            bind_points=self.bind_points(value.get("bind_points"), f"{where}bind_points"),
            extra={k: v for k, v in value.items() if k not in RECORD_FIELDS and k not in HEADER},
            collected=(self.time(optional["collected"], f"{where}collected")
                       if optional["collected"] is not None else None),
            chain=self.digest(optional["chain"], f"{where}chain") if optional["chain"] else None,
            chains=tuple(self.digest(d, f"{where}chains[{i}]") for i, d in
                         enumerate(self.optional(value, "chains", list, where) or [])),
        )

    def bind_points(self, items: Any, where: str) -> tuple[str, ...] | None:
        if items is None:
            return None
        if not isinstance(items, list) or not all(isinstance(i, str) and i.startswith("/") for i in items):
            raise self.fail(where, "expected a list of absolute paths")
        return tuple(items)

    # -- version 2 -----------------------------------------------------------------------

    def v2(self, data: Any, registry: str, repository: str) -> dict[str, Any]:
        """`data` as a version-2 file of `registry/repository`: a copy under another name,
        or a file of another version, must not answer."""
        if not isinstance(data, dict):
            raise self.fail("(top level)", "expected an object")
        if data.get("schemaVersion") != V2:
            raise self.fail("schemaVersion", f"unsupported {data.get('schemaVersion')!r}, expected 2")
        names = (self.get(data, "registry", str, ""), self.get(data, "repository", str, ""))
        if names != (registry, repository):
            raise PublishIndexError(f"{self.what} describes {names[0]}/{names[1]}, not "
                                    f"{registry}/{repository}: the index location is misconfigured")
        return data

    def pointer(self, data: Any, registry: str, repository: str, tag: str) -> TagPointer:
        data = self.v2(data, registry, repository)
        if self.get(data, "tag", str, "") != tag:
            raise self.fail("tag", f"{data['tag']!r} is not {tag!r}")
        segments, events = (self.count(data, "segments"), self.count(data, "events"))
        return TagPointer(tag, self.event({**data, "until": None}, ""), segments, events,
                          self.time(self.get(data, "first", str, ""), "first"))

    def segment(self, data: Any, registry: str, repository: str, tag: str,
                number: int) -> list[TagEvent]:
        """The events of one history segment, oldest first; `until` of the last is None."""
        data = self.v2(data, registry, repository)
        if self.get(data, "tag", str, "") != tag or data.get("segment") != number:
            raise self.fail("segment", f"not segment {number} of tag {tag!r}")
        items = self.get(data, "events", list, "")
        events = [self.event({"until": None, **item} if isinstance(item, dict) else item,
                             f"events[{i}].") for i, item in enumerate(items)]
        if not events:
            raise self.fail("events", "empty")
        return chain(events)

    def record_file(self, data: Any, registry: str, repository: str, digest: Digest) -> DigestRecord:
        data = self.v2(data, registry, repository)
        if self.get(data, "digest", str, "") != str(digest):
            raise self.fail("digest", f"{data['digest']!r} is not {digest}")
        return self.record(str(digest), data)

    def count(self, data: dict[str, Any], key: str) -> int:
        value = self.get(data, key, int, "")
        if value < 1:
            raise self.fail(key, "expected a positive integer")
        return int(value)


HEADER = ("schemaVersion", "registry", "repository", "digest")


def chain(events: list[TagEvent]) -> list[TagEvent]:
    """`events` (oldest first) with each `until` set to the next event's `from`."""
    return [replace(e, until=events[i + 1].since) if i + 1 < len(events) else e
            for i, e in enumerate(events)]
