"""Garbage collection of image and layer chain trees: decide under the publishers' lock, then
mark, unlink, remove.

The order keeps the root consistent if the run is killed at any point: the index first records
each digest as collected (so nothing names its tree any more), then the digest links go, then
each tree is renamed into a trash directory (CVMFS: removed inside the one transaction of the
run), and the trash is emptied last. A later run finishes what an interrupted one left.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ligoenv.oci.digest import Digest
from ligoenv.store.completion import RUNSCRIPT
from ligoenv.store.index import RepositoryIndex, paths
from ligoenv.store.index.files import LocalFiles
from ligoenv.store.index.reader import list_repositories, load_repository
from ligoenv.store.index.writer import IndexWriter
from ligoenv.store.pins import load_pins
from ligoenv.store.publishroot import CHAINS_DIR, IMAGES_DIR, remove_symlink

from . import metrics
from .gcpolicy import GcPlan, GcPolicy, plan_gc, utc_now
from .publishers.base import Publisher

log = logging.getLogger(__name__)
KILL_ENV = "LIGOENV_TEST_GC_KILL_AFTER"  # tests only: SIGKILL this process after a named step
Step = Callable[[str], None]
# What every published tree has (ligoenv.store.completion.complete_tree): checked, not assumed.
TREE_PARTS = (".singularity.d", RUNSCRIPT, ".cvmfscatalog")


@dataclass
class GcReport:
    plan: GcPlan
    dry_run: bool
    removed: list[str] = field(default_factory=list)  # trees removed (relative to the root)
    marked: int = 0  # index records newly marked as collected
    incomplete: list[str] = field(default_factory=list)  # trees named by the index but not whole
    seconds: float = 0.0

    def counters(self) -> dict[str, int]:
        """What metrics export: trees collected, digests kept and deferred, trees incomplete."""
        return {"collected": len(self.removed), "would_collect": len(self.plan.trees),
                "kept": sum(not v.collect for v in self.plan.verdicts),
                "deferred": len(self.plan.deferred), "marked": self.marked,
                "incomplete": len(self.incomplete)}

    def summary(self) -> str:
        c = self.counters()
        done = (f"would collect {c['would_collect']} tree(s)" if self.dry_run else
                f"collected {c['collected']} tree(s), {c['marked']} digest(s) marked")
        return (f"gc: {done}; kept {c['kept']} digest(s), deferred {c['deferred']} tree(s), "
                f"incomplete {c['incomplete']} in {self.seconds:.1f} s")

    def to_json(self) -> dict[str, Any]:
        return {**self.counters(), "dry_run": self.dry_run, "seconds": round(self.seconds, 3),
                "removed": self.removed, "trees": self.plan.trees, "deferred": self.plan.deferred,
                "incomplete_trees": self.incomplete, "verdicts": [v.to_json() for v in self.plan.verdicts]}


class GarbageCollector:
    """One collection over `publisher`'s root under `policy`."""

    def __init__(self, publisher: Publisher, policy: GcPolicy, *,
                 clock: Callable[[], datetime] = utc_now, on_step: Step | None = None) -> None:
        self.publisher, self.policy = publisher, policy
        self.layout = publisher.layout
        self._clock = clock
        self._on_step = on_step or (lambda step: None)

    def run(self, *, dry_run: bool = False) -> GcReport:
        began = time.monotonic()
        with self.publisher.hold_publishes():  # no publish or untag meanwhile: none can reuse a tree
            now = self._clock()
            plan = plan_gc(self.indexes(), load_pins(self.layout.root), self.policy, now,
                           self._trees_on_disk(), self._chains_on_disk())
            report = GcReport(plan, dry_run)
            self._on_step("planned")
            if not dry_run and plan.trees:
                with self.publisher.root_change():
                    report.marked = self._mark(plan, now)
                    self._unlink()
                    report.removed = self._remove(plan)
        if not dry_run:
            self.publisher.empty_trash()
            self._on_step("emptied")
        report.incomplete = self.check_trees()
        report.seconds = time.monotonic() - began
        if not dry_run:
            _count_outcomes(report)
        return report

    # -- steps ---------------------------------------------------------------------------

    def _mark(self, plan: GcPlan, now: datetime) -> int:
        """Record in each index which digests lose their tree; history stays."""
        count, writer = 0, IndexWriter(self.layout.root)
        for (registry, repository), digests in sorted(plan.marks().items()):
            change = writer.plan_collected(registry, repository, digests, now)
            change.apply()
            count += len(digests) if change.changed else 0
            self._on_step("marked")
        return count

    def _unlink(self) -> None:
        """Remove the digest link of every collected digest: this run's, and those an
        interrupted run marked but did not get to."""
        for index in self.indexes():
            for record in index.digests.values():
                if record.collected is not None:
                    remove_symlink(self.layout.digest_link(index.registry, index.repository,
                                                           record.digest))
        self._on_step("unlinked")

    def _remove(self, plan: GcPlan) -> list[str]:
        removed = []
        for tree in plan.trees:
            self.publisher.remove_tree(tree)
            removed.append(tree)
            log.info("collected %s", tree)
            self._on_step("removed")
        return removed

    # -- reading the root ----------------------------------------------------------------

    def indexes(self) -> Iterator[RepositoryIndex]:
        """Every repository's whole index, of either version (a version-1 file is read until a
        publish converts it)."""
        root, files = self.layout.root, LocalFiles(self.layout.root)
        names: set[tuple[str, str]] = set()
        v2 = root / paths.V2_DIR
        for registry in sorted(p.name for p in v2.iterdir() if p.is_dir()) if v2.is_dir() else []:
            names.update((registry, r) for r in list_repositories(root, registry, limit=1 << 30))
        v1 = root / paths.INDEX_DIR
        for path in sorted(v1.rglob("*.json")) if v1.is_dir() else []:
            relative = path.relative_to(v1)
            if relative.parts[0] != Path(paths.V2_DIR).name and len(relative.parts) > 1:
                names.add((relative.parts[0], str(relative.with_suffix("")).split("/", 1)[1]))
        for registry, repository in sorted(names):
            index = load_repository(files, registry, repository)
            if index is not None:
                yield index

    def _trees_on_disk(self) -> list[str]:
        return sorted(_digest_trees(self.layout.root, IMAGES_DIR))

    def _chains_on_disk(self) -> dict[str, datetime]:
        """Each layer chain tree, and when it appeared (its ctime: set when it was renamed or
        cloned into place)."""
        return {path: datetime.fromtimestamp(info.st_ctime, UTC)
                for path, info in _digest_trees(self.layout.root, CHAINS_DIR).items()}

    def check_trees(self) -> list[str]:
        """Trees the index names (not collected) that are missing or lack a part every
        published tree has."""
        bad = []
        for index in self.indexes():
            for record in index.digests.values():
                tree = record.tree if record.is_manifest else None
                if tree is None:
                    continue
                missing = [part for part in TREE_PARTS if not os.path.lexists(self.layout.root / tree / part)]
                if missing:
                    bad.append(f"{index.name}@{record.digest.short}: {tree} lacks {', '.join(missing)}")
        return sorted(set(bad))


def _count_outcomes(report: GcReport) -> None:
    """ligoenv_gc_outcomes_total{result}: trees removed, digests kept, trees deferred or incomplete."""
    counts = report.counters()
    metrics.gc_outcome("removed", counts["collected"])
    metrics.gc_outcome("kept", counts["kept"])
    metrics.gc_outcome("deferred", counts["deferred"])
    metrics.gc_outcome("incomplete", counts["incomplete"])


def _digest_trees(root: Path, area: str) -> dict[str, os.stat_result]:
    """`area/xx/<hex>` trees under `root` (relative path -> lstat), never through a symlink: a
    linked `xx` directory would make gc move trees from outside the root into its trash."""
    found: dict[str, os.stat_result] = {}
    base = root / area
    if base.is_symlink() or not base.is_dir():
        return found
    with os.scandir(base) as prefixes:
        for prefix in prefixes:
            if not prefix.is_dir(follow_symlinks=False):
                continue
            with os.scandir(prefix.path) as trees:
                for tree in trees:
                    if _is_digest_hex(tree.name) and tree.is_dir(follow_symlinks=False):
                        found[f"{area}/{prefix.name}/{tree.name}"] = tree.stat(follow_symlinks=False)
    return found


def _is_digest_hex(name: str) -> bool:
    return len(name) in (64, 128) and all(c in "0123456789abcdef" for c in name)


def kill_point(value: str | None) -> Step | None:
    """For tests: `marked`, `removed:2`, ... SIGKILLs this process after that step (the Nth
    time it is reached), so a test can see what an interrupted collection leaves."""
    if not value:
        return None
    name, _, nth = value.partition(":")
    wanted, seen = int(nth or 1), {"count": 0}

    def step(reached: str) -> None:
        if reached == name:
            seen["count"] += 1
            if seen["count"] == wanted:
                os.kill(os.getpid(), signal.SIGKILL)

    return step


def digest_of_tree(tree: str) -> Digest:
    return Digest("sha256", Path(tree).name)
