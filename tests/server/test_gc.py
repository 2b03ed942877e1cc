"""Garbage collection on a real publish root: exactly the right trees go, pins and tags and the
policy's rules keep the rest, and a collection SIGKILLed after any step leaves the root
consistent and is finished by the next run."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ligoenv.oci.digest import Digest
from ligoenv.oci.reference import Reference
from ligoenv.oci.registry import RegistryClient
from ligoenv.store.index.files import LocalFiles
from ligoenv.store.index.reader import load_repository
from ligoenv.store.lockfile import Environment, Lockfile, PlatformPin, write_lockfile
from ligoenv.store.pins import load_pins
from ligoenv_server.config import ServerConfig, load_config
from ligoenv_server.gcpolicy import GcPolicy
from ligoenv_server.gcrun import KILL_ENV, TREE_PARTS, GarbageCollector, kill_point
from ligoenv_server.jobs import Action, PublishRequest
from ligoenv_server.pinning import pin
from ligoenv_server.pipeline import RequestProcessor
from ligoenv_server.publishers.directory import DirectoryPublisher
from ligoenv_server.publishers.factory import publisher_from
from testbed.images import build_busybox_image, push_image
from testbed.registry import RegistryProcess, free_port
from testbed.stack import SERVER, server_config

NOW = datetime(2026, 6, 1, tzinfo=UTC)
POLICY = GcPolicy(grace=timedelta(days=30), keep_last=1, keep_tags=("v*",), max_trees=100)
ORPHAN = "ab" * 32


def day(month: int, date: int) -> datetime:
    return datetime(2026, month, date, tzinfo=UTC)


class Root:
    """The publish root the tests collect, built once: which digest is which."""

    def __init__(self, config: ServerConfig, registry: RegistryProcess) -> None:
        self.config, self.registry = config, registry
        self.processor = RequestProcessor(config, publisher_from(config))
        self.digests: dict[str, Digest] = {}

    def push(self, name: str, repository: str, tag: str, when: datetime) -> Digest:
        digest = push_image(self.registry.host, repository, tag, build_busybox_image(name))
        assert self.digests.setdefault(name, digest) == digest
        self.processor.process(PublishRequest(self.registry.host, repository, tag, str(digest),
                                              "distribution:local", when))
        return digest

    def untag(self, repository: str, tag: str, when: datetime) -> None:
        """Delete the tag upstream (its manifest, in this repository), then tell the publisher."""
        with RegistryClient(self.registry.host, anonymous=True) as client:
            client.delete_manifest(repository, client.resolve(
                Reference(self.registry.host, repository, tag)))
        self.processor.process(PublishRequest(self.registry.host, repository, tag, None,
                                              "distribution:local", when, action=Action.UNTAG))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory,
          registry: RegistryProcess) -> tuple[Path, dict[str, Digest]]:
    work = tmp_path_factory.mktemp("gc")
    config = load_config(server_config(work, registry.host, free_port()))
    root = Root(config, registry)
    root.push("d1", "gc/a", "nightly", day(1, 1))  # pinned below
    root.push("d2", "gc/a", "nightly", day(3, 1))  # untagged May 27: within the grace period
    root.push("d3", "gc/a", "nightly", day(5, 27))  # tagged now
    root.push("e1", "gc/a", "dev", day(1, 1))  # untagged Feb 1: collected
    root.push("e2", "gc/a", "dev", day(2, 1))
    root.push("f1", "gc/a", "v1", day(1, 1))  # v1 deleted Feb 1, but v* keeps every digest
    root.untag("gc/a", "v1", day(2, 1))
    root.push("g1", "gc/a", "old", day(1, 1))  # shared with gc/b, which tags it now: kept
    root.untag("gc/a", "old", day(2, 1))
    root.push("g1", "gc/b", "keep", day(1, 2))
    root.push("h1", "gc/a", "gone", day(1, 1))  # shared, untagged long ago in both: collected
    root.untag("gc/a", "gone", day(2, 1))
    root.push("h1", "gc/b", "gone", day(1, 1))
    root.untag("gc/b", "gone", day(2, 1))
    lockfile = Lockfile({"paper": Environment(
        reference=f"{registry.host}/gc/a:nightly", registry=registry.host, repository="gc/a", tag="nightly",
        digest=root.digests["d1"], media_type="application/vnd.oci.image.manifest.v1+json",
        platforms={"linux/amd64": PlatformPin(root.digests["d1"])}, resolved=day(1, 2),
        source="registry")}, day(1, 2), "ligoenv test")
    write_lockfile(work / "paper.lock", lockfile)
    pin(publisher_from(config), lockfile, "paper.lock", by="alice", why="GWTC-4 paper", at=day(1, 3))
    orphan = config.publisher.root / ".images" / ORPHAN[:2] / ORPHAN
    (orphan / "etc").mkdir(parents=True)  # a tree no index names (a publish that crashed)
    return config.publisher.root, root.digests


@pytest.fixture()
def root(built: tuple[Path, dict[str, Digest]], tmp_path: Path) -> Path:
    copy = tmp_path / "publish"
    shutil.copytree(built[0], copy, symlinks=True)
    return copy


def collector(root: Path, **kw: object) -> GarbageCollector:
    return GarbageCollector(DirectoryPublisher(root), POLICY, clock=lambda: NOW, **kw)  # type: ignore[arg-type]


def trees(root: Path) -> set[str]:
    return {p.name for p in (root / ".images").glob("*/*")}


def hexes(digests: dict[str, Digest], *names: str) -> set[str]:
    return {digests[n].hex for n in names}


def assert_consistent(root: Path) -> None:
    """No index record, tag link or digest link names a missing tree; named trees are whole."""
    for index in collector(root).indexes():
        for record in index.digests.values():
            if record.is_manifest and record.tree is not None:
                assert all(os.path.lexists(root / record.tree / p) for p in TREE_PARTS), record
    for link in root.rglob("*"):
        if link.is_symlink() and (":" in link.name or "@" in link.name):
            assert link.resolve().is_dir(), f"{link} -> {os.readlink(link)}"


def test_exactly_the_right_trees_go(root: Path, built: tuple[Path, dict[str, Digest]]) -> None:
    digests = built[1]
    before = trees(root)
    report = collector(root).run()
    assert trees(root) == before - hexes(digests, "e1", "h1") - {ORPHAN}
    assert trees(root) == hexes(digests, "d1", "d2", "d3", "e2", "f1", "g1")
    assert report.counters()["collected"] == 3 and report.marked == 3 and report.incomplete == []
    reasons = {(v.repository, v.digest): v.reason for v in report.plan.verdicts}
    assert reasons[("gc/a", digests["d1"])] == "pinned by alice on 2026-01-03T00:00:00Z: GWTC-4 paper"
    assert reasons[("gc/a", digests["d2"])].startswith("last tagged 2026-05-27T00:00:00Z, within")
    assert reasons[("gc/a", digests["d3"])] == "tagged now as :nightly"
    assert reasons[("gc/a", digests["f1"])].startswith("a digest of :v1")
    assert reasons[("gc/a", digests["g1"])].startswith("its tree is shared with ")
    assert reasons[("gc/a", digests["e1"])].startswith("last tagged 2026-02-01T00:00:00Z, more than 30 days")
    host = next(iter(collector(root).indexes())).registry
    a = load_repository(LocalFiles(root), host, "gc/a")
    b = load_repository(LocalFiles(root), host, "gc/b")
    assert a is not None and b is not None
    assert a.digests[str(digests["e1"])].collected == NOW and b.digests[str(digests["h1"])].collected == NOW
    assert [str(e.digest) for e in a.history("dev")] == [str(digests["e1"]), str(digests["e2"])]
    assert a.path_of(digests["e1"], "linux/amd64") is None
    assert not (root / host / f"gc/a@{digests['e1']}").is_symlink()
    assert (root / host / "gc/a:nightly").resolve().name == digests["d3"].hex
    assert_consistent(root)
    again = collector(root).run()
    assert again.counters()["collected"] == 0
    assert trees(root) == hexes(digests, "d1", "d2", "d3", "e2", "f1", "g1")


def test_dry_run_says_what_and_why_and_removes_nothing(root: Path,
                                                       built: tuple[Path, dict[str, Digest]]) -> None:
    before = trees(root)
    report = collector(root).run(dry_run=True)
    assert trees(root) == before
    assert sorted(report.plan.trees) == sorted(f".images/{h[:2]}/{h}" for h in
                                               hexes(built[1], "e1", "h1") | {ORPHAN})
    assert report.summary().startswith("gc: would collect 3 tree(s); kept ")


def test_max_trees_bounds_a_run(root: Path, built: tuple[Path, dict[str, Digest]]) -> None:
    policy = GcPolicy(grace=POLICY.grace, keep_last=1, keep_tags=("v*",), max_trees=1)
    report = GarbageCollector(DirectoryPublisher(root), policy, clock=lambda: NOW).run()
    assert len(report.removed) == 1 and len(report.plan.deferred) == 2
    assert_consistent(root)


def _collect_and_die(root: str, point: str) -> None:
    collector(Path(root), on_step=kill_point(point)).run()


@pytest.mark.parametrize("point", ["planned", "marked:1", "marked:2", "unlinked", "removed:1",
                                   "removed:2", "removed:3", "emptied"])
def test_killed_at_any_step_leaves_a_consistent_root(root: Path, point: str,
                                                      built: tuple[Path, dict[str, Digest]]) -> None:
    child = multiprocessing.get_context("fork").Process(target=_collect_and_die, args=(str(root), point))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    assert_consistent(root)
    collector(root).run()  # the next run finishes the work
    assert trees(root) == hexes(built[1], "d1", "d2", "d3", "e2", "f1", "g1")
    assert not any((root / ".ligoenv/trash").iterdir())
    assert_consistent(root)


def test_a_publish_waits_for_collection(root: Path) -> None:
    """The publishers' lock: while gc holds it, a publish (which may reuse a tree) cannot start."""
    import fcntl

    publisher = DirectoryPublisher(root)
    with publisher.hold_publishes():
        fd = os.open(root / ".ligoenv/locks/trees.lock", os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        os.close(fd)


def test_incomplete_tree_is_reported(root: Path, built: tuple[Path, dict[str, Digest]]) -> None:
    tree = root / ".images" / built[1]["d3"].hex[:2] / built[1]["d3"].hex
    shutil.rmtree(tree / ".singularity.d")
    report = collector(root).run(dry_run=True)
    assert len(report.incomplete) == 1 and "lacks .singularity.d" in report.incomplete[0]


def test_cli_gc_json_pin_and_kill_point(root: Path, tmp_path: Path, registry: RegistryProcess,
                                        built: tuple[Path, dict[str, Digest]]) -> None:
    config = server_config(tmp_path, registry.host, free_port(),
                           publisher=f'backend = "directory"\nroot = "{root}"',
                           extra="[gc]\ngrace_days = 30\nkeep_last = 1\nkeep_tags = [\"v*\"]\n")
    lockfile = built[0].parent / "paper.lock"
    done = subprocess.run([str(SERVER), "unpin", str(lockfile), "--config", str(config)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "unpinned " in done.stdout and load_pins(root).pins == {}
    done = subprocess.run([str(SERVER), "pin", str(lockfile), "--config", str(config)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "--why" in done.stderr
    killed = subprocess.run([str(SERVER), "gc", "--config", str(config)], capture_output=True,
                            text=True, env={**os.environ, KILL_ENV: "removed:1"})
    assert killed.returncode == -signal.SIGKILL
    assert_consistent(root)
    done = subprocess.run([str(SERVER), "gc", "--config", str(config), "--json"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    # the command runs at today's date, past d2's grace too; d1 is no longer pinned; of the five
    # trees to go, one went before the kill
    assert answer["collected"] == 4 and answer["incomplete"] == 0 and answer["incomplete_trees"] == []
    assert trees(root) == hexes(built[1], "d3", "e2", "f1", "g1")


def test_verify_says_collected_and_pinned(root: Path, tmp_path: Path, registry: RegistryProcess,
                                          built: tuple[Path, dict[str, Digest]]) -> None:
    collector(root).run()
    digests = built[1]
    lockfile = tmp_path / "check.lock"
    envs = {name: Environment(f"{registry.host}/gc/a@{digests[name]}", registry.host, "gc/a", None,
                              digests[name],
                              "application/vnd.oci.image.manifest.v1+json",
                              {"linux/amd64": PlatformPin(digests[name])}, day(1, 2), "registry")
            for name in ("d1", "e1")}
    write_lockfile(lockfile, Lockfile(envs, day(1, 2)))
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "LIGOENV_INDEX": str(root)}
    done = subprocess.run([str(SERVER.parent / "ligoenv"), "verify", str(lockfile)], capture_output=True,
                          text=True, env=env)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(":", 1) for line in done.stdout.strip().splitlines())
    assert lines["ok     d1"].endswith("(index); pinned: kept (alice: GWTC-4 paper)")
    assert lines["ok     e1"].endswith("(collected on 2026-06-01T00:00:00Z; still in the registry)")


def test_outcomes_are_counted_for_metrics(root: Path, built: tuple[Path, dict[str, Digest]]) -> None:
    from ligoenv_server import metrics
    from tests.server.test_metrics import samples

    def outcome(result: str) -> float:
        return samples(metrics.exposition()).get(("ligoenv_gc_outcomes_total", (("result", result),)), 0)

    before = {r: outcome(r) for r in ("removed", "kept", "deferred", "incomplete")}
    collector(root).run(dry_run=True)  # a dry run counts nothing
    report = collector(root).run()
    counts = report.counters()
    assert {r: outcome(r) - n for r, n in before.items()} == {
        "removed": counts["collected"], "kept": counts["kept"], "deferred": counts["deferred"],
        "incomplete": counts["incomplete"]}
    assert counts["collected"] == 3
