"""Distribution / GitLab notifications: which events become publish requests, and a real
docker-registry 2.8 notifying a real relay (uvicorn) that writes to a real SQLite queue."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn
from starlette.testclient import TestClient

from ligoenv.oci.platform import Platform
from ligoenv_server.config import ServerConfig
from ligoenv_server.jobs import Action, PublishRequest
from ligoenv_server.queue.sql import SqlQueue
from ligoenv_server.relay import create_relay_app
from testbed.ocibuild import Entry, Image, Layer, LayoutWriter
from testbed.registry import RegistryProcess, free_port, skopeo_digest, skopeo_push
from testbed.relay import (
    CONFIG,
    DISTRIBUTION_V1,
    NOW,
    REGISTRY,
    MemorySink,
    fixture_bytes,
    fixture_json,
    relay_client,
    relay_config,
    to_body,
)

HEADERS = {"Authorization": "Bearer local-token", "Content-Type": DISTRIBUTION_V1}
PATH = "/hooks/distribution"
INDEX_DIGEST = "sha256:7b6e25414eee94fe8c3db3060f6a1c020da342eb923168f4b199513c0b8f91e6"


@pytest.fixture()
def client(tmp_path: Path, sink: MemorySink) -> Iterator[TestClient]:
    # A 64 KiB cap: one envelope of a multi-platform push is over the 4 KiB of the shared config.
    config = relay_config(tmp_path, CONFIG.replace("body_limit = 4096", "body_limit = 65536"))
    with relay_client(config, sink) as opened:
        yield opened


def test_an_index_push_is_queued_with_the_index_digest(client: TestClient, sink: MemorySink) -> None:
    response = client.post(PATH, content=fixture_bytes("distribution_push_index.json"), headers=HEADERS)
    assert response.json() == {"accepted": 1, "jobs": [1], "ignored": []}
    assert sink.queued() == [PublishRequest(REGISTRY, "lvk/multi", "1.0", INDEX_DIGEST,
                                            "webhook:distribution/local", NOW)]


def test_the_registry_event_time_travels_with_the_request(client: TestClient,
                                                         sink: MemorySink) -> None:
    # Go writes nanoseconds: kept to the microsecond, for the push-to-published latency.
    client.post(PATH, content=fixture_bytes("distribution_push_index.json"), headers=HEADERS)
    (queued,) = sink.queued()
    assert queued.event_time == datetime(2026, 11, 25, 16, 47, 50, 412611, tzinfo=UTC)
    assert PublishRequest.from_json(queued.to_json()).event_time == queued.event_time


def test_an_unreadable_event_time_is_left_out(client: TestClient, sink: MemorySink) -> None:
    body = fixture_bytes("distribution_push_index.json").replace(
        b'"2026-11-25T16:47:50.412611967Z"', b'"yesterday"')
    assert client.post(PATH, content=body, headers=HEADERS).status_code == 202
    assert sink.queued()[0].event_time is None


def test_one_envelope_of_a_multi_platform_push(client: TestClient, sink: MemorySink) -> None:
    # As skopeo pushes an index: 4 blobs, 2 untagged platform manifests, then the tagged index.
    response = client.post(PATH, content=fixture_bytes("distribution_multi_envelope.json"),
                           headers=HEADERS)
    body = response.json()
    assert (response.status_code, body["accepted"], len(body["ignored"])) == (202, 1, 6)
    reasons = [item["reason"] for item in body["ignored"]]
    assert sum("application/octet-stream push is not an image manifest" in r for r in reasons) == 4
    assert sum("manifest pushed by digest, without a tag" in r for r in reasons) == 2
    assert [(r.repository, r.tag, r.digest) for r in sink.queued()] == [("lvk/multi", "1.0", INDEX_DIGEST)]


@pytest.mark.parametrize(("fixture", "reason"), [
    ("distribution_blob.json", "application/octet-stream push is not an image manifest or index"),
    ("distribution_pull.json", "action 'pull' is not a push or a tag delete"),
])
def test_blobs_and_pulls_are_acknowledged_and_ignored(client: TestClient, sink: MemorySink,
                                                              fixture: str, reason: str) -> None:
    response = client.post(PATH, content=fixture_bytes(fixture), headers=HEADERS)
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 0 and body["jobs"] == []
    assert all(reason in item["reason"] for item in body["ignored"]) and body["ignored"]
    assert sink.queued() == []


def test_a_deleted_manifest_untags_its_tags(client: TestClient, sink: MemorySink) -> None:
    # Deleting a manifest sends one event for the digest and one per tag that pointed at it.
    response = client.post(PATH, content=fixture_bytes("distribution_delete.json"), headers=HEADERS)
    body = response.json()
    assert (response.status_code, body["accepted"], len(body["ignored"])) == (202, 1, 1)
    assert "action 'delete' is not a push or a tag delete" in body["ignored"][0]["reason"]
    assert [(r.repository, r.tag, r.digest, r.action) for r in sink.queued()] == [
        ("lvk/lalsuite", "nightly", None, Action.UNTAG)]


def test_mounts_are_ignored(client: TestClient, sink: MemorySink) -> None:
    document = fixture_json("distribution_push.json")
    document["events"][0]["action"] = "mount"
    assert client.post(PATH, content=to_body(document), headers=HEADERS).json()["accepted"] == 0
    assert sink.queued() == []


@pytest.mark.parametrize("content_type", [
    DISTRIBUTION_V1, "application/vnd.docker.distribution.events.v2+json",
    "application/json", "application/json; charset=utf-8", "Application/JSON"])
def test_accepted_content_types(client: TestClient, content_type: str) -> None:
    headers = {**HEADERS, "Content-Type": content_type}
    response = client.post(PATH, content=fixture_bytes("distribution_push.json"), headers=headers)
    assert response.status_code == 202


def test_gitlab_sends_its_token_in_its_own_header(client: TestClient, sink: MemorySink) -> None:
    body = fixture_bytes("distribution_push.json")
    wrong = client.post("/hooks/gitlab", content=body,
                        headers={"X-Gitlab-Token": "nope", "Content-Type": DISTRIBUTION_V1})
    bearer = client.post("/hooks/gitlab", content=body,
                         headers={"Authorization": "Bearer gitlab-token", "Content-Type": DISTRIBUTION_V1})
    assert (wrong.status_code, bearer.status_code) == (401, 401)
    right = client.post("/hooks/gitlab", content=body,
                        headers={"X-Gitlab-Token": "gitlab-token", "Content-Type": DISTRIBUTION_V1})
    assert right.status_code == 202
    [request] = sink.queued()
    assert (request.registry, request.source) == ("registry.gitlab.com", "webhook:distribution/gitlab")


def test_a_tagged_manifest_push_without_digest_is_400(client: TestClient, sink: MemorySink) -> None:
    document = fixture_json("distribution_push.json")
    del document["events"][0]["target"]["digest"]
    response = client.post(PATH, content=to_body(document), headers=HEADERS)
    assert response.status_code == 400
    assert response.json()["error"] == "events[0].target.digest: a tagged manifest push needs a digest"
    assert sink.queued() == []


def test_unknown_fields_from_newer_registries_are_fine(client: TestClient, sink: MemorySink) -> None:
    document = fixture_json("distribution_push.json")
    document["events"][0]["target"]["references"] = ["sha256:" + "a" * 64]
    document["events"][0]["actor"] = {"name": "ci-bot"}
    document["events"][0]["future"] = True
    assert client.post(PATH, content=to_body(document), headers=HEADERS).status_code == 202


# --- a real registry notifying a real relay --------------------------------------------------

class RelayServer:
    """The relay app served by uvicorn on a loopback port, in a thread of the test process."""

    def __init__(self, config: ServerConfig, queue: SqlQueue, port: int) -> None:
        settings = uvicorn.Config(create_relay_app(config, queue), host="127.0.0.1", port=port,
                                  log_config=None, lifespan="off")
        self.server = uvicorn.Server(settings)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> RelayServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def wait_for_jobs(queue: SqlQueue, count: int) -> list[PublishRequest]:
    deadline = time.monotonic() + 30  # a bound on waiting, not a timing assertion
    while True:
        jobs = sorted(queue.list(), key=lambda job: job.id)
        if len(jobs) >= count or time.monotonic() > deadline:
            return [job.request for job in jobs]
        time.sleep(0.05)


def test_docker_registry_notifications_reach_the_queue(tmp_path: Path) -> None:
    port = free_port()
    registry = RegistryProcess(tmp_path / "registry", notifications=[{
        "name": "ligoenv", "url": f"http://127.0.0.1:{port}{PATH}",
        "headers": {"Authorization": ["Bearer local-token"]},
        "timeout": "2s", "threshold": 3, "backoff": "100ms"}])
    config = relay_config(tmp_path / "etc", CONFIG.replace(REGISTRY, registry.host).replace(
        "body_limit = 4096", "body_limit = 1048576"))
    layout = LayoutWriter(tmp_path / "layout")
    layout.add_image(Image([Layer.from_entries([Entry("etc/motd", data=b"nightly\n")])]), tag="nightly")
    layout.add_index([Image([Layer.from_entries([Entry("a", data=b"amd64")])]),
                      Image([Layer.from_entries([Entry("a", data=b"arm64")])],
                            platform=Platform("linux", "arm64"))], tag="multi")
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    with SqlQueue(url) as queue, RelayServer(config, queue, port):
        registry.start()
        try:
            skopeo_push(tmp_path / "layout", "nightly", f"{registry.host}/lvk/lalsuite:nightly")
            skopeo_push(tmp_path / "layout", "multi", f"{registry.host}/lvk/multi:1.0")
            nightly = skopeo_digest(f"{registry.host}/lvk/lalsuite:nightly")
            multi = skopeo_digest(f"{registry.host}/lvk/multi:1.0")
            with SqlQueue(url) as fresh:  # durable: visible from a new connection
                requests = wait_for_jobs(fresh, 2)
        finally:
            registry.stop()
    assert [(r.registry, r.repository, r.tag, r.digest, r.source) for r in requests] == [
        (registry.host, "lvk/lalsuite", "nightly", nightly, "webhook:distribution/local"),
        (registry.host, "lvk/multi", "1.0", multi, "webhook:distribution/local")]


def test_an_endpoints_platforms_travel_with_its_requests(tmp_path: Path) -> None:
    text = CONFIG.replace('auth = { type = "bearer", secret = "local-token" }',
                          'auth = { type = "bearer", secret = "local-token" }\n'
                          'platforms = ["linux/amd64", "linux/arm64"]')
    assert text != CONFIG
    config = relay_config(tmp_path, text)
    sink = MemorySink()
    with relay_client(config, sink) as client:
        answer = client.post(PATH, content=fixture_bytes("distribution_push.json"), headers=HEADERS)
    assert answer.status_code == 202
    assert [r.platforms for r in sink.queued()] == [("linux/amd64", "linux/arm64")]
    assert PublishRequest.from_json(sink.queued()[0].to_json()) == sink.queued()[0]
