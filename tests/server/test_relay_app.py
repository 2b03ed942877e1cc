"""The relay's checks, in order, on the Distribution endpoint: auth, content type, size, JSON,
schema, allowlist, and answering 2xx only once the queue (memory or real SQLite) holds the jobs."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from ligoenv.oci.errors import UsageError
from ligoenv.store.errors import QueueUnavailable
from ligoenv_server.config import ServerConfig
from ligoenv_server.jobs import Action, EnqueueResult, PublishRequest
from ligoenv_server.logs import JsonFormatter
from ligoenv_server.queue import HttpQueueClient
from testbed.relay import (
    DISTRIBUTION_V1,
    NOW,
    REGISTRY,
    FlakySink,
    MemorySink,
    answering,
    fixture_bytes,
    fixture_json,
    open_sink,
    relay_client,
    relay_config,
    to_body,
)

PUSH = fixture_bytes("distribution_push.json")
PUSH_DIGEST = "sha256:22f77e78c481edff1d44f2238ad3fdf9e23044bb9f04441c21c9c4c6cfee20ba"
HEADERS = {"Authorization": "Bearer local-token", "Content-Type": DISTRIBUTION_V1}
PATH = "/hooks/distribution"


@pytest.fixture()
def config(tmp_path: Path) -> ServerConfig:
    return relay_config(tmp_path / "etc")


@pytest.fixture(params=["memory", "sqlite"])
def sink(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MemorySink | FlakySink]:
    with open_sink(request.param, tmp_path) as opened:
        yield opened


@pytest.fixture()
def client(config: ServerConfig, sink: MemorySink | FlakySink) -> Iterator[TestClient]:
    with relay_client(config, sink) as opened:
        yield opened


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_a_tagged_manifest_push_is_queued(client: TestClient, sink: MemorySink | FlakySink) -> None:
    response = client.post(PATH, content=PUSH, headers=HEADERS)
    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "jobs": [1], "ignored": []}
    assert sink.queued() == [PublishRequest(
        registry=REGISTRY, repository="lvk/lalsuite", tag="nightly", digest=PUSH_DIGEST,
        source="webhook:distribution/local", received_at=NOW, action=Action.PUBLISH)]


def test_the_same_delivery_twice_is_one_job(client: TestClient, sink: MemorySink | FlakySink) -> None:
    first = client.post(PATH, content=PUSH, headers=HEADERS).json()
    second = client.post(PATH, content=PUSH, headers=HEADERS).json()
    assert first["jobs"] == second["jobs"] and len(sink.queued()) == 1


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Basic local-token",
                                           "Bearer", "bearer local-token-and-more", ""])
def test_missing_or_bad_credentials_are_401(client: TestClient, sink: MemorySink | FlakySink,
                                            authorization: str | None) -> None:
    headers = {"Content-Type": DISTRIBUTION_V1}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = client.post(PATH, content=PUSH, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "missing or invalid credentials for this endpoint"}
    assert sink.queued() == []


def test_the_scheme_is_case_insensitive(client: TestClient) -> None:
    headers = {**HEADERS, "Authorization": "bearer local-token"}
    assert client.post(PATH, content=PUSH, headers=headers).status_code == 202


def test_credentials_are_checked_before_anything_else(client: TestClient) -> None:
    response = client.post(PATH, content=b"x" * 10_000, headers={"Content-Type": "text/plain"})
    assert response.status_code == 401


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", None])
def test_wrong_content_type_is_415(client: TestClient, sink: MemorySink | FlakySink,
                                   content_type: str | None) -> None:
    headers = {"Authorization": "Bearer local-token"}
    if content_type:
        headers["Content-Type"] = content_type
    response = client.post(PATH, content=PUSH, headers=headers)
    assert response.status_code == 415
    assert "is not one of application/vnd.docker.distribution.events.v1+json" in response.json()["error"]
    assert sink.queued() == []


def oversized() -> bytes:
    """A valid envelope just over the 4096-byte limit of the test config."""
    document = fixture_json("distribution_push.json")
    document["events"][0]["request"]["useragent"] = "x" * 4096
    return to_body(document)


def test_oversized_body_is_413(client: TestClient, sink: MemorySink | FlakySink) -> None:
    response = client.post(PATH, content=oversized(), headers=HEADERS)
    assert response.status_code == 413
    assert response.json() == {"error": "request body larger than 4096 bytes"}
    assert sink.queued() == []


def test_chunked_body_without_length_is_capped(client: TestClient, sink: MemorySink | FlakySink) -> None:
    body = oversized()
    chunks = iter([body[i:i + 1000] for i in range(0, len(body), 1000)])
    response = client.post(PATH, content=chunks, headers=HEADERS)
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert response.status_code == 413 and sink.queued() == []


def test_a_lying_content_length_is_capped(client: TestClient, sink: MemorySink | FlakySink) -> None:
    response = client.post(PATH, content=oversized(), headers={**HEADERS, "Content-Length": "100"})
    assert response.request.headers["content-length"] == "100"
    assert response.status_code == 413 and sink.queued() == []


def test_a_body_exactly_at_the_limit_is_read(client: TestClient) -> None:
    document = fixture_json("distribution_push.json")
    document["events"][0]["request"]["useragent"] = ""
    body = to_body(document)
    document["events"][0]["request"]["useragent"] = "x" * (4096 - len(body))
    assert len(to_body(document)) == 4096
    assert client.post(PATH, content=to_body(document), headers=HEADERS).status_code == 202


@pytest.mark.parametrize("body", [b"{", b"", b"\xff\xfe", b"[" * 5000 + b"]" * 5000])
def test_invalid_json_is_400(client: TestClient, sink: MemorySink | FlakySink, body: bytes) -> None:
    if len(body) > 4096:
        body = b"[" * 2000 + b"]" * 2000  # deeply nested, still under the cap
    response = client.post(PATH, content=body, headers=HEADERS)
    assert response.status_code == 400
    assert response.json()["error"].startswith(("invalid JSON", "payload does not match"))
    assert sink.queued() == []


@pytest.mark.parametrize(("change", "field"), [
    (lambda d: d["events"][0]["target"].update(digest="sha256:xyz"), "events[0].target.digest"),
    (lambda d: d["events"][0]["target"].update(repository="LVK/Upper"), "events[0].target.repository"),
    (lambda d: d["events"][0]["target"].update(tag="bad tag"), "events[0].target.tag"),
    (lambda d: d["events"][0].pop("action"), "events[0]: 'action' is a required property"),
    (lambda d: d.pop("events"), "(top level): 'events' is a required property"),
    (lambda d: d.update(events={"not": "a list"}), "events: {'not': 'a list'} is not of type 'array'"),
])
def test_schema_invalid_is_400_naming_the_field(client: TestClient, sink: MemorySink | FlakySink,
                                                change: object, field: str) -> None:
    document = fixture_json("distribution_push.json")
    change(document)  # type: ignore[operator]
    response = client.post(PATH, content=to_body(document), headers=HEADERS)
    assert response.status_code == 400
    assert response.json()["error"].startswith("payload does not match the distribution webhook schema: ")
    assert field in response.json()["error"]
    assert sink.queued() == []


def test_a_json_array_is_400(client: TestClient) -> None:
    response = client.post(PATH, content=b"[]", headers=HEADERS)
    assert response.status_code == 400
    assert "(top level): [] is not of type 'object'" in response.json()["error"]


def test_outside_the_allowlist_is_acknowledged_and_not_queued(client: TestClient,
                                                              sink: MemorySink | FlakySink) -> None:
    headers = {"X-Gitlab-Token": "gitlab-token", "Content-Type": DISTRIBUTION_V1}
    document = fixture_json("distribution_push.json")
    document["events"][0]["target"].update(repository="other/app", tag="nightly")
    response = client.post("/hooks/gitlab", content=to_body(document), headers=headers)
    assert response.status_code == 202
    assert response.json() == {"accepted": 0, "jobs": [], "ignored": [
        {"reason": "repository other/app:nightly not in allowlist of endpoint gitlab"}]}
    assert sink.queued() == []
    document["events"][0]["target"]["tag"] = "release-2026"  # matches other/app:release-*
    assert client.post("/hooks/gitlab", content=to_body(document), headers=headers).json()["accepted"] == 1
    assert [(r.registry, r.repository, r.tag) for r in sink.queued()] == [
        ("registry.gitlab.com", "other/app", "release-2026")]


def test_queue_down_is_503_and_the_retry_is_accepted(client: TestClient,
                                                     sink: MemorySink | FlakySink) -> None:
    sink.down = True
    response = client.post(PATH, content=PUSH, headers=HEADERS)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    assert response.json()["error"].startswith("queue unavailable: ")
    assert sink.queued() == []
    sink.down = False  # the registry sends the very same delivery again
    response = client.post(PATH, content=PUSH, headers=HEADERS)
    assert (response.status_code, response.json()["accepted"]) == (202, 1)
    queued = [(r.repository, r.tag, r.digest) for r in sink.queued()]
    assert queued == [("lvk/lalsuite", "nightly", PUSH_DIGEST)]


@pytest.mark.parametrize(("status", "body"), [
    (404, b"<h1>Not Found</h1>"), (400, b"Bad Request"), (413, b""), (301, b""),
    (200, b"<html>a web server, not the queue</html>")])
def test_a_queue_url_leading_elsewhere_is_503_and_the_retry_is_accepted(
        config: ServerConfig, tmp_path: Path, status: int, body: bytes) -> None:
    with answering(status, body) as url, HttpQueueClient(url, "queue-token") as misdirected, \
            relay_client(config, misdirected) as client:
        response = client.post(PATH, content=PUSH, headers=HEADERS)
    assert (response.status_code, response.headers["Retry-After"]) == (503, "30")
    error = response.json()["error"]
    assert error.startswith(f"queue unavailable: queue service {url} answered {status}")
    assert error.endswith("check [queue] url") and "\n" not in error
    # The registry keeps the delivery and sends it again, once [queue] url is put right.
    with open_sink("sqlite", tmp_path) as sink, relay_client(config, sink) as client:
        response = client.post(PATH, content=PUSH, headers=HEADERS)
        assert (response.status_code, response.json()["accepted"]) == (202, 1)
        assert [(r.repository, r.digest) for r in sink.queued()] == [("lvk/lalsuite", PUSH_DIGEST)]


class Refusing:
    """A sink that refuses every request, as no queue should: still no 500, and no 2xx."""

    def enqueue(self, request: PublishRequest) -> EnqueueResult:
        raise UsageError("publish request: repository: too long\nsecond line")


def test_any_queue_error_is_503_with_a_one_line_log(config: ServerConfig,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, "ligoenv_server.relay"), \
            relay_client(config, Refusing()) as client:
        response = client.post(PATH, content=PUSH, headers=HEADERS)
    assert (response.status_code, response.headers["Retry-After"]) == (503, "30")
    assert response.json() == {"error": "could not queue: publish request: repository: too long"}
    [record] = [r for r in caplog.records if r.name == "ligoenv_server.relay.routes"]
    assert record.getMessage() == ("could not queue, asked the sender to retry: "
                                   "publish request: repository: too long")
    assert record.exc_info is None


class FailsOnce:
    """Passes enqueues to `inner`, except call number `failing`, which finds the queue down."""

    def __init__(self, inner: MemorySink | FlakySink, failing: int) -> None:
        self.inner, self.failing, self.calls = inner, failing, 0

    def enqueue(self, request: PublishRequest) -> EnqueueResult:
        self.calls += 1
        if self.calls == self.failing:
            raise QueueUnavailable("queue database is locked")
        return self.inner.enqueue(request)


def test_a_queue_failure_part_way_loses_and_duplicates_nothing(config: ServerConfig,
                                                               sink: MemorySink | FlakySink) -> None:
    document = fixture_json("distribution_push.json")
    second = json.loads(json.dumps(document["events"][0]))
    second["target"]["tag"] = "latest"
    document["events"].append(second)
    with relay_client(config, FailsOnce(sink, failing=2)) as client:
        assert client.post(PATH, content=to_body(document), headers=HEADERS).status_code == 503
        assert [r.tag for r in sink.queued()] == ["nightly"]  # the first was already durable
        response = client.post(PATH, content=to_body(document), headers=HEADERS)
    assert (response.status_code, response.json()["jobs"]) == (202, [1, 2])
    assert [r.tag for r in sink.queued()] == ["nightly", "latest"]


def test_the_registry_is_the_endpoints_whatever_the_payload_says(client: TestClient,
                                                                 sink: MemorySink | FlakySink) -> None:
    document = fixture_json("distribution_push.json")
    event = document["events"][0]
    event["target"]["url"] = "https://evil.example.com/v2/lvk/lalsuite/manifests/" + PUSH_DIGEST
    event["request"]["host"] = "evil.example.com"
    event["source"]["addr"] = "evil.example.com:443"
    assert client.post(PATH, content=to_body(document), headers=HEADERS).status_code == 202
    [request] = sink.queued()
    assert request.registry == REGISTRY
    assert "evil" not in json.dumps(request.to_json())


def test_unknown_paths_and_methods(client: TestClient) -> None:
    assert client.post("/hooks/nope", content=PUSH, headers=HEADERS).status_code == 404
    assert client.get(PATH, headers=HEADERS).status_code == 405


def test_logs_carry_fields_and_never_secrets(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client.post(PATH, content=PUSH, headers=HEADERS)
    client.post(PATH, content=PUSH, headers={**HEADERS, "Authorization": "Bearer guessed-secret"})
    client.post("/hooks/dockerhub/wrong-path-secret", content=b"{}",
                headers={"Content-Type": "application/json"})
    lines = [json.loads(JsonFormatter().format(record)) for record in caplog.records
             if record.name.startswith("ligoenv_server")]
    queued = next(line for line in lines if line["msg"] == "queued publish request")
    assert {key: queued[key] for key in ("level", "endpoint", "repository", "tag", "digest", "job_id")} == {
        "level": "info", "endpoint": "local", "repository": "lvk/lalsuite", "tag": "nightly",
        "digest": PUSH_DIGEST, "job_id": 1}
    assert queued["ts"].endswith("+00:00")
    rejected = [line for line in lines if line["level"] == "warning"]
    assert [line["endpoint"] for line in rejected] == ["local", "hub"]
    ours = "\n".join(json.dumps(line) for line in lines)
    for secret in ("local-token", "guessed-secret", "wrong-path-secret", "hub-path-secret"):
        assert secret not in ours
