"""Which image trees garbage collection removes, and why each other one stays.

A pure function of the indexes, the pins, the policy and the time, so that `gc --dry-run`
shows exactly what a run would do. A digest is kept when it is pinned, tagged now, among the
last N digests of a tag, a digest of a tag matching a kept glob, or last tagged within the
grace period; a tree shared by several repositories goes only when none of them keeps it.

Layer chain trees (`.chains/`) go when no kept image was built from them: every chain its
record lists (bottom to top) stays, so that a rebuild can start from any of them. Image trees
are hard-link or template clones, never links into a chain tree, so removing a chain takes
nothing from a published image. A chain younger than CHAIN_GRACE stays too: it may belong to a
publication whose image is not indexed yet.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ligoenv.oci.digest import Digest
from ligoenv.store.index import DigestRecord, RepositoryIndex
from ligoenv.store.pins import PinSet
from ligoenv.store.publishroot import CHAINS_DIR
from ligoenv.store.times import format_time


@dataclass(frozen=True)
class GcPolicy:
    grace: timedelta = timedelta(days=30)  # after a digest was last tagged
    keep_last: int = 3  # newest digests of each existing tag's history, always kept
    keep_tags: tuple[str, ...] = ()  # globs on `tag` or `repository:tag`: every digest kept
    max_trees: int = 1000  # trees removed per run at most; the rest wait for the next run


CHAIN_GRACE = timedelta(days=1)  # a younger chain may be a publication in progress


@dataclass(frozen=True)
class Verdict:
    """What happens to one digest of one repository, and why."""

    registry: str
    repository: str
    digest: Digest
    collect: bool
    reason: str
    tree: str | None = None  # the tree it names, for a platform manifest
    chains: tuple[str, ...] = ()  # the layer chain trees its image was built from

    def to_json(self) -> dict[str, Any]:
        return {"image": f"{self.registry}/{self.repository}@{self.digest}", "collect": self.collect,
                "reason": self.reason, "tree": self.tree}


@dataclass
class GcPlan:
    verdicts: list[Verdict] = field(default_factory=list)  # every digest not yet collected
    trees: list[str] = field(default_factory=list)  # trees to remove now (relative paths)
    deferred: list[str] = field(default_factory=list)  # collectable, over this run's bound

    @property
    def collected(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.collect]

    def marks(self) -> dict[tuple[str, str], list[Digest]]:
        """The digests each repository's index records as collected in this run."""
        removing = set(self.trees)
        out: dict[tuple[str, str], list[Digest]] = {}
        for verdict in self.collected:
            if verdict.tree is None or verdict.tree in removing:
                out.setdefault((verdict.registry, verdict.repository), []).append(verdict.digest)
        return out


def plan_gc(indexes: Iterable[RepositoryIndex], pins: PinSet, policy: GcPolicy, now: datetime,
            trees_on_disk: Iterable[str] = (),
            chains_on_disk: Mapping[str, datetime] | None = None) -> GcPlan:
    """Decide every digest; `trees_on_disk` adds trees no index names any more (orphans, or
    left by a collection that was interrupted) to those removed; `chains_on_disk` (chain tree ->
    when it appeared) adds the chains no kept image needs."""
    plan = GcPlan()
    keepers: dict[str, str] = {}  # tree -> why some repository keeps it
    candidates: dict[str, Verdict] = {}  # tree -> one verdict that would collect it
    for index in indexes:
        for verdict in _repository_verdicts(index, pins, policy, now):
            plan.verdicts.append(verdict)
            if verdict.tree is None:
                continue
            if verdict.collect:
                candidates.setdefault(verdict.tree, verdict)
            else:
                keepers.setdefault(verdict.tree, f"{verdict.registry}/{verdict.repository}: {verdict.reason}")
    plan.verdicts = [_shared(v, keepers) for v in plan.verdicts]
    named = {v.tree for v in plan.verdicts if v.tree}
    removable = sorted(t for t in candidates if t not in keepers)
    orphans = sorted(set(trees_on_disk) - named - set(keepers))
    plan.trees, plan.deferred = (removable + orphans)[: policy.max_trees], \
        (removable + orphans)[policy.max_trees:]
    deferred = set(plan.deferred)
    plan.verdicts = [v if v.tree not in deferred else
                     Verdict(v.registry, v.repository, v.digest, False,
                             f"deferred: more than {policy.max_trees} trees this run", v.tree,
                             v.chains)
                     for v in plan.verdicts]
    _plan_chains(plan, chains_on_disk or {}, policy, now)
    return plan


def _plan_chains(plan: GcPlan, chains_on_disk: Mapping[str, datetime], policy: GcPolicy,
                 now: datetime) -> None:
    """Add the chain trees that no digest kept by `plan` was built from, within the run's bound."""
    needed = {chain for verdict in plan.verdicts if not verdict.collect for chain in verdict.chains}
    unused = sorted(chain for chain, since in chains_on_disk.items()
                    if chain not in needed and since <= now - CHAIN_GRACE)
    room = max(policy.max_trees - len(plan.trees), 0)
    plan.trees += unused[:room]
    plan.deferred += unused[room:]


def _shared(verdict: Verdict, keepers: dict[str, str]) -> Verdict:
    if verdict.collect and verdict.tree in keepers:
        return Verdict(verdict.registry, verdict.repository, verdict.digest, False,
                       f"its tree is shared with {keepers[verdict.tree]}", verdict.tree,
                       verdict.chains)
    return verdict


def _repository_verdicts(index: RepositoryIndex, pins: PinSet, policy: GcPolicy,
                         now: datetime) -> list[Verdict]:
    """Verdicts for every digest of one repository not yet collected: each top-level digest
    (an index, or a single manifest) decides for the platform images under it."""
    kept = _kept_by_tags(index, policy)
    named = {str(e.digest) for events in index.tags.values() for e in events if e.digest}
    tops = [r for key, r in index.digests.items() if key in named or not _under_an_index(index, key)]
    keep = {str(t.digest): _keep_reason(index, t, pins, policy, now, kept) for t in tops}
    out = []
    for key, record in sorted(index.digests.items()):
        if record.collected is not None:
            continue
        parents = [t for t in tops if key == str(t.digest) or key in {str(d) for d in t.platforms.values()}]
        keeping = [(t, keep[str(t.digest)]) for t in parents if keep[str(t.digest)] is not None]
        if pins.is_pinned(key):
            collect, reason = False, _pinned(pins, key)
        elif keeping:
            top, why = keeping[0]
            collect = False
            reason = str(why) if top.digest == record.digest else \
                f"platform image of {top.digest.short}: {why}"
        else:
            since = index.last_tagged(parents[0]) if parents else record.published
            collect = True
            reason = (f"last tagged {format_time(since or now)}, more than {_days(policy.grace)} ago; "
                      "not pinned, not among the digests kept")
        out.append(Verdict(index.registry, index.repository, record.digest, collect, str(reason),
                           record.path if record.is_manifest else None, _chain_trees(record)))
    return out


def _chain_trees(record: DigestRecord) -> tuple[str, ...]:
    """The chain trees the record's image was built from: all of them when the record lists
    them, else its top chain only (records written before chains were listed)."""
    chains = record.chains or ((record.chain,) if record.chain else ())
    return tuple(f"{CHAINS_DIR}/{chain.hex[:2]}/{chain.hex}" for chain in chains)


def _keep_reason(index: RepositoryIndex, record: DigestRecord, pins: PinSet, policy: GcPolicy,
                 now: datetime, kept: dict[str, str]) -> str | None:
    """Why the top-level digest `record` (and so every platform image under it) stays; None:
    nothing keeps it."""
    digests = [str(record.digest), *(str(d) for d in record.platforms.values())]
    for key in digests:
        if pins.is_pinned(key):
            return _pinned(pins, key)
    tags = sorted(tag for tag in index.tags if index.current(tag) == record.digest)
    if tags:
        return "tagged now as " + ", ".join(f":{t}" for t in tags)
    if str(record.digest) in kept:
        return kept[str(record.digest)]
    since = index.last_tagged(record)
    if since is None or since > now - policy.grace:
        return f"last tagged {format_time(since or now)}, within the grace period of {_days(policy.grace)}"
    return None


def _kept_by_tags(index: RepositoryIndex, policy: GcPolicy) -> dict[str, str]:
    """Digests kept by the tag rules: the newest N of each tag that exists now (a deleted tag
    keeps nothing beyond the grace period), every one of tags matching a glob."""
    kept: dict[str, str] = {}
    for tag, events in sorted(index.tags.items()):
        newest_first: list[str] = []
        for event in reversed(events):
            if event.digest is not None and str(event.digest) not in newest_first:
                newest_first.append(str(event.digest))
        if any(fnmatch.fnmatchcase(tag, glob) or fnmatch.fnmatchcase(f"{index.repository}:{tag}", glob)
               for glob in policy.keep_tags):
            for key in newest_first:
                kept.setdefault(key, f"a digest of :{tag}, whose every digest is kept (keep_tags)")
        for key in newest_first[: policy.keep_last] if index.current(tag) is not None else []:
            kept.setdefault(key, f"one of the last {policy.keep_last} digests of :{tag}")
    return kept


def _under_an_index(index: RepositoryIndex, key: str) -> bool:
    """True for a platform manifest that some index (multi-platform) record of `index` lists."""
    return any(key in {str(d) for d in record.platforms.values()} and str(record.digest) != key
               and not record.is_manifest for record in index.digests.values())


def _pinned(pins: PinSet, key: str) -> str:
    first = pins.of(key)[0]
    return f"pinned by {first.by} on {format_time(first.at)}: {first.why}"


def _days(span: timedelta) -> str:
    days = span.total_seconds() / 86400
    return f"{days:g} day{'' if days == 1 else 's'}"


def utc_now() -> datetime:
    return datetime.now(UTC)
