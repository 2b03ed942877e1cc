"""The worker in-process against the real registry and a real SQLite queue: outcomes reported
through queue outages, lost leases, platforms, stale events and Docker Hub callbacks."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ligoenv.oci.digest import Digest
from ligoenv.oci.errors import RegistryUnavailable, UnsafeArchive
from ligoenv.oci.platform import Platform
from ligoenv.store.errors import QueueUnavailable
from ligoenv_server.config import ServerConfig, load_config
from ligoenv_server.jobs import Action, JobState, PublishRequest
from ligoenv_server.pipeline import RequestProcessor
from ligoenv_server.publishers.directory import DirectoryPublisher
from ligoenv_server.queue import SqlQueue
from ligoenv_server.worker import Worker, WorkerPool
from testbed.images import ARM64, build_busybox_image, push_image, push_nested_index
from testbed.indexfiles import read_index
from testbed.registry import RegistryProcess, free_port
from testbed.stack import server_config

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture()
def config(tmp_path: Path, registry: RegistryProcess) -> ServerConfig:
    cfg = load_config(server_config(tmp_path, registry.host, free_port()))
    return replace(cfg, worker=replace(cfg.worker, concurrency=3))


def request(registry: RegistryProcess, repository: str, tag: str, digest: Digest | None, **kw: Any
            ) -> PublishRequest:
    return PublishRequest(registry=registry.host, repository=repository, tag=tag,
                          digest=str(digest) if digest else None, source="distribution:local",
                          received_at=kw.pop("received_at", NOW), **kw)


class Flaky:
    """A real queue whose outcome reports fail `failures` times first (a queue outage)."""

    def __init__(self, queue: SqlQueue, failures: int = 0, lose_lease: bool = False) -> None:
        self.queue, self.failures, self.lose_lease = queue, failures, lose_lease

    def __getattr__(self, name: str) -> Any:
        return getattr(self.queue, name)

    def complete(self, job_id: int, worker_id: str, result: dict[str, Any]) -> bool:
        if self.failures:
            self.failures -= 1
            raise QueueUnavailable("queue database is locked")
        return self.queue.complete(job_id, worker_id, result)

    def heartbeat(self, job_id: int, worker_id: str) -> bool:
        return not self.lose_lease and self.queue.heartbeat(job_id, worker_id)


def run_one(worker: Worker, queue: SqlQueue, req: PublishRequest) -> int:
    job_id = queue.enqueue(req).job_id
    job = queue.claim(worker.worker_id)
    assert job is not None and job.id == job_id
    worker.run_job(job)
    return job_id


def test_an_outcome_is_reported_through_a_queue_outage(config: ServerConfig,
                                                       registry: RegistryProcess) -> None:
    digest = push_image(registry.host, "worker/flaky", "v1", build_busybox_image("flaky"))
    queue = SqlQueue(config.queue.url)
    publisher = DirectoryPublisher(config.publisher.root)
    worker = Worker(config, Flaky(queue, failures=2), RequestProcessor(config, publisher))  # type: ignore[arg-type]
    job_id = run_one(worker, queue, request(registry, "worker/flaky", "v1", digest))
    assert queue.get(job_id).state is JobState.DONE


def test_a_lost_lease_publishes_nothing_and_reports_nothing(config: ServerConfig,
                                                            registry: RegistryProcess) -> None:
    digest = push_image(registry.host, "worker/lost", "v1", build_busybox_image("lost"))
    config = replace(config, queue=replace(config.queue, lease_seconds=1))  # heartbeat each 0.33 s
    queue = SqlQueue(config.queue.url)
    publisher = DirectoryPublisher(config.publisher.root)
    processor = RequestProcessor(config, publisher)
    slow = threading.Event()
    original = processor._stage

    def slow_stage(*args: Any, **kwargs: Any) -> Any:
        slow.wait(1.0)  # long enough for a heartbeat to find the lease gone
        return original(*args, **kwargs)

    processor._stage = slow_stage  # type: ignore[method-assign]
    worker = Worker(config, Flaky(queue, lose_lease=True), processor)  # type: ignore[arg-type]
    job_id = run_one(worker, queue, request(registry, "worker/lost", "v1", digest))
    assert queue.get(job_id).state is JobState.RUNNING  # left for the lease to decide
    assert read_index(publisher.layout.root, registry.host, "worker/lost") is None
    assert not publisher.has_image(digest)


def test_a_single_platform_image_is_indexed_as_what_it_is(config: ServerConfig,
                                                          registry: RegistryProcess) -> None:
    digest = push_image(registry.host, "worker/arm", "v1", build_busybox_image("arm", platform=ARM64))
    publisher = DirectoryPublisher(config.publisher.root)
    processor = RequestProcessor(config, publisher)  # configured platforms: linux/amd64
    processor.process(request(registry, "worker/arm", "v1", digest))
    index = read_index(publisher.layout.root, registry.host, "worker/arm")
    assert index is not None and index.digests[str(digest)].platform == "linux/arm64"
    assert index.path_of(digest, Platform.parse("linux/arm64")) is not None
    # Published again under a second tag (no unpack): still arm64.
    processor.process(request(registry, "worker/arm", "v2", digest))
    index = read_index(publisher.layout.root, registry.host, "worker/arm")
    assert index is not None and index.digests[str(digest)].platforms == {"linux/arm64": digest}


def test_a_replayed_old_event_does_not_move_the_tag_back(config: ServerConfig,
                                                         registry: RegistryProcess) -> None:
    publisher = DirectoryPublisher(config.publisher.root)
    processor = RequestProcessor(config, publisher)
    old = push_image(registry.host, "worker/replay", "v1", build_busybox_image("old"))
    processor.process(request(registry, "worker/replay", "v1", old, received_at=NOW))
    new = push_image(registry.host, "worker/replay", "v1", build_busybox_image("new"))
    processor.process(request(registry, "worker/replay", "v1", new, received_at=NOW + timedelta(hours=1)))
    replay = processor.process(request(registry, "worker/replay", "v1", old,
                                       received_at=NOW + timedelta(hours=2)))
    assert replay["stale_tag"] == "v1" and not replay["tag_moved"]
    index = read_index(publisher.layout.root, registry.host, "worker/replay")
    assert index is not None and index.current("v1") == new
    assert [e.digest for e in index.history("v1")] == [old, new]


class RegistryDown(RequestProcessor):
    def process(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise RegistryUnavailable("registry 127.0.0.1:1 is unreachable: connection refused")


def test_docker_hub_hears_only_the_final_outcome(config: ServerConfig,
                                                 registry: RegistryProcess) -> None:
    calls: list[str] = []
    queue = SqlQueue(config.queue.url, max_attempts=2)
    processor = RegistryDown(config, DirectoryPublisher(config.publisher.root))
    worker = Worker(config, queue, processor, callback=lambda r, state, text: calls.append(state))
    hub = request(registry, "worker/hub", "v1", None,
                  callback_url="https://registry.hub.docker.com/u/lvk/hub/hook/1/")
    job_id = queue.enqueue(hub).job_id
    for attempt in (1, 2):  # a temporary failure: retried, and only the last one is final
        job = queue.claim(worker.worker_id, now=datetime.now(UTC) + timedelta(hours=attempt))
        assert job is not None and job.id == job_id
        worker.run_job(job)
        assert calls == ([] if attempt == 1 else ["failure"])
    assert queue.get(job_id).state is JobState.FAILED

    calls.clear()
    digest = push_image(registry.host, "worker/hub", "v1", build_busybox_image("hub"))
    ok = Worker(config, queue, RequestProcessor(config, DirectoryPublisher(config.publisher.root)),
                callback=lambda r, state, text: calls.append(state))
    run_one(ok, queue, request(registry, "worker/hub", "v1", digest, callback_url=hub.callback_url))
    assert calls == ["success"]


def test_an_index_inside_an_index_fails_at_once_naming_why(config: ServerConfig,
                                                            registry: RegistryProcess) -> None:
    outer, inner = push_nested_index(registry.host, "worker/nested", "v1")
    queue = SqlQueue(config.queue.url, max_attempts=3)
    worker = Worker(config, queue, RequestProcessor(config, DirectoryPublisher(config.publisher.root)))
    job_id = run_one(worker, queue, request(registry, "worker/nested", "v1", outer))
    job = queue.get(job_id)
    assert job.state is JobState.FAILED  # permanent: not retried
    assert f"index {outer.short} points at another index ({inner.short})" in (job.last_error or "")


def test_pool_workers_have_distinct_ids(config: ServerConfig) -> None:
    pool = WorkerPool.build(config, SqlQueue(config.queue.url), DirectoryPublisher(config.publisher.root))
    assert len({w.worker_id for w in pool.workers}) == 3


def test_untag_requests_record_the_history(config: ServerConfig, registry: RegistryProcess) -> None:
    publisher = DirectoryPublisher(config.publisher.root)
    processor = RequestProcessor(config, publisher)
    digest = push_image(registry.host, "worker/gone", "v1", build_busybox_image("gone"))
    processor.process(request(registry, "worker/gone", "v1", digest))
    delete_upstream(registry, "worker/gone", digest)
    result = processor.process(request(registry, "worker/gone", "v1", None, action=Action.UNTAG,
                                       received_at=NOW + timedelta(minutes=5)))
    assert result == {"action": "untag", "tag": "v1", "changed": True}
    index = read_index(publisher.layout.root, registry.host, "worker/gone")
    assert index is not None and index.current("v1") is None and publisher.has_image(digest)
    assert index.history("v1")[-1].source == "webhook:distribution/local"


def delete_upstream(registry: RegistryProcess, repository: str, digest: Digest) -> None:
    from ligoenv.oci.registry import RegistryClient

    with RegistryClient(registry.host) as client:
        client.delete_manifest(repository, digest)


@pytest.mark.parametrize("with_digest", [True, False])  # Harbor names the digest, Distribution not
def test_a_late_untag_after_a_new_push_leaves_the_tag(config: ServerConfig, registry: RegistryProcess,
                                                      with_digest: bool) -> None:
    publisher = DirectoryPublisher(config.publisher.root)
    processor = RequestProcessor(config, publisher)
    repository = f"worker/late-untag-{with_digest}".lower()
    old = push_image(registry.host, repository, "v1", build_busybox_image("old"))
    processor.process(request(registry, repository, "v1", old))
    new = push_image(registry.host, repository, "v1", build_busybox_image("new"))
    processor.process(request(registry, repository, "v1", new, received_at=NOW + timedelta(hours=1)))
    late = processor.process(request(registry, repository, "v1", old if with_digest else None,
                                     action=Action.UNTAG, received_at=NOW + timedelta(hours=2)))
    assert late == {"action": "untag", "tag": "v1", "changed": False, "stale_untag": str(new)}
    index = read_index(publisher.layout.root, registry.host, repository)
    assert index is not None and index.current("v1") == new
    assert [e.digest for e in index.history("v1")] == [old, new]
    assert publisher.layout.tag_link(registry.host, repository, "v1").is_symlink()


def test_a_replayed_push_of_a_manifest_deleted_since_is_skipped(config: ServerConfig,
                                                                registry: RegistryProcess) -> None:
    publisher = DirectoryPublisher(config.publisher.root)
    digest = push_image(registry.host, "worker/deleted", "v1", build_busybox_image("deleted"))
    delete_upstream(registry, "worker/deleted", digest)
    result = RequestProcessor(config, publisher).process(
        request(registry, "worker/deleted", "v1", digest))
    assert result == {"action": "publish", "digest": str(digest), "tag": "v1",
                      "skipped": "the manifest was deleted upstream"}
    assert not publisher.has_image(digest)


def test_an_index_nested_in_an_index_is_a_permanent_named_failure(config: ServerConfig,
                                                                  registry: RegistryProcess) -> None:
    from ligoenv.oci.errors import RegistryError
    from ligoenv.oci.manifest import OCI_INDEX
    from ligoenv.oci.registry import RegistryClient
    from testbed.images import build_multiplatform_images, index_bytes
    from testbed.ocibuild import canonical_json

    inner_images = build_multiplatform_images("nested")
    inner = push_image(registry.host, "worker/nested", "inner", inner_images)
    inner_size = len(index_bytes(inner_images))
    outer = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_INDEX, "digest": str(inner), "size": inner_size,
         "platform": {"os": "linux", "architecture": "amd64"}}]})
    with RegistryClient(registry.host) as client:
        digest = client.push_manifest("worker/nested", "v1", outer, OCI_INDEX)
    publisher = DirectoryPublisher(config.publisher.root)
    with pytest.raises(RegistryError, match="points at another index") as raised:
        RequestProcessor(config, publisher).process(request(registry, "worker/nested", "v1", digest))
    assert not raised.value.temporary
    assert not (config.publisher.root / ".images").exists()


def test_the_expansion_cap_is_a_publisher_setting(config: ServerConfig, registry: RegistryProcess,
                                                  tmp_path: Path) -> None:
    (tmp_path / "small").mkdir()
    path = server_config(tmp_path / "small", registry.host, free_port(),
                         publisher=f'root = "{tmp_path / "small-root"}"\nmax_expanded_bytes = 1048576')
    small = load_config(path)
    assert small.publisher.max_expanded_bytes == 1 << 20
    big = build_busybox_image("big", files={"data/blob": bytes(2 << 20)})
    digest = push_image(registry.host, "worker/capped", "v1", big)
    publisher = DirectoryPublisher(small.publisher.root)
    with pytest.raises(UnsafeArchive, match="max_expanded_bytes"):
        RequestProcessor(small, publisher).process(request(registry, "worker/capped", "v1", digest))
    assert not publisher.has_image(digest)


def test_a_layer_of_absurd_expansion_ratio_is_refused_by_default(config: ServerConfig,
                                                                 registry: RegistryProcess) -> None:
    import gzip

    from testbed import hostile
    from testbed.images import busybox_layer
    from testbed.ocibuild import LAYER_GZIP, Image, Layer

    assert config.publisher.max_expansion_ratio == 2000
    sparse = hostile.sparse_file(2**40)
    bomb = Layer(gzip.compress(sparse, mtime=0), LAYER_GZIP, Digest.of_bytes(sparse))
    digest = push_image(registry.host, "worker/sparse", "v1", Image([busybox_layer(), bomb]))
    publisher = DirectoryPublisher(config.publisher.root)
    with pytest.raises(UnsafeArchive, match="max_expansion_ratio"):
        RequestProcessor(config, publisher).process(request(registry, "worker/sparse", "v1", digest))
    assert not publisher.has_image(digest)


def test_every_configured_platform_of_an_index_is_published(config: ServerConfig,
                                                            registry: RegistryProcess) -> None:
    from testbed.images import build_multiplatform_images

    both = (Platform.parse("linux/amd64"), Platform.parse("linux/arm64"))
    config = replace(config, publisher=replace(config.publisher, platforms=both))
    top = push_image(registry.host, "worker/multi", "v1", build_multiplatform_images("multi"))
    publisher = DirectoryPublisher(config.publisher.root)
    result = RequestProcessor(config, publisher).process(request(registry, "worker/multi", "v1", top))
    assert set(result["paths"]) == {"linux/amd64", "linux/arm64"} and len(result["unpacked"]) == 2
    index = read_index(publisher.layout.root, registry.host, "worker/multi")
    assert index is not None
    for platform in both:
        manifest = index.platform_digest(top, platform)
        assert publisher.has_image(manifest) and index.path_of(top, platform) is not None
    link = publisher.layout.tag_link(registry.host, "worker/multi", "v1")
    assert link.resolve().name == index.platform_digest(top, both[0]).hex  # the default platform


def test_trees_get_the_bind_points_configured_for_their_source(config: ServerConfig,
                                                              registry: RegistryProcess) -> None:
    endpoint = replace(config.relay.endpoints[0], bind_points=("/ceph",))
    config = replace(config, relay=replace(config.relay, endpoints=(endpoint,)),
                     publisher=replace(config.publisher, bind_points=("/gpfs/data", "/project")))
    publisher = DirectoryPublisher(config.publisher.root)
    processor = RequestProcessor(config, publisher)
    trees, digests = {}, {}
    for source, tag in (("distribution:local", "hook"), ("cli", "manual")):
        top = push_image(registry.host, "worker/binds", tag, build_busybox_image(f"binds-{tag}"))
        processor.process(replace(request(registry, "worker/binds", tag, top), source=source))
        trees[source], digests[source] = publisher.layout.image_dir(top), top
    hook, manual = trees["distribution:local"], trees["cli"]
    assert (hook / "ceph").is_dir() and not (hook / "gpfs").exists()  # the endpoint's own list
    assert (manual / "gpfs/data").is_dir() and (manual / "project").is_dir()
    assert not (manual / "ceph").exists() and not (manual / "cvmfs").exists()
    for tree in (hook, manual):  # what the runtimes mount is always there
        assert all((tree / name).is_dir() for name in ("dev", "proc", "sys", "tmp", "var/tmp", "home"))
    # and the index records each tree's own list
    index = read_index(publisher.layout.root, registry.host, "worker/binds")
    assert index is not None
    runtime = ("/dev", "/proc", "/sys", "/tmp", "/var/tmp", "/home")
    assert index.digests[str(digests["distribution:local"])].bind_points == ("/ceph", *runtime)
    assert index.digests[str(digests["cli"])].bind_points == ("/gpfs/data", "/project", *runtime)


def test_each_published_tree_says_where_it_came_from(config: ServerConfig,
                                                     registry: RegistryProcess) -> None:
    from ligoenv import __version__
    from ligoenv.store.provenance import read_provenance
    from testbed.images import build_multiplatform_images

    both = (Platform.parse("linux/amd64"), Platform.parse("linux/arm64"))
    config = replace(config, publisher=replace(config.publisher, platforms=both))
    top = push_image(registry.host, "worker/origin", "v1", build_multiplatform_images("origin"))
    publisher = DirectoryPublisher(config.publisher.root)
    before = datetime.now(UTC)
    result = RequestProcessor(config, publisher).process(request(registry, "worker/origin", "v1", top))
    index = read_index(publisher.layout.root, registry.host, "worker/origin")
    assert index is not None
    for platform in both:
        manifest = index.platform_digest(top, platform)
        tree = config.publisher.root / result["paths"][str(platform)]
        provenance = read_provenance(tree)
        assert provenance is not None
        assert before <= datetime.fromisoformat(provenance.pop("published")) <= datetime.now(UTC)
        assert provenance == {
            "format": 1, "reference": f"{registry.host}/worker/origin:v1", "registry": registry.host,
            "repository": "worker/origin", "tag": "v1", "digest": str(top), "manifest": str(manifest),
            "platform": str(platform), "version": __version__, "bind_points": list(
                config.publisher.bind_points)}
        labels = json.loads((tree / ".singularity.d/labels.json").read_text())
        assert labels["org.ligoenv.digest"] == str(top) and labels["org.ligoenv.platform"] == str(platform)
