"""The CVMFS publisher against a stand-in cvmfs_server that enforces the transaction rules.

The stand-in logs every command line; the tests assert them exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from ligoenv.oci.digest import Digest
from ligoenv.oci.platform import Platform
from ligoenv.store.errors import ConfigError, PublishError
from ligoenv_server.publishers.cvmfs import CvmfsPublisher
from ligoenv_server.publishers.factory import make_publisher
from testbed.images import TAG_FILE
from testbed.indexfiles import read_index
from testbed.staging import REGISTRY, REPOSITORY, T0, stage

FAKE = Path(__file__).resolve().parents[2] / "testbed" / "fake_cvmfs_server"
REPO = "singularity.opensciencegrid.org"
HOUR = timedelta(hours=1)


@dataclass
class Cvmfs:
    root: Path  # like /cvmfs
    state: Path
    staging: Path

    @property
    def mount(self) -> Path:
        return self.root / REPO

    def run(self, *args: str, node: str = "node1") -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "FAKE_CVMFS_NODE": node}
        return subprocess.run([str(FAKE), *args], capture_output=True, text=True, env=env,
                              timeout=30, check=False)

    def log(self) -> list[list[str]]:
        """The command lines since the last call."""
        path = self.state / "log"
        lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        path.write_text("")
        return lines

    def in_transaction(self) -> bool:
        return "in transaction" in self.run("list").stdout

    def publisher(self, gateway: bool = False, **kwargs: object) -> CvmfsPublisher:
        return CvmfsPublisher(REPO, mount=self.mount, staging_root=self.staging,
                              cvmfs_server=str(FAKE), gateway=gateway,
                              clock=lambda: T0 + 10 * HOUR, **kwargs)  # type: ignore[arg-type]


@pytest.fixture()
def cvmfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cvmfs]:
    setup = Cvmfs(tmp_path / "cvmfs", tmp_path / "state", tmp_path / "staging")
    setup.root.mkdir()
    monkeypatch.setenv("FAKE_CVMFS_ROOT", str(setup.root))
    monkeypatch.setenv("FAKE_CVMFS_STATE", str(setup.state))
    monkeypatch.delenv("FAKE_CVMFS_FAIL", raising=False)
    assert setup.run("mkfs", REPO).returncode == 0
    setup.log()
    yield setup


def image_lease(digest: Digest) -> str:
    return f"{REPO}/.images/{digest.hex[:2]}/{digest.hex}"


def content(path: Path) -> str:
    return (path / TAG_FILE).read_text().strip()


def test_publish_runs_two_transactions(cvmfs: Cvmfs) -> None:
    pub = cvmfs.publisher()
    image = stage(pub, "v1")
    outcome = pub.publish(image)
    assert cvmfs.log() == [["list"], ["transaction", REPO], ["publish", REPO],
                           ["transaction", REPO], ["publish", REPO]]
    assert outcome.new_images == (image.top_digest,) and outcome.tag_moved
    assert content(cvmfs.mount / REGISTRY / f"{REPOSITORY}:nightly") == "v1"
    tree = cvmfs.mount / outcome.paths["linux/amd64"]
    assert (tree / ".cvmfscatalog").exists() and (tree / "bin/sh").is_symlink()
    index = read_index(cvmfs.mount, REGISTRY, REPOSITORY)
    assert index is not None and index.current("nightly") == image.top_digest
    assert not cvmfs.in_transaction()
    assert list(cvmfs.staging.glob("stage-*")) == []


def test_same_digest_needs_no_transaction_and_a_new_tag_one(cvmfs: Cvmfs) -> None:
    pub = cvmfs.publisher()
    pub.publish(stage(pub, "v1"))
    cvmfs.log()
    outcome = pub.publish(stage(pub, "v1", when=T0 + HOUR))
    assert cvmfs.log() == [["list"]]
    assert not outcome.tag_moved and outcome.new_images == ()
    pub.publish(stage(pub, "v1", tag="stable", when=T0 + HOUR))
    assert cvmfs.log() == [["list"], ["transaction", REPO], ["publish", REPO]]
    assert content(cvmfs.mount / REGISTRY / f"{REPOSITORY}:stable") == "v1"


def test_failed_publish_is_aborted_and_rolled_back(cvmfs: Cvmfs,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pub = cvmfs.publisher()
    monkeypatch.setenv("FAKE_CVMFS_FAIL", "publish")
    with pytest.raises(PublishError, match=f"cvmfs_server publish {REPO} failed") as caught:
        pub.publish(stage(pub, "v1"))
    assert caught.value.temporary
    assert cvmfs.log() == [["list"], ["transaction", REPO], ["publish", REPO],
                           ["abort", "-f", REPO]]
    assert list(cvmfs.mount.iterdir()) == []  # the abort rolled the copy back
    assert not cvmfs.in_transaction()
    assert list(cvmfs.staging.glob("stage-*")) == []


def test_failure_while_writing_is_aborted(cvmfs: Cvmfs) -> None:
    pub = cvmfs.publisher()
    image = stage(pub, "v1")
    tree = image.platforms[0].tree
    assert tree is not None
    (tree / "unreadable").symlink_to("x")
    os.rename(tree, tree.with_name("moved-away"))  # cp -a will fail half way in
    with pytest.raises(PublishError):
        pub.publish(image)
    assert cvmfs.log() == [["list"], ["transaction", REPO], ["abort", "-f", REPO]]
    assert list(cvmfs.mount.iterdir()) == []


def test_stale_transaction_of_a_crashed_worker_is_aborted_first(cvmfs: Cvmfs) -> None:
    # A worker died inside a transaction, half way through copying an image.
    assert cvmfs.run("transaction", REPO).returncode == 0
    (cvmfs.mount / ".images/ab").mkdir(parents=True)
    (cvmfs.mount / ".images/ab/partial").write_text("half")
    cvmfs.log()

    pub = cvmfs.publisher()
    pub.publish(stage(pub, "v1"))
    assert cvmfs.log() == [["list"], ["abort", "-f", REPO], ["transaction", REPO],
                           ["publish", REPO], ["transaction", REPO], ["publish", REPO]]
    assert not (cvmfs.mount / ".images/ab/partial").exists()


def test_partial_tree_of_a_stale_transaction_is_never_indexed(cvmfs: Cvmfs) -> None:
    pub = cvmfs.publisher()
    image = stage(pub, "v1")
    digest = image.top_digest
    # A crashed transaction left a partial tree of this very image: has_image() believes it.
    assert cvmfs.run("transaction", REPO).returncode == 0
    (cvmfs.mount / ".images" / digest.hex[:2] / digest.hex).mkdir(parents=True)
    assert pub.has_image(digest)
    skipped = stage(pub, "v1")
    with pytest.raises(PublishError, match="publish again") as caught:
        pub.publish(skipped)
    assert caught.value.temporary
    assert not pub.has_image(digest) and not cvmfs.in_transaction()
    pub.publish(stage(pub, "v1"))  # the queue's retry unpacks it for real
    assert content(cvmfs.mount / REGISTRY / f"{REPOSITORY}:nightly") == "v1"


def test_gateway_leases_subpaths(cvmfs: Cvmfs) -> None:
    pub = cvmfs.publisher(gateway=True)
    pub.publish(stage(pub, "v1"))
    # A fresh repository: each lease is on the highest path that does not exist yet.
    assert cvmfs.log() == [
        ["list"], ["transaction", f"{REPO}/.images"], ["publish", REPO],
        ["transaction", f"{REPO}/.ligoenv"], ["publish", REPO],
        ["transaction", f"{REPO}/.multiarch"], ["publish", REPO],
        ["transaction", f"{REPO}/{REGISTRY}"], ["publish", REPO]]
    assert content(cvmfs.mount / ".multiarch/linux-x86_64" / REGISTRY / f"{REPOSITORY}:nightly") == "v1"

    image = stage(pub, "v2", platforms=("linux/amd64", "linux/arm64"), when=T0 + HOUR)
    shards = {p.digest: (cvmfs.mount / ".images" / p.digest.hex[:2]).exists() for p in image.platforms}
    pub.publish(image)
    expected = [["list"]]
    for platform in image.platforms:
        digest = platform.digest
        lease = image_lease(digest) if shards[digest] else f"{REPO}/.images/{digest.hex[:2]}"
        expected += [["transaction", lease], ["publish", REPO]]
    expected += [["transaction", f"{REPO}/.ligoenv/index/_v2/{REGISTRY}/{REPOSITORY}"], ["publish", REPO],
                 ["transaction", f"{REPO}/.multiarch"], ["publish", REPO],
                 ["transaction", f"{REPO}/{REGISTRY}/lvk"], ["publish", REPO]]
    assert cvmfs.log() == expected
    assert content(cvmfs.mount / REGISTRY / f"{REPOSITORY}:nightly") == "v2"
    for arch in ("linux-amd64", "linux-aarch64"):
        assert content(cvmfs.mount / ".multiarch" / arch / REGISTRY / f"{REPOSITORY}:nightly") == "v2"


def test_gateway_busy_lease_is_a_temporary_error(cvmfs: Cvmfs) -> None:
    pub = cvmfs.publisher(gateway=True)
    pub.publish(stage(pub, "v1"))
    # Another publisher node holds the index of this repository.
    lease = f"{REPO}/.ligoenv/index/_v2/{REGISTRY}/{REPOSITORY}"
    assert cvmfs.run("transaction", lease, node="node2").returncode == 0
    cvmfs.log()
    image = stage(pub, "v2", when=T0 + HOUR)
    with pytest.raises(PublishError, match="busy") as caught:
        pub.publish(image)
    assert caught.value.temporary
    log = cvmfs.log()
    assert log[-1] == ["transaction", lease] and ["abort", "-f", REPO] not in log
    assert pub.has_image(image.top_digest)  # the image is published, just not indexed yet
    assert cvmfs.run("publish", REPO, node="node2").returncode == 0
    cvmfs.log()
    pub.publish(stage(pub, "v2", when=T0 + HOUR))  # the retry only moves the tag
    assert cvmfs.log()[1:] == [["transaction", lease], ["publish", REPO],
                               ["transaction", f"{REPO}/.multiarch"], ["publish", REPO],
                               ["transaction", f"{REPO}/{REGISTRY}/lvk"], ["publish", REPO]]


def test_untag(cvmfs: Cvmfs) -> None:
    pub = cvmfs.publisher()
    pub.publish(stage(pub, "v1"))
    cvmfs.log()
    assert pub.untag(REGISTRY, REPOSITORY, "nightly", T0 + HOUR, "webhook:harbor/h")
    assert cvmfs.log() == [["list"], ["transaction", REPO], ["publish", REPO]]
    assert not (cvmfs.mount / REGISTRY / f"{REPOSITORY}:nightly").is_symlink()
    assert not (cvmfs.mount / ".multiarch/linux-amd64" / REGISTRY / f"{REPOSITORY}:nightly").is_symlink()
    assert not pub.untag(REGISTRY, REPOSITORY, "nightly", T0 + HOUR, "webhook:harbor/h")
    assert cvmfs.log() == [["list"]]


def test_gateway_untag(cvmfs: Cvmfs) -> None:
    pub = cvmfs.publisher(gateway=True)
    pub.publish(stage(pub, "v1"))
    cvmfs.log()
    assert pub.untag(REGISTRY, REPOSITORY, "nightly", T0 + HOUR, "cli")
    assert cvmfs.log() == [["list"], ["transaction", f"{REPO}/.ligoenv/index/_v2/{REGISTRY}/{REPOSITORY}"],
                           ["publish", REPO], ["transaction", f"{REPO}/.multiarch"],
                           ["publish", REPO], ["transaction", f"{REPO}/{REGISTRY}/lvk"],
                           ["publish", REPO]]
    assert not (cvmfs.mount / ".multiarch/linux-amd64" / REGISTRY / f"{REPOSITORY}:nightly").is_symlink()


def test_missing_cvmfs_server_is_a_config_error(cvmfs: Cvmfs) -> None:
    pub = CvmfsPublisher(REPO, mount=cvmfs.mount, staging_root=cvmfs.staging,
                         cvmfs_server=str(cvmfs.root / "no-such-cvmfs_server"))
    with pytest.raises(ConfigError, match="not found"):
        pub.publish(stage(pub, "v1"))


@dataclass(frozen=True)
class Settings:
    backend: str
    root: Path
    repository: str | None = REPO
    cvmfs_server: str = str(FAKE)
    gateway: bool = True
    layout: str = "osg"
    platforms: tuple[Platform, ...] = (Platform("linux", "amd64"),)
    keep_ownership: bool = True
    chains: bool = True


def test_make_publisher_cvmfs(cvmfs: Cvmfs) -> None:
    pub = make_publisher(Settings("cvmfs", cvmfs.mount), staging_root=cvmfs.staging)
    assert isinstance(pub, CvmfsPublisher) and pub.gateway and not pub.layout.include_registry
    assert pub.keep_ownership
    pub.publish(stage(pub, "v1"))
    assert content(cvmfs.mount / f"{REPOSITORY}:nightly") == "v1"


# -- the stand-in's own rules ------------------------------------------------------------


def test_stand_in_refuses_writes_outside_a_transaction(cvmfs: Cvmfs) -> None:
    (cvmfs.mount / "sneaky").write_text("no transaction")
    result = cvmfs.run("transaction", REPO)
    assert result.returncode == 1 and "modified outside a transaction: sneaky" in result.stderr
    (cvmfs.mount / "sneaky").unlink()
    assert cvmfs.run("transaction", REPO).returncode == 0


def test_stand_in_refuses_changes_outside_the_lease(cvmfs: Cvmfs) -> None:
    assert cvmfs.run("transaction", f"{REPO}/a").returncode == 0
    (cvmfs.mount / "a").mkdir()
    (cvmfs.mount / "b").mkdir()
    result = cvmfs.run("publish", REPO)
    assert result.returncode == 1 and "changes outside the lease /a: b" in result.stderr
    assert cvmfs.run("abort", REPO).returncode == 1  # would prompt: -f is required
    assert cvmfs.run("abort", "-f", REPO).returncode == 0
    assert not (cvmfs.mount / "a").exists()
    (cvmfs.mount / "b").rmdir()
    assert cvmfs.run("publish", REPO).stderr.strip() == f"Repository {REPO} is not in a transaction"


def test_stand_in_leases(cvmfs: Cvmfs) -> None:
    assert cvmfs.run("transaction", f"{REPO}/.images/aa", node="node1").returncode == 0
    assert cvmfs.run("transaction", f"{REPO}/.images/bb", node="node2").returncode == 0
    busy = cvmfs.run("transaction", f"{REPO}/.images", node="node3")
    assert busy.returncode == 1 and "busy" in busy.stderr
    again = cvmfs.run("transaction", f"{REPO}/.images/cc", node="node1")
    assert again.stderr.strip() == f"Repository {REPO} is already in a transaction"
    (cvmfs.mount / ".images/aa").mkdir(parents=True)
    # `.images` itself is new, outside node1's lease: creating parents needs their own lease.
    assert "changes outside the lease" in cvmfs.run("publish", REPO, node="node1").stderr


def test_trees_are_sealed_before_they_are_copied_in(cvmfs: Cvmfs) -> None:
    pub = cvmfs.publisher()
    image = stage(pub, "v1")
    tree = image.platforms[0].tree
    assert tree is not None
    (tree / "opt").mkdir(mode=0o777)
    (tree / "opt").chmod(0o777)
    pub.publish(image)
    published = pub.layout.image_dir(image.top_digest)
    assert oct((published / "opt").stat().st_mode & 0o777) == oct(0o755)


def test_gc_removes_in_one_transaction_and_a_dry_run_in_none(cvmfs: Cvmfs) -> None:
    from ligoenv_server.gcpolicy import GcPolicy
    from ligoenv_server.gcrun import GarbageCollector

    pub = cvmfs.publisher()
    old = pub.publish(stage(pub, "v1"))
    pub.publish(stage(pub, "v2", when=T0 + HOUR))  # v1 is untagged from then on
    cvmfs.log()
    policy = GcPolicy(grace=timedelta(0), keep_last=1)
    later = T0 + 48 * HOUR
    GarbageCollector(pub, policy, clock=lambda: later).run(dry_run=True)
    assert cvmfs.log() == [["list"]]
    report = GarbageCollector(pub, policy, clock=lambda: later).run()
    assert cvmfs.log() == [["list"], ["transaction", REPO], ["publish", REPO]]
    assert report.removed == [old.paths["linux/amd64"]] and report.incomplete == []
    assert not (cvmfs.mount / old.paths["linux/amd64"]).exists()
    index = read_index(cvmfs.mount, REGISTRY, REPOSITORY)
    assert index is not None and index.digests[str(old.top_digest)].collected == later
    assert not cvmfs.in_transaction()


def test_gc_failure_is_aborted_and_leaves_everything(cvmfs: Cvmfs, monkeypatch: pytest.MonkeyPatch) -> None:
    from ligoenv_server.gcpolicy import GcPolicy
    from ligoenv_server.gcrun import GarbageCollector

    pub = cvmfs.publisher()
    old = pub.publish(stage(pub, "v1"))
    pub.publish(stage(pub, "v2", when=T0 + HOUR))
    cvmfs.log()
    monkeypatch.setenv("FAKE_CVMFS_FAIL", "publish")
    with pytest.raises(PublishError, match=f"publish {REPO} failed"):
        GarbageCollector(pub, GcPolicy(grace=timedelta(0), keep_last=1), clock=lambda: T0 + 48 * HOUR).run()
    assert cvmfs.log() == [["list"], ["transaction", REPO], ["publish", REPO], ["abort", "-f", REPO]]
    assert (cvmfs.mount / old.paths["linux/amd64"] / ".cvmfscatalog").exists()
    index = read_index(cvmfs.mount, REGISTRY, REPOSITORY)
    assert index is not None and index.digests[str(old.top_digest)].collected is None
