"""Index files in tests: sample records and histories, a whole repository read back (each
file checked against its schema), a snapshot of an index directory, and the version-1 writer
kept only to make old roots."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ligoenv.oci.digest import Digest
from ligoenv.oci.manifest import OCI_INDEX, OCI_MANIFEST
from ligoenv.store.errors import PublishIndexError
from ligoenv.store.index import DigestRecord, RepositoryIndex
from ligoenv.store.index.files import LocalFiles
from ligoenv.store.index.reader import load_repository
from ligoenv.store.index.writer import schema_of
from ligoenv.store.schemas import validate
from ligoenv.store.times import format_time

REGISTRY, REPOSITORY = "127.0.0.1:5000", "lvk/lalsuite"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def digest(name: str) -> Digest:
    return Digest.of_bytes(name.encode())


def manifest(name: str, platform: str = "linux/amd64", published: datetime = T0) -> DigestRecord:
    d = digest(name)
    return DigestRecord(d, OCI_MANIFEST, {platform: d}, platform, digest(name + "/config"),
                        (digest(name + "/layer"),), 1234, f".images/{d.hex[:2]}/{d.hex}",
                        published)


def multi(name: str, platforms: dict[str, str], published: datetime = T0) -> list[DigestRecord]:
    records = [manifest(child, platform, published) for platform, child in platforms.items()]
    top = DigestRecord(digest(name), OCI_INDEX, {r.platform or "": r.digest for r in records},
                       published=published)
    return [*records, top]


def sample() -> RepositoryIndex:
    """nightly: a (day 0) -> b (day 1) -> untagged (day 2) -> c (day 3); stable: a."""
    index = RepositoryIndex.empty(REGISTRY, REPOSITORY)
    for name in "abc":
        index.record_image(manifest(name))
    index.move_tag("nightly", digest("a"), T0, "webhook:distribution/gitlab")
    index.move_tag("nightly", digest("b"), T0 + DAY, "webhook:distribution/gitlab")
    index.untag("nightly", T0 + 2 * DAY, "webhook:harbor/lab")
    index.move_tag("nightly", digest("c"), T0 + 3 * DAY, "cli")
    index.move_tag("stable", digest("a"), T0, "cli")
    return index


def read_index(root: Path, registry: str, repository: str, *,
               validate_files: bool = True) -> RepositoryIndex | None:
    """Every file of one repository's index, each checked against its JSON Schema."""
    if validate_files:
        base = root / ".ligoenv/index/_v2" / registry / repository
        for path in sorted(base.rglob("*.json")) if base.is_dir() else []:
            relative = path.relative_to(base)
            if relative.parts[0].startswith("_"):  # not a longer repository's files
                validate(json.loads(path.read_text()), schema_of(str(relative)),
                         PublishIndexError, str(path))
    return load_repository(LocalFiles(root), registry, repository)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def v1_json(index: RepositoryIndex) -> dict[str, Any]:
    """The version-1 document of `index`, as ligoenv wrote it before version 2."""
    return {
        "schemaVersion": 1, "registry": index.registry, "repository": index.repository,
        "updated": format_time(index.updated) if index.updated else None,
        "tags": {tag: {"current": str(events[-1].digest) if events[-1].digest else None,
                       "history": [e.to_json() for e in events]}
                 for tag, events in index.tags.items() if events},
        "digests": {key: record.to_json() for key, record in index.digests.items()},
    }


def save_v1(root: Path, index: RepositoryIndex) -> Path:
    """Write `index` as a version-1 file under publish root `root` (old roots in tests)."""
    path = root / ".ligoenv/index" / index.registry / f"{index.repository}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(v1_json(index), indent=2, sort_keys=True) + "\n")
    return path
