"""The queue service: in-process with Starlette's TestClient, and over real HTTP with uvicorn."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.testclient import TestClient

from ligoenv.oci.errors import NotFound, UsageError
from ligoenv.store.errors import ConfigError, QueueUnavailable
from ligoenv.store.schemas import schema_errors
from ligoenv_server.jobs import JobSink, JobSource, JobState, PublishRequest
from ligoenv_server.queue import HttpQueueClient, SqlQueue
from ligoenv_server.queue.service import create_queue_app
from testbed.registry import free_port
from testbed.relay import answering

TOKEN = "queue-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
Build = Callable[..., PublishRequest]


@pytest.fixture()
def sqlite_queue(tmp_path: Path) -> Iterator[SqlQueue]:
    with SqlQueue(f"sqlite:///{tmp_path / 'queue.db'}", max_attempts=2, timeout=0.2) as queue:
        yield queue


@pytest.fixture()
def client(sqlite_queue: SqlQueue) -> Iterator[TestClient]:
    with TestClient(create_queue_app(sqlite_queue, TOKEN)) as test_client:
        yield test_client


@pytest.fixture()
def served(sqlite_queue: SqlQueue) -> Iterator[str]:
    """The service under real uvicorn on a loopback port, for the whole test."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_queue_app(sqlite_queue, TOKEN), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def _hold_write_lock(queue: SqlQueue) -> sqlite3.Connection:
    path = queue.engine.url.database
    assert path is not None
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_jobs_need_the_bearer_token(client: TestClient, publish_request: Build) -> None:
    body = publish_request().to_json()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Bearer {TOKEN}x"}):
        response = client.post("/v1/jobs", json=body, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/jobs").status_code == 401
    assert client.get("/v1/jobs", headers=AUTH).json() == {"jobs": []}
    assert client.get("/healthz").json() == {"status": "ok"}


def test_enqueue_answers_201_then_200_for_the_same_pending_request(
        client: TestClient, sqlite_queue: SqlQueue, publish_request: Build) -> None:
    body = publish_request(digest="sha256:" + "0" * 64).to_json()
    first = client.post("/v1/jobs", json=body, headers=AUTH)
    assert first.status_code == 201
    job_id = first.json()["job_id"]
    assert first.json() == {"job_id": job_id, "created": True}
    again = client.post("/v1/jobs", json=body, headers=AUTH)
    assert (again.status_code, again.json()) == (200, {"job_id": job_id, "created": False})
    # Durable before the answer: the queue itself has it.
    assert sqlite_queue.get(job_id).request == PublishRequest.from_json(body)

    listed = client.get("/v1/jobs", params={"state": "pending"}, headers=AUTH).json()["jobs"]
    assert [job["id"] for job in listed] == [job_id]
    assert schema_errors(listed[0], "job") == []
    assert client.get("/v1/jobs", params={"state": "done"}, headers=AUTH).json() == {"jobs": []}
    assert client.get(f"/v1/jobs/{job_id}", headers=AUTH).json() == listed[0]
    assert client.get("/v1/counts", headers=AUTH).json() == {
        "pending": 1, "running": 0, "done": 0, "failed": 0}


@pytest.mark.parametrize(("change", "message"), [
    ({"repository": "LVK/Upper"}, "publish request: repository: 'LVK/Upper' does not match"),
    ({"digest": "sha256:short"}, "publish request: digest: 'sha256:short' does not match"),
    ({"registry": None}, "publish request: registry: None is not of type 'string'"),
    ({"surprise": 1}, "publish request: (top level): Additional properties are not allowed"),
    ({"received_at": "2026-13-45T00:00:00Z"}, "publish request: month must be in 1..12"),
    ({"received_at": "2026-03-01T12:00:00"}, "publish request: received_at: '2026-03-01T12:00:00' "
                                             "does not match"),
    ({"tag": "v1\n"}, "publish request: tag: 'v1\\n' does not match"),
])
def test_invalid_requests_are_refused_naming_the_field(
        client: TestClient, publish_request: Build, change: dict[str, Any], message: str) -> None:
    response = client.post("/v1/jobs", json=publish_request().to_json() | change, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)
    assert client.get("/v1/counts", headers=AUTH).json()["pending"] == 0


def test_bodies_are_capped_and_must_be_json_objects(client: TestClient) -> None:
    huge = b"{" + b" " * (1024 * 1024) + b"}"
    assert client.post("/v1/jobs", content=huge, headers=AUTH).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the stream itself is counted
        for _ in range(17):
            yield b" " * 65536

    assert client.post("/v1/jobs", content=chunks(), headers=AUTH).status_code == 413
    not_json = client.post("/v1/jobs", content=b"{nope", headers=AUTH)
    assert (not_json.status_code, not_json.json()) == (400, {"error": "body is not valid JSON"})
    assert client.post("/v1/jobs", json=[1], headers=AUTH).status_code == 400


def test_json_nested_too_deep_is_refused(client: TestClient) -> None:
    deep = b'{"x": ' + b"[" * 946 + b"]" * 946 + b"}"
    response = client.post("/v1/jobs", content=deep, headers=AUTH)
    assert (response.status_code, response.json()) == (
        400, {"error": "JSON nested deeper than 64 levels"})


@pytest.mark.parametrize("job_id", [2**31, 2**63, 10**40])
def test_a_job_id_no_job_can_have_is_404(client: TestClient, sqlite_queue: SqlQueue,
                                         job_id: int) -> None:
    for route in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/retry"):
        answer = client.get(route, headers=AUTH) if route.count("/") == 3 else \
            client.post(route, headers=AUTH)
        assert (answer.status_code, answer.json()) == (404, {"error": f"no job {job_id} in the queue"})
    heartbeat = client.post(f"/v1/jobs/{job_id}/heartbeat", json={"worker_id": "w"}, headers=AUTH)
    assert heartbeat.status_code == 409
    with pytest.raises(NotFound):
        sqlite_queue.retry(job_id)


def test_a_naive_received_at_is_refused_by_the_model() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        PublishRequest.from_json({"registry": "r", "repository": "a", "source": "cli",
                                  "received_at": "2026-03-01T12:00:00"})


def test_workers_claim_heartbeat_and_complete_over_http(client: TestClient,
                                                        publish_request: Build) -> None:
    job_id = client.post("/v1/jobs", json=publish_request().to_json(), headers=AUTH).json()["job_id"]
    claimed = client.post("/v1/claim", json={"worker_id": "w1"}, headers=AUTH)
    assert claimed.status_code == 200
    assert (claimed.json()["id"], claimed.json()["state"], claimed.json()["lease_owner"]) == (
        job_id, "running", "w1")
    assert schema_errors(claimed.json(), "job") == []
    assert client.post("/v1/claim", json={"worker_id": "w2"}, headers=AUTH).status_code == 204

    beat = client.post(f"/v1/jobs/{job_id}/heartbeat", json={"worker_id": "w1"}, headers=AUTH)
    assert (beat.status_code, beat.json()) == (200, {"ok": True})
    lost = client.post(f"/v1/jobs/{job_id}/heartbeat", json={"worker_id": "w2"}, headers=AUTH)
    assert lost.status_code == 409
    done = client.post(f"/v1/jobs/{job_id}/complete", json={"worker_id": "w1", "result": {"n": 1}},
                       headers=AUTH)
    assert done.status_code == 200
    assert client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()["result"] == {"n": 1}
    assert client.post("/v1/claim", json={}, headers=AUTH).status_code == 400


def test_fail_release_and_retry_over_http(client: TestClient, publish_request: Build) -> None:
    job_id = client.post("/v1/jobs", json=publish_request().to_json(), headers=AUTH).json()["job_id"]
    worker = {"worker_id": "w1"}
    client.post("/v1/claim", json=worker, headers=AUTH)
    assert client.post(f"/v1/jobs/{job_id}/release", json=worker, headers=AUTH).status_code == 200
    client.post("/v1/claim", json=worker, headers=AUTH)
    bad = client.post(f"/v1/jobs/{job_id}/fail", json=worker | {"error": "x"}, headers=AUTH)
    assert bad.status_code == 400
    failed = client.post(f"/v1/jobs/{job_id}/fail",
                         json=worker | {"error": "manifest unknown", "temporary": False}, headers=AUTH)
    assert failed.status_code == 200
    job = client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()
    assert (job["state"], job["attempts"], job["last_error"]) == ("failed", 1, "manifest unknown")

    retried = client.post(f"/v1/jobs/{job_id}/retry", headers=AUTH)
    assert (retried.status_code, retried.json()["state"], retried.json()["attempts"]) == (
        200, "pending", 0)
    again = client.post(f"/v1/jobs/{job_id}/retry", headers=AUTH)
    assert again.status_code == 409 and "only failed jobs can be retried" in again.json()["error"]
    assert client.post("/v1/jobs/424242/retry", headers=AUTH).status_code == 404
    assert client.get("/v1/jobs", params={"state": "lost"}, headers=AUTH).status_code == 400
    assert client.get("/v1/jobs", params={"limit": "0"}, headers=AUTH).status_code == 400


def test_locked_database_answers_503_with_retry_after(client: TestClient, sqlite_queue: SqlQueue,
                                                      publish_request: Build) -> None:
    holder = _hold_write_lock(sqlite_queue)
    try:
        response = client.post("/v1/jobs", json=publish_request().to_json(), headers=AUTH)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "database is locked" in response.json()["error"]
    assert client.post("/v1/jobs", json=publish_request().to_json(), headers=AUTH).status_code == 201


def test_the_service_needs_a_token(sqlite_queue: SqlQueue) -> None:
    with pytest.raises(ConfigError, match="needs a token"):
        create_queue_app(sqlite_queue, "")


def test_http_client_against_real_uvicorn(served: str, sqlite_queue: SqlQueue,
                                          publish_request: Build) -> None:
    with HttpQueueClient(served, TOKEN, timeout=5) as remote:
        sink: JobSink = remote
        source: JobSource = remote
        queued = sink.enqueue(publish_request())
        assert queued.created and not sink.enqueue(publish_request()).created
        assert sqlite_queue.get(queued.job_id).state == JobState.PENDING
        remote.ping()

        job = source.claim("w1")
        assert job is not None and (job.id, job.attempts) == (queued.job_id, 1)
        assert job == sqlite_queue.get(job.id)
        assert source.claim("w2") is None
        assert source.heartbeat(job.id, "w1") and not source.heartbeat(job.id, "w2")
        assert source.fail(job.id, "w1", "registry timeout", temporary=True)
        assert remote.get(job.id).available_at > job.updated_at  # backing off

        other = sink.enqueue(publish_request(tag="stable")).job_id
        claimed = source.claim("w1")
        assert claimed is not None and claimed.id == other
        assert source.release(other, "w1") and not source.release(other, "w1")
        assert source.claim("w1") == remote.get(other)
        assert source.complete(other, "w1", {"path": "/x"})
        assert not source.complete(other, "w1", {})
        assert [j.id for j in remote.list(JobState.DONE)] == [other]
        assert remote.counts() == {JobState.PENDING: 1, JobState.RUNNING: 0, JobState.DONE: 1,
                                   JobState.FAILED: 0}

        with pytest.raises(NotFound):
            remote.get(424242)
        with pytest.raises(UsageError, match="only failed jobs"):
            remote.retry(other)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_thread_per_heartbeat_leaks_no_sockets(served: str, publish_request: Build) -> None:
    # A worker starts a heartbeat thread per job; the service runs in this process, so both
    # ends of every connection left open would show here.
    with HttpQueueClient(served, TOKEN, timeout=5) as remote:
        remote.enqueue(publish_request())
        job = remote.claim("w1")
        assert job is not None and remote.heartbeat(job.id, "w1")
        before = _open_fds()
        beats: list[bool] = []
        for _ in range(100):
            thread = threading.Thread(target=lambda: beats.append(remote.heartbeat(job.id, "w1")))
            thread.start()
            thread.join()
        assert beats == [True] * 100
        assert _open_fds() - before < 10  # was 200: a session and a connection per thread


def test_http_client_errors_are_queue_unavailable(served: str, sqlite_queue: SqlQueue,
                                                  publish_request: Build) -> None:
    with pytest.raises(QueueUnavailable, match="refused our token"):
        HttpQueueClient(served, "wrong-token", timeout=5).enqueue(publish_request())

    holder = _hold_write_lock(sqlite_queue)
    try:
        with pytest.raises(QueueUnavailable, match=r"answered 503: job queue .* database is locked"):
            HttpQueueClient(served, TOKEN, timeout=5).enqueue(publish_request())
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_enqueue_answered_by_anything_but_the_service_is_queue_unavailable(
        publish_request: Build) -> None:
    misdirected = pytest.raises(QueueUnavailable, match=r"answered 404 \(Not Found\) to a "
                                r"publish request: check \[queue\] url$")
    with answering(404, b"<h1>Not Found</h1>") as url, HttpQueueClient(url, TOKEN) as remote, \
            misdirected:
        remote.enqueue(publish_request())
    # The service refusing the request itself says why, as a UsageError.
    refused = pytest.raises(UsageError, match=r"^queue service .*: publish request: tag: too long$")
    body = b'{"error": "publish request: tag: too long"}'
    with answering(400, body, "application/json") as url, HttpQueueClient(url, TOKEN) as remote, \
            refused:
        remote.enqueue(publish_request())


def test_service_down_is_queue_unavailable(publish_request: Build) -> None:
    down = HttpQueueClient(f"http://user:pw@127.0.0.1:{free_port()}", TOKEN, timeout=2)
    with pytest.raises(QueueUnavailable,
                       match=r"queue service http://user:\*\*\*@127\.0\.0\.1:\d+ unreachable") as raised:
        down.enqueue(publish_request())
    assert "pw" not in str(raised.value) and TOKEN not in str(raised.value)
    with pytest.raises(QueueUnavailable):
        down.claim("w1")
    with pytest.raises(ConfigError):
        HttpQueueClient("ftp://queue.example", TOKEN)
