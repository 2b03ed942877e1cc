"""Reconcile the publish index with image lists: what webhooks missed becomes publish jobs.

For every list entry: expand a `*` tag through the registry's tag list, ask the registry what
each tag means now (HEAD: not counted as a pull), compare with the index's current digest and
enqueue only what differs, as jobs from `sync:<list>`. Requests are paced per registry; a
registry that cannot be reached fails its own entries only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from ligoenv.oci.digest import Digest
from ligoenv.oci.errors import LigoenvError, NotFound, RegistryUnavailable
from ligoenv.oci.reference import Reference
from ligoenv.oci.registry import RegistryClient

from . import metrics
from .config import RegistryConfig, ServerConfig
from .jobs import SYNC_SOURCE, Action, JobSink, PublishRequest
from .ratelimit import RateLimiter
from .synclists import ImageList, ListEntry

log = logging.getLogger(__name__)
T = TypeVar("T")


class TagIndex(Protocol):
    """What sync needs of the publish index: a tag's current digest, and a repository's tags."""

    def current(self, registry: str, repository: str, tag: str) -> Digest | None: ...

    def tags(self, registry: str, repository: str) -> Iterable[str]: ...


ClientFactory = Callable[[RegistryConfig, RateLimiter], RegistryClient]


class _RepositoryIndex(Protocol):
    def tag_names(self) -> list[str] | None: ...

    def current(self, tag: str) -> Digest | None: ...


class PublishedTags:
    """A TagIndex over the publisher's index files, each read once (runs are short)."""

    def __init__(self, read: Callable[[str, str], _RepositoryIndex | None]) -> None:
        self._read = read
        self._cache: dict[tuple[str, str], _RepositoryIndex | None] = {}
        self._lock = threading.Lock()

    def current(self, registry: str, repository: str, tag: str) -> Digest | None:
        index = self._index(registry, repository)
        return index.current(tag) if index is not None else None

    def tags(self, registry: str, repository: str) -> Iterable[str]:
        index = self._index(registry, repository)
        names = index.tag_names() or [] if index is not None else []
        return [tag for tag in names if index is not None and index.current(tag) is not None]

    def _index(self, registry: str, repository: str) -> _RepositoryIndex | None:
        key = (registry, repository)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = self._read(registry, repository)
            return self._cache[key]


@dataclass(frozen=True)
class Change:
    """A tag whose upstream state differs from the index: one job (or one that would be)."""

    list_name: str
    registry: str
    repository: str
    tag: str
    current: Digest | None  # in the index now
    upstream: Digest | None  # None: the tag is gone upstream (an untag)
    job_id: int | None = None
    created: bool = False  # False: dry run, or an identical job was already pending

    @property
    def action(self) -> Action:
        return Action.PUBLISH if self.upstream is not None else Action.UNTAG

    def to_json(self) -> dict[str, Any]:
        return {"list": self.list_name, "image": f"{self.registry}/{self.repository}:{self.tag}",
                "action": str(self.action), "current": _text(self.current),
                "upstream": _text(self.upstream), "job_id": self.job_id, "created": self.created}


@dataclass(frozen=True)
class Failure:
    what: str  # an entry, a tag or a list line
    error: str

    def to_json(self) -> dict[str, str]:
        return {"what": self.what, "error": self.error}


@dataclass
class SyncReport:
    """What one run saw and did; `counters()` is what metrics export."""

    lists: list[str]
    dry_run: bool = False
    seen: int = 0  # tags compared with the index
    changes: list[Change] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    requests: int = 0  # HTTP requests sent to registries
    seconds: float = 0.0

    def counters(self) -> dict[str, int]:
        return {"seen": self.seen, "changed": len(self.changes),
                "enqueued": sum(c.created for c in self.changes), "failed": len(self.failures),
                "requests": self.requests}

    def summary(self) -> str:
        c = self.counters()
        mode = " (dry run: nothing enqueued)" if self.dry_run else ""
        return (f"sync {', '.join(self.lists) or '(no lists)'}: seen {c['seen']}, changed {c['changed']}, "
                f"enqueued {c['enqueued']}, failed {c['failed']} in {self.seconds:.1f} s{mode}")

    def to_json(self) -> dict[str, Any]:
        return {**self.counters(), "lists": self.lists, "dry_run": self.dry_run,
                "seconds": round(self.seconds, 3), "changes": [c.to_json() for c in self.changes],
                "failures": [f.to_json() for f in self.failures]}


@dataclass(frozen=True)
class _Check:
    """One tag to compare, and where it came from."""

    image_list: ImageList
    entry: ListEntry
    tag: str


class _Registry:
    """One registry for one run: its client, its pace, and whether it is out of reach."""

    def __init__(self, client: RegistryClient, limiter: _CountingLimiter) -> None:
        self.client, self.limiter = client, limiter
        self.down: str | None = None  # the error that showed it unreachable


class Syncer:
    """Runs sync over lists; `sink` is the queue (None with `dry_run`)."""

    def __init__(self, config: ServerConfig, index: TagIndex, sink: JobSink | None, *,
                 client_factory: ClientFactory | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.config, self.settings = config, config.sync
        self.index, self.sink = index, sink
        self._client_factory = client_factory or paced_client
        self._clock = clock or (lambda: datetime.now(UTC))

    def run(self, lists: Sequence[ImageList], *, dry_run: bool = False) -> SyncReport:
        began = time.monotonic()
        report = SyncReport([item.name for item in lists], dry_run)
        report.failures += [Failure(p.where, p.message) for item in lists for p in item.problems]
        registries = self._registries(lists, report)
        try:
            with ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix="sync") as pool:
                checks = self._expand(pool, lists, registries, report)
                outcomes = list(pool.map(lambda c: self._check(c, registries), checks))
        finally:
            for registry in registries.values():
                registry.client.close()
        report.seen = len(checks)
        for outcome in outcomes:
            if isinstance(outcome, Failure):
                report.failures.append(outcome)
            elif outcome is not None:
                report.changes.append(outcome)
        report.changes = [self._enqueue(change, dry_run) for change in report.changes]
        report.requests = sum(r.limiter.count for r in registries.values())
        report.seconds = time.monotonic() - began
        if not dry_run:
            _count_outcomes(report, current=sum(outcome is None for outcome in outcomes))
        return report

    # -- steps ---------------------------------------------------------------------------

    def _registries(self, lists: Sequence[ImageList], report: SyncReport) -> dict[str, _Registry]:
        """A paced client per configured registry the lists name; entries of others fail."""
        out: dict[str, _Registry] = {}
        for image_list in lists:
            for entry in image_list.entries:
                if entry.registry in out:
                    continue
                registry = self.config.registry_by_host(entry.registry)
                if registry is None:
                    report.failures.append(Failure(str(entry), (
                        f"{entry.where}: registry {entry.registry} is not configured: add a "
                        f"[registries.NAME] section with host = \"{entry.registry}\"")))
                    continue
                limiter = _CountingLimiter(registry.requests_per_second
                                           or self.settings.requests_per_second)
                out[entry.registry] = _Registry(self._client_factory(registry, limiter), limiter)
        return out

    def _expand(self, pool: ThreadPoolExecutor, lists: Sequence[ImageList],
                registries: dict[str, _Registry], report: SyncReport) -> list[_Check]:
        """Every (list, entry, tag) to check, once per tag: patterns through the tag list."""
        entries = [(item, entry) for item in lists for entry in item.entries
                   if entry.registry in registries]
        expanded = list(pool.map(lambda pair: self._tags_of(pair[1], registries), entries))
        checks: list[_Check] = []
        seen: set[tuple[str, str, str]] = set()
        for (image_list, entry), tags in zip(entries, expanded, strict=True):
            if isinstance(tags, Failure):
                report.failures.append(tags)
                continue
            for tag in tags:
                key = (entry.registry, entry.repository, tag)
                if key not in seen:
                    seen.add(key)
                    checks.append(_Check(image_list, entry, tag))
            if entry.is_pattern and image_list.untag_missing:
                checks += [_Check(image_list, entry, tag) for tag in self._gone(entry, tags, seen)]
        return checks

    def _tags_of(self, entry: ListEntry, registries: dict[str, _Registry]) -> list[str] | Failure:
        if not entry.is_pattern:
            return [entry.tag]
        registry = registries[entry.registry]
        try:
            listed = self._ask(registry, lambda: registry.client.list_tags(
                entry.repository, limit=self.settings.max_tags))
        except LigoenvError as error:
            return Failure(str(entry), f"{entry.where}: {error}")
        return sorted(tag for tag in listed if entry.matches(tag))

    def _gone(self, entry: ListEntry, upstream: list[str], seen: set[tuple[str, str, str]]) -> list[str]:
        """Tags the index holds that match the pattern but the registry no longer lists."""
        listed = set(upstream)
        gone = [tag for tag in self.index.tags(entry.registry, entry.repository)
                if entry.matches(tag) and tag not in listed
                and (entry.registry, entry.repository, tag) not in seen]
        seen.update((entry.registry, entry.repository, tag) for tag in gone)
        return sorted(gone)

    def _check(self, check: _Check, registries: dict[str, _Registry]) -> Change | Failure | None:
        """Compare one tag with the index: a Change, a Failure, or None when they agree."""
        entry, registry = check.entry, registries[check.entry.registry]
        image = f"{entry.registry}/{entry.repository}:{check.tag}"
        try:
            current = self.index.current(entry.registry, entry.repository, check.tag)
            upstream = entry.digest or self._resolve(registry, entry, check.tag)
        except LigoenvError as error:
            return Failure(image, f"{entry.where}: {error}")
        if upstream is None and (current is None or not check.image_list.untag_missing):
            if current is None and not entry.is_pattern:
                return Failure(image, f"{entry.where}: tag {check.tag} not found on registry "
                               f"{entry.registry}")
            return None  # gone upstream, kept here: the list does not ask for untags
        if upstream == current:
            return None
        return Change(check.image_list.name, entry.registry, entry.repository, check.tag,
                      current, upstream)

    def _resolve(self, registry: _Registry, entry: ListEntry, tag: str) -> Digest | None:
        ref = Reference(entry.registry, entry.repository, tag)
        try:
            return self._ask(registry, lambda: registry.client.resolve(ref))
        except NotFound:
            return None

    def _ask(self, registry: _Registry, call: Callable[[], T]) -> T:
        """Run a registry call, unless the registry already proved unreachable in this run."""
        if registry.down is not None:
            raise RegistryUnavailable(f"skipped: {registry.down}")
        try:
            return call()
        except RegistryUnavailable as error:
            registry.down = registry.down or str(error)
            raise

    def _enqueue(self, change: Change, dry_run: bool) -> Change:
        if dry_run or self.sink is None:
            return change
        request = PublishRequest(registry=change.registry, repository=change.repository,
                                 tag=change.tag, digest=_text(change.upstream),
                                 source=SYNC_SOURCE + change.list_name, received_at=self._clock(),
                                 action=change.action)
        result = self.sink.enqueue(request)
        log.info("%s %s/%s:%s (job %s%s)", change.action, change.registry, change.repository,
                 change.tag, result.job_id, "" if result.created else ", already pending")
        return Change(change.list_name, change.registry, change.repository, change.tag,
                      change.current, change.upstream, result.job_id, result.created)


class _CountingLimiter(RateLimiter):
    """A RateLimiter that also counts the requests it let through (for the report)."""

    def __init__(self, rate: float) -> None:
        super().__init__(rate)
        self.count = 0
        self._count_lock = threading.Lock()

    def wait(self) -> None:
        with self._count_lock:
            self.count += 1
        super().wait()


def paced_client(registry: RegistryConfig, limiter: RateLimiter) -> RegistryClient:
    """A client for a configured registry whose every request goes through `limiter`."""
    from .registries import registry_client

    return registry_client(registry, pacer=limiter)


def _text(value: object | None) -> str | None:
    return None if value is None else str(value)


def _count_outcomes(report: SyncReport, current: int) -> None:
    """ligoenv_sync_outcomes_total{result}: per tag seen, and each failed entry or list line."""
    queued = sum(change.created for change in report.changes)
    metrics.sync_outcome("current", current)
    metrics.sync_outcome("queued", queued)
    metrics.sync_outcome("already_pending", len(report.changes) - queued)
    metrics.sync_outcome("failed", len(report.failures))
