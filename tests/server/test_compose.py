"""deploy/compose.yaml without Docker: its registry notification setting, read by Debian's real
registry, and its relay config, run by the real relay, carry a push into the queue."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from ligoenv_server.jobs import JobState
from ligoenv_server.queue.sql import SqlQueue
from testbed.images import build_busybox_image, push_image
from testbed.postgres import PostgresCluster
from testbed.registry import free_port
from testbed.stack import SERVER, wait_for

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SECRET = "compose-test-secret"


def compose_text() -> str:
    return (DEPLOY / "compose.yaml").read_text()


def test_compose_names_files_that_exist() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed")
    compose = yaml.safe_load(compose_text())
    assert set(compose["services"]) == {"postgres", "registry", "relay", "worker"}
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).is_file(), source
    build = compose["services"]["relay"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()


def _endpoints(relay_port: int) -> str:
    """REGISTRY_NOTIFICATIONS_ENDPOINTS as compose passes it: interpolated, relay on loopback."""
    match = re.search(r"^\s+REGISTRY_NOTIFICATIONS_ENDPOINTS: '(.+)'$", compose_text(), re.M)
    assert match, "compose.yaml sets the registry's endpoints in one quoted line"
    value = re.sub(r"\$\{LIGOENV_WEBHOOK_SECRET[^}]*\}", SECRET, match.group(1))
    return value.replace("http://relay:8080", f"http://127.0.0.1:{relay_port}")


@pytest.mark.postgres
def test_a_push_reaches_the_queue_through_the_compose_configs(
        tmp_path: Path, postgres_cluster: PostgresCluster) -> None:
    relay_port, registry_port = free_port(), free_port()
    queue_url = postgres_cluster.create_database("compose_trial")
    config = (DEPLOY / "compose" / "server.toml").read_text()
    for old, new in {'host = "0.0.0.0"': 'host = "127.0.0.1"', "port = 8080": f"port = {relay_port}",
                     "registry:5000": f"127.0.0.1:{registry_port}",
                     "postgresql+psycopg://ligoenv@postgres:5432/ligoenv": queue_url,
                     "/var/lib/ligoenv": str(tmp_path / "state"),
                     "/srv/ligoenv/publish": str(tmp_path / "publish")}.items():
        assert old in config, old
        config = config.replace(old, new)
    (tmp_path / "server.toml").write_text(config)
    env = {**os.environ, "LIGOENV_WEBHOOK_SECRET": SECRET}
    relay = subprocess.Popen([str(SERVER), "relay", "--config", str(tmp_path / "server.toml")],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    registry_env = {**os.environ, "REGISTRY_NOTIFICATIONS_ENDPOINTS": _endpoints(relay_port),
                    "REGISTRY_HTTP_ADDR": f"127.0.0.1:{registry_port}",
                    "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "registry")}
    registry = subprocess.Popen(["docker-registry", "serve", str(DEPLOY / "compose" / "registry.yml")],
                                env=registry_env, stdout=subprocess.DEVNULL,
                                stderr=(tmp_path / "registry.log").open("wb"))
    try:
        host = f"127.0.0.1:{registry_port}"
        digest = wait_for(lambda: _push(host), "the registry to take a push", 30)
        with SqlQueue(queue_url) as queue:
            jobs = wait_for(lambda: queue.list(state=JobState.PENDING), "the job", 30)
        assert [(j.request.repository, j.request.tag, j.request.digest) for j in jobs] == \
            [("trial/app", "v1", str(digest))]
    finally:
        for process in (registry, relay):
            process.terminate()
            process.wait(30)


def _push(host: str) -> object:
    try:
        return push_image(host, "trial/app", "v1", build_busybox_image("trial"))
    except Exception:  # not listening yet
        return None
