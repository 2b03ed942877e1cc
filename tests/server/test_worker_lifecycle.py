"""Workers die, get stopped and run side by side: no job or publication is lost or doubled."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.images import build_busybox_image, push_image
from testbed.ocibuild import LAYER_GZIP, Entry, Layer
from testbed.postgres import PostgresCluster
from testbed.stack import Stack, new_stack, wait_for

BIG_FILES = 2500
BIG_FILE_SIZE = 128 * 1024  # 2500 x 128 KiB = 320 MB to write: long enough to interrupt


def big_layer() -> Layer:
    """Many files of zeros: a small download (gzip) and a long unpack."""
    entries = [Entry("data", "dir", mode=0o755)]
    payload = bytes(BIG_FILE_SIZE)
    entries += [Entry(f"data/f{i:05d}", data=payload) for i in range(BIG_FILES)]
    return Layer.from_entries(entries, LAYER_GZIP)


@pytest.fixture(scope="module")
def layer() -> Layer:
    return big_layer()


@pytest.fixture()
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = new_stack(tmp_path, lease_seconds=5)
    yield stack
    stack.stop_all(signal.SIGKILL)
    stack.registry.stop()


def _unpacking(stack: Stack) -> bool:
    """True once a worker is writing a tree (an image's or a layer chain's) into the staging area."""
    staging = stack.root / ".ligoenv" / "staging"
    return any(len(list(p.glob("data/*"))) > 50 for p in staging.glob("stage-*/*"))


def _published_trees(stack: Stack, area: str = ".images") -> list[Path]:
    return sorted(p for p in (stack.root / area).glob("*/*") if p.is_dir())


def _job(stack: Stack, repository: str) -> dict[str, object]:
    found = [j for j in stack.jobs() if j["request"]["repository"] == repository]
    assert len(found) == 1, found
    return found[0]


def test_sigkill_during_unpack_leaves_nothing_visible_and_retry_completes(
        stack: Stack, layer: Layer) -> None:
    stack.start("relay")
    worker = stack.start("worker")
    digest = push_image(stack.registry.host, "lvk/big", "v1",
                        build_busybox_image("big", extra_layers=[layer]))
    wait_for(lambda: _unpacking(stack), "the worker to start unpacking", 60)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert _published_trees(stack) == []
    # the chains below the big top layer appear together, complete, before it is unpacked
    assert len(_published_trees(stack, ".chains")) in (0, 2)
    assert not (stack.root / stack.registry.host / "lvk/big:v1").exists()
    assert stack.index("lvk/big") is None

    stack.start("worker")  # the job's lease expires (5 s) and the new worker takes it again
    wait_for(lambda: _job(stack, "lvk/big")["state"] == "done", "the retried job", 90)
    trees = _published_trees(stack)
    assert [t.name for t in trees] == [digest.hex]
    assert len(list((trees[0] / "data").iterdir())) == BIG_FILES
    index = stack.index("lvk/big")
    assert index is not None
    chain = index.digests[str(digest)].chain
    assert chain is not None
    # busybox, the tag file: the big top layer is in the image's own tree only
    assert len(_published_trees(stack, ".chains")) == 2
    base = stack.root / ".chains" / chain.hex[:2] / chain.hex
    assert not (base / "data").exists() and not (base / ".singularity.d").exists()
    assert (stack.root / stack.registry.host / "lvk/big:v1").resolve() == trees[0].resolve()
    # Taken again after the kill; on a machine loaded enough to delay heartbeats past the 5 s
    # lease, once more, which is the lease doing its job.
    assert _job(stack, "lvk/big")["attempts"] >= 2
    # The next start of a publisher clears what the killed worker left in staging.
    stack.stop_all()
    stack.start("worker")
    wait_for(lambda: not list((stack.root / ".ligoenv" / "staging").glob("stage-*/")),
             "the killed worker's staging directory to be cleared", 20)


def test_sigterm_finishes_the_job_in_hand(stack: Stack, layer: Layer) -> None:
    stack.start("relay")
    worker = stack.start("worker")
    digest = push_image(stack.registry.host, "lvk/drain", "v1",
                        build_busybox_image("drain", extra_layers=[layer]))
    wait_for(lambda: _unpacking(stack), "the worker to start unpacking", 60)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(120) == 0
    job = _job(stack, "lvk/drain")
    assert job["state"] == "done" and job["attempts"] == 1
    assert [t.name for t in _published_trees(stack)] == [digest.hex]


def test_a_drain_timeout_releases_the_job_in_hand(stack: Stack, layer: Layer) -> None:
    stack.start("relay")
    assert not (stack.root / ".ligoenv" / "staging").exists()  # a relay leaves the root alone
    worker = stack.start("worker", "--drain-timeout", "0.2")
    push_image(stack.registry.host, "lvk/released", "v1",
               build_busybox_image("released", extra_layers=[layer]))
    wait_for(lambda: _unpacking(stack), "the worker to start unpacking", 60)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    job = _job(stack, "lvk/released")
    assert job["state"] == "pending"  # released: claimable at once, not a failed attempt
    assert _published_trees(stack) == []
    stack.start("worker")  # the next worker publishes it
    wait_for(lambda: _job(stack, "lvk/released")["state"] == "done", "the released job", 90)


@pytest.mark.postgres
def test_two_workers_on_postgresql_share_the_work(tmp_path: Path,
                                                  postgres_cluster: PostgresCluster) -> None:
    url = postgres_cluster.create_database("e2e_two_workers")
    stack = new_stack(tmp_path, queue_url=url)
    try:
        stack.start("relay")
        stack.start("worker")
        stack.start("worker")
        repositories = [f"lvk/app{i}" for i in range(8)]
        for repository in repositories:
            push_image(stack.registry.host, repository, "v1", build_busybox_image(repository))
        wait_for(lambda: {j["request"]["repository"] for j in stack.jobs() if j["state"] == "done"}
                 == set(repositories), "all images to be published", 90)
        jobs = stack.jobs()
        assert len(jobs) == len(repositories)
        assert all(j["attempts"] == 1 for j in jobs)  # no job was taken twice
        assert len(_published_trees(stack)) == len(repositories)
    finally:
        stack.stop_all()
        stack.registry.stop()


def test_two_workers_publishing_tags_of_one_repository_lose_no_event(stack: Stack) -> None:
    stack.start("relay")
    stack.start("worker")
    stack.start("worker")
    host = stack.registry.host
    pushed = {f"t{i}": push_image(host, "lvk/shared", f"t{i}", build_busybox_image(f"shared{i % 3}"))
              for i in range(10)}
    wait_for(lambda: sum(j["state"] == "done" for j in stack.jobs()) == len(pushed),
             "every tag to be published", 120)
    index = stack.index("lvk/shared")
    assert index is not None
    assert {tag: index.current(tag) for tag in pushed} == pushed
    assert all(len(index.history(tag)) == 1 for tag in pushed)
    assert len({str(d) for d in pushed.values()}) == 3 == len(index.digests)
