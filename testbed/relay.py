"""Helpers for the relay tests: configs written as real TOML, sinks, signed bodies, fixtures."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from ligoenv.store.errors import QueueUnavailable
from ligoenv_server.config import ServerConfig, load_config
from ligoenv_server.jobs import EnqueueResult, JobSink, PublishRequest
from ligoenv_server.queue.sql import SqlQueue
from ligoenv_server.relay import create_relay_app

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "server" / "relay_fixtures"
NOW = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)
REGISTRY = "127.0.0.1:5000"
DISTRIBUTION_V1 = "application/vnd.docker.distribution.events.v1+json"

# Every endpoint kind and auth type, as an operator would write them.
CONFIG = f"""
[relay]
host = "127.0.0.1"
port = 8080
body_limit = 4096

[registries.local]
host = "{REGISTRY}"

[registries.gitlab]
host = "registry.gitlab.com"

[registries.hub]
host = "docker.io"

[registries.harbor]
host = "harbor.example.org"

[[relay.endpoints]]
name = "local"
kind = "distribution"
path = "/hooks/distribution"
registry = "local"
auth = {{ type = "bearer", secret = "local-token" }}

[[relay.endpoints]]
name = "gitlab"
kind = "distribution"
path = "/hooks/gitlab"
registry = "gitlab"
auth = {{ type = "gitlab", secret_env = "TEST_GITLAB_TOKEN" }}
allow = ["lvk/*", "other/app:release-*"]

[[relay.endpoints]]
name = "hub"
kind = "dockerhub"
path = "/hooks/dockerhub/{{secret}}"
registry = "hub"
auth = {{ type = "url-secret", secret = "hub-path-secret" }}

[[relay.endpoints]]
name = "harbor"
kind = "harbor"
path = "/hooks/harbor"
registry = "harbor"
auth = {{ type = "header", header = "Authorization", secret = "Basic harbor-secret" }}

[[relay.endpoints]]
name = "ci"
kind = "generic"
path = "/hooks/ci"
registry = "local"
auth = {{ type = "hmac", secret_file = "ci.secret" }}
"""
SECRETS = {"TEST_GITLAB_TOKEN": "gitlab-token"}
CI_SECRET = "ci-hmac-secret"  # noqa: S105 (the tests' own secret)


def write_config(directory: Path, text: str = CONFIG) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ci.secret").write_text(CI_SECRET + "\n")
    path = directory / "server.toml"
    path.write_text(text)
    return path


def relay_config(directory: Path, text: str = CONFIG) -> ServerConfig:
    return load_config(write_config(directory, text), environ=SECRETS)


class MemorySink:
    """A JobSink that keeps requests in a list, deduplicates like the queue, and can be down."""

    def __init__(self) -> None:
        self.requests: list[PublishRequest] = []
        self.down = False

    def enqueue(self, request: PublishRequest) -> EnqueueResult:
        if self.down:
            raise QueueUnavailable("queue database is locked")
        for job_id, queued in enumerate(self.requests, start=1):
            if queued.dedup_key() == request.dedup_key():
                return EnqueueResult(job_id, created=False)
        self.requests.append(request)
        return EnqueueResult(len(self.requests), created=True)

    def queued(self) -> list[PublishRequest]:
        return list(self.requests)


class FlakySink:
    """A real SQLite queue that, while `down`, fails every enqueue the way an unreachable one does."""

    def __init__(self, queue: SqlQueue) -> None:
        self.queue = queue
        self.down = False

    def enqueue(self, request: PublishRequest) -> EnqueueResult:
        if self.down:
            raise QueueUnavailable("cannot reach the queue database")
        return self.queue.enqueue(request)

    def queued(self) -> list[PublishRequest]:
        return [job.request for job in sorted(self.queue.list(), key=lambda job: job.id)]


@contextmanager
def open_sink(kind: str, directory: Path) -> Iterator[MemorySink | FlakySink]:
    """`memory` (our own test double) or `sqlite` (the real queue, in a file under `directory`)."""
    if kind == "memory":
        yield MemorySink()
        return
    with SqlQueue(f"sqlite:///{directory / 'queue.db'}") as queue:
        yield FlakySink(queue)


@contextmanager
def relay_client(config: ServerConfig, sink: JobSink) -> Iterator[TestClient]:
    with TestClient(create_relay_app(config, sink, clock=lambda: NOW)) as client:
        yield client


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str) -> Any:
    return json.loads(fixture_bytes(name))


def to_body(document: Any) -> bytes:
    return json.dumps(document).encode()


@contextmanager
def answering(status: int, body: bytes = b"", content_type: str = "text/html") -> Iterator[str]:
    """A tiny HTTP server on loopback answering every request with `status` and `body`: what a
    queue URL pointing at the wrong place (another web server, a proxy) gets back."""

    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if 300 <= status < 400:
                self.send_header("Location", "https://elsewhere.invalid/")
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = answer

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output quiet

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
