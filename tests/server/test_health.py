"""Readiness: each check against the real thing (a registry process, a queue, a directory), and
the routes a Starlette role serves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from ligoenv_server.config import RegistryConfig, ServerConfig, load_config
from ligoenv_server.health import publish_root_check, queue_check, readiness, registry_check
from ligoenv_server.queue import HttpQueueClient
from ligoenv_server.queue.sql import SqlQueue
from ligoenv_server.roles import create_server_app
from testbed.registry import RegistryProcess, free_port


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    process = RegistryProcess(tmp_path_factory.mktemp("registry")).start()
    yield process
    process.stop()


def _config(tmp_path: Path, registry_host: str) -> ServerConfig:
    path = tmp_path / "server.toml"
    path.write_text(f"""
state_dir = "{tmp_path / 'state'}"
[[relay.endpoints]]
name = "local"
kind = "distribution"
path = "/hooks/registry"
registry = "local"
auth = {{ type = "none" }}
[registries.local]
host = "{registry_host}"
[publisher]
root = "{tmp_path / 'publish'}"
""")
    return load_config(path)


def test_every_check_passes_when_all_is_there(tmp_path: Path, registry: RegistryProcess) -> None:
    with SqlQueue(f"sqlite:///{tmp_path / 'q.db'}") as queue:
        ready, body = readiness([queue_check(queue), publish_root_check(tmp_path, writable=True),
                                 registry_check(RegistryConfig("local", registry.host))])
    assert ready
    assert body == {"status": "ready", "checks": {"queue": "ok", "publish_root": "ok",
                                                  "registry local": "ok"}}


def test_not_ready_names_each_reason(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    queue = HttpQueueClient(f"http://127.0.0.1:{port}", "token", timeout=2)
    ready, body = readiness([queue_check(queue),
                             publish_root_check(tmp_path / "absent", writable=False),
                             registry_check(RegistryConfig("down", f"127.0.0.1:{port}"))])
    assert not ready
    assert body["status"] == "not ready"
    checks = body["checks"]
    assert checks["publish_root"] == f"{tmp_path / 'absent'} is not a directory (is it mounted?)"
    assert f"127.0.0.1:{port}" in checks["queue"]
    assert f"127.0.0.1:{port}" in checks["registry down"]
    assert body["reason"].startswith("queue: ") and "publish_root: " in body["reason"]


def test_the_queue_service_check_hides_the_database(tmp_path: Path) -> None:
    queue = HttpQueueClient(f"http://127.0.0.1:{free_port()}", "token", timeout=2)
    assert queue_check(queue, detail=False).probe() == "database unavailable"


def test_serve_answers_readyz_and_metrics(tmp_path: Path, registry: RegistryProcess) -> None:
    config = _config(tmp_path, registry.host)
    with TestClient(create_server_app(config, run_workers=False)) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert (ready.status_code, ready.json()["checks"]) == (200, {"queue": "ok"})
        page = client.get("/metrics")
        assert page.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert 'ligoenv_jobs{state="pending"} 0.0' in page.text


def test_serve_is_not_ready_without_its_registry(tmp_path: Path) -> None:
    config = _config(tmp_path, f"127.0.0.1:{free_port()}")
    with TestClient(create_server_app(config, drain_seconds=0)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["publish_root"] == "ok"
        assert ready.json()["reason"].startswith("registry local: ")
        host = config.registries["local"].host
        assert f'ligoenv_registry_request_errors_total{{registry="{host}"}} 1.0' in \
            client.get("/metrics").text.splitlines()
