"""The directory publisher: trees, index and links; idempotence; history; crashes between steps."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from ligoenv.oci.digest import Digest
from ligoenv.oci.errors import NotFound
from ligoenv.oci.platform import Platform
from ligoenv.store.errors import ConfigError, PublishError
from ligoenv.store.index import open_index_reader
from ligoenv_server.publishers.base import ChainStep
from ligoenv_server.publishers.directory import DirectoryPublisher
from ligoenv_server.publishers.factory import make_publisher
from testbed.images import TAG_FILE
from testbed.indexfiles import read_index, snapshot
from testbed.staging import REGISTRY, REPOSITORY, T0, stage, tree_files

HOUR = timedelta(hours=1)
STEPS = ("synced", "images", "digest-links", "index", "tag-link")


class Crash(Exception):
    """Stands for the worker dying between two steps."""


def publisher(root: Path, **kwargs: object) -> DirectoryPublisher:
    return DirectoryPublisher(root, clock=lambda: T0 + 10 * HOUR, **kwargs)  # type: ignore[arg-type]


def link_content(link: Path) -> str:
    return (link / TAG_FILE).read_text().strip()


def test_publish_tree_index_and_links(tmp_path: Path) -> None:
    pub = publisher(tmp_path)
    image = stage(pub, "v1")
    digest = image.top_digest
    outcome = pub.publish(image)

    tree = tmp_path / ".images" / digest.hex[:2] / digest.hex
    assert outcome.new_images == (digest,) and outcome.reused_images == ()
    assert outcome.tag_moved and outcome.paths == {"linux/amd64": f".images/{digest.hex[:2]}/{digest.hex}"}
    assert (tree / "bin/busybox").is_file() and (tree / ".cvmfscatalog").exists()
    assert (tree / ".singularity.d/runscript").exists()
    assert oct((tree).stat().st_mode & 0o777) == oct(0o755)

    tag_link = tmp_path / REGISTRY / f"{REPOSITORY}:nightly"
    digest_link = tmp_path / REGISTRY / f"{REPOSITORY}@{digest}"
    assert os.readlink(tag_link) == f"../../.images/{digest.hex[:2]}/{digest.hex}"
    assert link_content(tag_link) == "v1" and link_content(digest_link) == "v1"

    index = read_index(tmp_path, REGISTRY, REPOSITORY)
    assert outcome.index_path == tmp_path / ".ligoenv/index/_v2" / REGISTRY / REPOSITORY
    assert index is not None and index.current("nightly") == digest
    record = index.digests[str(digest)]
    assert record.platform == "linux/amd64" and record.platforms == {"linux/amd64": digest}
    assert record.path == outcome.paths["linux/amd64"] and record.published == T0 + 10 * HOUR
    assert record.size is not None and record.size > 0 and len(record.layers) == 2
    assert [(e.digest, e.since, e.until, e.source) for e in index.history("nightly")] == [
        (digest, T0, None, "webhook:distribution/test")]
    assert list((tmp_path / ".ligoenv/staging").iterdir()) == []


def test_same_digest_again_only_moves_tags(tmp_path: Path) -> None:
    pub = publisher(tmp_path)
    first = pub.publish(stage(pub, "v1"))
    index_path = first.index_path
    before = snapshot(index_path)

    again = stage(pub, "v1", when=T0 + HOUR)
    assert again.platforms[0].tree is None  # the worker skips the unpack: has_image() said so
    outcome = pub.publish(again)
    assert not outcome.tag_moved and outcome.new_images == ()
    assert outcome.reused_images == (first.top_digest,)
    assert snapshot(index_path) == before  # nothing changed at all

    stable = pub.publish(stage(pub, "v1", tag="stable", when=T0 + 2 * HOUR))
    assert stable.tag_moved
    index = read_index(tmp_path, REGISTRY, REPOSITORY)
    assert index is not None and index.current("stable") == index.current("nightly")
    assert link_content(tmp_path / REGISTRY / f"{REPOSITORY}:stable") == "v1"


def test_new_digest_to_the_same_tag_keeps_history(tmp_path: Path) -> None:
    pub = publisher(tmp_path)
    v1 = pub.publish(stage(pub, "v1")).top_digest
    v2 = pub.publish(stage(pub, "v2", when=T0 + 24 * HOUR, source="cli")).top_digest

    index = read_index(tmp_path, REGISTRY, REPOSITORY)
    assert index is not None
    assert [(e.digest, e.since, e.until, e.source) for e in index.history("nightly")] == [
        (v1, T0, T0 + 24 * HOUR, "webhook:distribution/test"),
        (v2, T0 + 24 * HOUR, None, "cli")]
    assert index.at("nightly", T0 + HOUR) == v1 and index.current("nightly") == v2
    assert link_content(tmp_path / REGISTRY / f"{REPOSITORY}:nightly") == "v2"
    assert link_content(tmp_path / REGISTRY / f"{REPOSITORY}@{v1}") == "v1"  # never moves


def test_late_event_does_not_move_the_tag_back(tmp_path: Path) -> None:
    pub = publisher(tmp_path)
    pub.publish(stage(pub, "v2", when=T0 + 2 * HOUR))
    late = pub.publish(stage(pub, "v1", when=T0 + HOUR))  # delivered after v2, happened before
    index = read_index(tmp_path, REGISTRY, REPOSITORY)
    assert index is not None and index.at("nightly", T0 + HOUR) == late.top_digest
    assert link_content(tmp_path / REGISTRY / f"{REPOSITORY}:nightly") == "v2"


def test_multi_platform_records(tmp_path: Path) -> None:
    pub = publisher(tmp_path)
    image = stage(pub, "v1", platforms=("linux/amd64", "linux/arm64"),
                  extra_index_platforms=("linux/ppc64le",))
    outcome = pub.publish(image)
    amd64, arm64 = (p.digest for p in image.platforms)
    assert set(outcome.new_images) == {amd64, arm64}

    index = read_index(tmp_path, REGISTRY, REPOSITORY)
    assert index is not None
    top = index.digests[str(image.top_digest)]
    assert top.platform is None and top.path is None
    assert set(top.platforms) == {"linux/amd64", "linux/arm64", "linux/ppc64le"}
    assert index.platform_digest(image.top_digest, "linux/arm64") == arm64
    arm64_path = f".images/{arm64.hex[:2]}/{arm64.hex}"
    assert index.path_of(image.top_digest, Platform("linux", "arm64")) == arm64_path
    assert index.path_of(image.top_digest, "linux/ppc64le") is None  # listed, not published
    # The tag and the index digest name the default (first) platform's image.
    for name in ("nightly", f"@{image.top_digest}"):
        link = tmp_path / REGISTRY / (f"{REPOSITORY}:{name}" if ":" not in name else REPOSITORY + name)
        assert os.readlink(link).endswith(amd64.hex)
    assert os.readlink(tmp_path / REGISTRY / f"{REPOSITORY}@{arm64}").endswith(arm64.hex)

    reader = open_index_reader(tmp_path)
    assert reader.image_path(REGISTRY, REPOSITORY, image.top_digest, "linux/arm64") == (
        tmp_path / ".images" / arm64.hex[:2] / arm64.hex)


def test_publish_by_digest_only(tmp_path: Path) -> None:
    pub = publisher(tmp_path)
    outcome = pub.publish(stage(pub, "v1", tag=None))
    assert not outcome.tag_moved
    assert link_content(tmp_path / REGISTRY / f"{REPOSITORY}@{outcome.top_digest}") == "v1"
    index = read_index(tmp_path, REGISTRY, REPOSITORY)
    assert index is not None and index.tags == {} and str(outcome.top_digest) in index.digests


def test_osg_layout(tmp_path: Path) -> None:
    pub = publisher(tmp_path, include_registry=False)
    outcome = pub.publish(stage(pub, "v1"))
    assert link_content(tmp_path / f"{REPOSITORY}:nightly") == "v1"
    assert not (tmp_path / REGISTRY).exists()
    assert outcome.index_path == tmp_path / ".ligoenv/index/_v2" / REGISTRY / REPOSITORY


def test_untag_keeps_the_image_and_the_history(tmp_path: Path) -> None:
    pub = publisher(tmp_path)
    v1 = pub.publish(stage(pub, "v1")).top_digest
    assert pub.untag(REGISTRY, REPOSITORY, "nightly", T0 + HOUR, "webhook:harbor/h")
    assert not pub.untag(REGISTRY, REPOSITORY, "nightly", T0 + 2 * HOUR, "webhook:harbor/h")
    assert not (tmp_path / REGISTRY / f"{REPOSITORY}:nightly").is_symlink()
    assert pub.has_image(v1)
    index = pub.read_index(REGISTRY, REPOSITORY)
    assert index is not None and index.current("nightly") is None
    assert [(e.digest, e.event) for e in index.history("nightly")] == [(v1, "push"), (None, "untag")]
    with pytest.raises(NotFound, match="did not exist"):
        index.at("nightly", T0 + 2 * HOUR)


@pytest.mark.parametrize("step", STEPS)
def test_crash_between_steps_leaves_no_partial_image(tmp_path: Path, step: str) -> None:
    def crash_at(name: str) -> None:
        if name == step:
            raise Crash(name)

    pub = publisher(tmp_path)
    v1 = pub.publish(stage(pub, "v1")).top_digest
    expected_tree = tree_files(tmp_path / ".images" / v1.hex[:2] / v1.hex)

    crashing = publisher(tmp_path, on_step=crash_at)
    with pytest.raises(Crash):
        crashing.publish(stage(crashing, "v2", when=T0 + HOUR))

    # Only complete trees in .images, whatever the step.
    for tree in (tmp_path / ".images").glob("*/*"):
        assert tree_files(tree) == expected_tree
    index = read_index(tmp_path, REGISTRY, REPOSITORY)
    assert index is not None
    for record in index.digests.values():  # the index never names a missing tree
        assert record.path is None or (tmp_path / record.path).is_dir()
    tag_link = tmp_path / REGISTRY / f"{REPOSITORY}:nightly"
    if STEPS.index(step) < STEPS.index("tag-link"):
        assert link_content(tag_link) == "v1"
    if STEPS.index(step) < STEPS.index("index"):
        assert index.current("nightly") == v1
    assert list((tmp_path / ".ligoenv/staging").iterdir()) == []

    # The queue retries the job: it converges.
    retry = pub.publish(stage(pub, "v2", when=T0 + HOUR))
    assert link_content(tag_link) == "v2"
    assert pub.read_index(REGISTRY, REPOSITORY).current("nightly") == retry.top_digest  # type: ignore[union-attr]


def test_stale_staging_is_cleaned_unless_a_live_worker_holds_it(tmp_path: Path) -> None:
    pub = publisher(tmp_path)
    dead, live = pub.staging_dir(), pub.staging_dir()
    (dead / "half-unpacked").write_text("x")
    # A crash: the process is gone, its locks released; another process still holds `live`.
    for path in (dead, live):
        os.close(pub.staging._locks.pop(path))
    holder = os.open(str(live) + ".lock", os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    old = (T0 - 24 * HOUR).timestamp()
    for path in (dead, live):
        os.utime(path, (old, old))
    try:
        fresh = publisher(tmp_path, stale_after=timedelta(hours=6))  # cleans on start
        assert not dead.exists() and live.exists()
        recent = fresh.staging_dir()
        assert fresh.staging.clean() == [] and recent.exists()
    finally:
        os.close(holder)


def test_concurrent_publishers_do_not_lose_index_updates(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        pub = publisher(tmp_path)
        try:
            for i in range(3):
                pub.publish(stage(pub, f"w{n}-{i}", tag=f"t{n}-{i}", when=T0 + i * HOUR))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    index = read_index(tmp_path, REGISTRY, REPOSITORY)
    assert index is not None and sorted(index.tags) == sorted(
        f"t{n}-{i}" for n in range(3) for i in range(3))
    assert len(index.digests) == 9


def test_a_directory_in_place_of_a_link_is_an_error(tmp_path: Path) -> None:
    (tmp_path / REGISTRY / f"{REPOSITORY}:nightly").mkdir(parents=True)
    pub = publisher(tmp_path)
    with pytest.raises(PublishError, match="not a symlink"):
        pub.publish(stage(pub, "v1"))


def test_invalid_names_are_refused(tmp_path: Path) -> None:
    pub = publisher(tmp_path)
    with pytest.raises(PublishError, match="invalid name"):
        pub.publish(stage(pub, "v1", repository="lvk/../../etc"))
    assert not (tmp_path / "etc").exists()


@dataclass(frozen=True)
class Settings:
    backend: str
    root: Path
    repository: str | None = None
    cvmfs_server: str = "cvmfs_server"
    gateway: bool = False
    layout: str = "registry"
    platforms: tuple[Platform, ...] = (Platform("linux", "amd64"),)
    keep_ownership: bool = False
    chains: bool = True


def test_make_publisher(tmp_path: Path) -> None:
    directory = make_publisher(Settings("directory", tmp_path, layout="osg"))
    assert isinstance(directory, DirectoryPublisher) and not directory.layout.include_registry
    with pytest.raises(ConfigError, match="choose one of directory, cvmfs"):
        make_publisher(Settings("s3", tmp_path))
    with pytest.raises(ConfigError, match="repository"):
        make_publisher(Settings("cvmfs", tmp_path))


def test_osg_links_of_one_registry_are_safe_from_another(tmp_path: Path) -> None:
    from dataclasses import replace

    pub = publisher(tmp_path, include_registry=False)
    first = pub.publish(stage(pub, "v1"))
    link = tmp_path / f"{REPOSITORY}:nightly"
    assert link_content(link) == "v1"

    other = replace(stage(pub, "from-b", when=T0 + HOUR), registry="registry.b.example")
    with pytest.raises(PublishError, match=f"{REPOSITORY}:nightly is published from {REGISTRY}"):
        pub.publish(other)
    assert link_content(link) == "v1"
    assert not pub.has_image(other.top_digest)  # refused before anything was placed
    assert not pub.read_index("registry.b.example", REPOSITORY).exists

    per_arch = tmp_path / ".multiarch" / "linux-amd64" / f"{REPOSITORY}:nightly"
    assert link_content(per_arch) == "v1"
    assert not pub.untag("registry.b.example", REPOSITORY, "nightly", T0 + 2 * HOUR, "test")
    assert link_content(link) == "v1" and link_content(per_arch) == "v1"
    assert pub.untag(REGISTRY, REPOSITORY, "nightly", T0 + 2 * HOUR, "test")
    assert not os.path.lexists(link)
    assert first.tag_moved


def test_a_platform_name_the_index_cannot_hold_publishes_nothing(tmp_path: Path) -> None:
    from dataclasses import replace

    pub = publisher(tmp_path)
    image = stage(pub, "v1")
    odd = replace(image, platforms=(replace(image.platforms[0], platform="Linux/AMD64"),))
    with pytest.raises(PublishError, match="'Linux/AMD64' is not in canonical form"):
        pub.publish(odd)
    assert not (tmp_path / ".images").exists()
    assert not (tmp_path / REGISTRY).exists()
    assert list((tmp_path / ".ligoenv/staging").iterdir()) == []


@pytest.mark.parametrize("first", ["lab/app.json/x", "lab/app.lock/x"])
def test_repository_names_never_collide_with_index_or_lock_files(tmp_path: Path, first: str) -> None:
    pub = publisher(tmp_path)
    pub.publish(stage(pub, "x", repository=first))
    pub.publish(stage(pub, "app", repository="lab/app"))
    pub.publish(stage(pub, "app2", repository="lab/app", when=T0 + HOUR))
    for repository, content in ((first, "x"), ("lab/app", "app2")):
        assert (tmp_path / REGISTRY / f"{repository}:nightly" / TAG_FILE).read_text() == content + "\n"
        assert read_index(tmp_path, REGISTRY, repository) is not None


def test_layer_chains_appear_whole_or_not_at_all(tmp_path: Path) -> None:
    c1, c2 = (Digest.of_bytes(name) for name in (b"chain 1", b"chain 2"))

    def write(name: str) -> Callable[[Path], set[str]]:
        def fill(tree: Path) -> set[str]:
            (tree / name).write_text(name)
            return {name}
        return fill

    def fail(tree: Path) -> set[str]:
        (tree / "half").write_text("half")
        raise Crash("layer")

    def crash(step: str) -> None:
        if step == "chains-synced":
            raise Crash(step)

    pub = publisher(tmp_path)
    with pytest.raises(Crash):
        pub.add_chains(None, [ChainStep(c1, write("one")), ChainStep(c2, fail)])
    crashing = publisher(tmp_path, on_step=crash)
    with pytest.raises(Crash):
        crashing.add_chains(None, [ChainStep(c1, write("one")), ChainStep(c2, write("two"))])
    assert not pub.has_chain(c1) and list(tmp_path.glob(".chains/*/*")) == []
    assert [p for p in (tmp_path / ".ligoenv/staging").iterdir() if p.suffix != ".lock"] == []

    pub.add_chains(None, [ChainStep(c1, write("one"))])
    pub.add_chains(c1, [ChainStep(c2, write("two"))])
    assert tree_files(pub.layout.chain_dir(c1)) == ["one"]
    assert tree_files(pub.layout.chain_dir(c2)) == ["one", "two"]
    assert (pub.layout.chain_dir(c2) / "one").samefile(pub.layout.chain_dir(c1) / "one")  # hard links
