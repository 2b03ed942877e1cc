"""The whole server side for end-to-end tests: a real registry whose webhooks reach a real
`ligoenv-server` process (relay, SQLite queue, worker, directory publisher)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from ligoenv.store.index import RepositoryIndex
from ligoenv.store.index.files import LocalFiles
from ligoenv.store.index.reader import load_repository
from testbed.registry import RegistryProcess, free_port

SERVER = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "ligoenv-server"
SECRET = "e2e-webhook-secret"  # noqa: S105 (the tests' own secret)


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll `predicate` until it returns something truthy (events arrive asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def server_config(workdir: Path, registry_host: str, relay_port: int, *, queue_url: str = "",
                  lease_seconds: int = 60, extra: str = "", queue_token: str = "",
                  name: str = "server.toml", publisher: str = "", relay: str = "") -> Path:
    """A config for the stack; `publisher` replaces the body of [publisher] (a directory root),
    `relay` adds lines to [relay]."""
    path = workdir / name
    publisher = publisher or f'backend = "directory"\nroot = "{workdir / "publish"}"'
    token = f'token = "{queue_token}"' if queue_token else ""
    path.write_text(f"""
state_dir = "{workdir / 'state'}"

[relay]
host = "127.0.0.1"
port = {relay_port}
{relay}

[[relay.endpoints]]
name = "local"
kind = "distribution"
path = "/hooks/registry"
registry = "local"
auth = {{ type = "bearer", secret = "{SECRET}" }}

[registries.local]
host = "{registry_host}"

[queue]
url = "{queue_url or f'sqlite:///{workdir / "state" / "queue.db"}'}"
lease_seconds = {lease_seconds}
max_attempts = 5
{token}

[publisher]
{publisher}

[worker]
poll_interval = 0.1
cache_dir = "{workdir / 'state' / 'cache'}"

[log]
format = "json"
{extra}
""")
    return path


@dataclass
class Stack:
    workdir: Path
    registry: RegistryProcess
    relay_port: int
    config: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.workdir / "publish"

    @property
    def relay_url(self) -> str:
        return f"http://127.0.0.1:{self.relay_port}"

    def start(self, command: str = "serve", *extra: str, config: Path | None = None,
              ready_url: str | None = None) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{command}.log").open("ab")
        process = subprocess.Popen([str(SERVER), command, "--config", str(config or self.config), *extra],
                                   stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.processes.append(process)
        if command in ("serve", "relay") or ready_url:
            url = ready_url or self.relay_url
            wait_for(lambda: _healthy(url), f"{url}/healthz to answer", 20)
        return process

    def stop_all(self, sig: int = signal.SIGTERM) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(sig)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def index(self, repository: str) -> RepositoryIndex | None:
        return load_repository(LocalFiles(self.root), self.registry.host, repository)

    def jobs(self) -> list[dict[str, Any]]:
        out = subprocess.run([str(SERVER), "jobs", "--config", str(self.config), "--json"],
                             check=True, capture_output=True, text=True).stdout
        return list(json.loads(out))

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.workdir.glob("*.log"))


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


def start_registry(workdir: Path, relay_port: int) -> RegistryProcess:
    """A registry whose notifications go to the relay's endpoint, with its bearer secret."""
    endpoint = {
        "name": "ligoenv", "url": f"http://127.0.0.1:{relay_port}/hooks/registry",
        "headers": {"Authorization": [f"Bearer {SECRET}"]},
        "timeout": "2s", "threshold": 3, "backoff": "300ms",
    }
    return RegistryProcess(workdir / "registry", notifications=[endpoint]).start()


def new_stack(workdir: Path, **config: Any) -> Stack:
    relay_port = free_port()
    registry = start_registry(workdir, relay_port)
    return Stack(workdir, registry, relay_port,
                 server_config(workdir, registry.host, relay_port, **config))
