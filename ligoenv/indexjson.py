"""Parsing digest manifest index JSON into values, naming the field in every error."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ligoenv.errors import PublishIndexError
from ligoenv.index import SCHEMA_VERSION, DigestRecord, RepositoryIndex, TagEvent, as_utc
from ligoenv.oci.digest import Digest


class IndexParser:
    """Turns index JSON into values, naming the field in every error (`tags.x.history[0].from`)."""

    def __init__(self, what: str) -> None:
        self.what = what

    def fail(self, where: str, message: str) -> PublishIndexError:
        return PublishIndexError(f"{self.what}: {where}: {message}")

    def get(self, obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
        if not isinstance(obj, dict) or key not in obj:
            raise self.fail(f"{where}{key}", "missing")
        value = obj[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise self.fail(f"{where}{key}", f"expected {_kind_name(kind)}")
        return value

    def digest(self, text: Any, where: str) -> Digest:
        try:
            return Digest.parse(str(text))
        except Exception:
            raise self.fail(where, f"{text!r} is not a digest") from None

    def time(self, text: Any, where: str) -> datetime:
        try:
            when = datetime.fromisoformat(str(text))
        except ValueError:
            raise self.fail(where, f"{text!r} is not an RFC 3339 time") from None
        if when.tzinfo is None:
            raise self.fail(where, f"{text!r} has no time zone (expected ...Z)")
        return as_utc(when)

    def index(self, data: Any) -> RepositoryIndex:
        if not isinstance(data, dict):
            raise self.fail("(top level)", "expected an object")
        if data.get("schemaVersion") != SCHEMA_VERSION:
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
        where = f"digests.{key}."
        platforms = self.get(value, "platforms", dict, where)
        optional = {name: value.get(name) for name in ("platform", "config", "size", "path",
                                                       "published")}
        size = optional["size"]
        if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
            raise self.fail(f"{where}size", "expected an integer")
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
        )


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", dict: "an object", list: "an array", int: "an integer",
             type(None): "null"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)
