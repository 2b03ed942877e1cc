"""A throwaway Distribution registry (Debian's `docker-registry`) on a loopback port.

The demo, the benchmarks and the tests use it; it is not part of a production deployment.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import requests  # only the demo, benchmarks and tests use this module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RegistryProcess:
    """A throwaway registry: `host` is `127.0.0.1:PORT`; `stop()` kills it, `start()` revives it.

    With `access_log`, `requests()` counts the requests it has answered so far."""

    def __init__(self, workdir: Path, notifications: list[dict[str, Any]] | None = None,
                 port: int | None = None, access_log: bool = False) -> None:
        if shutil.which("docker-registry") is None:
            raise RuntimeError("docker-registry is not installed: run scripts/setup.sh")
        self.workdir = workdir
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        workdir.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "version": 0.1,
            # the access log (one line per request, in registry.log) lets benchmarks count requests
            "log": {"level": "warn", "accesslog": {"disabled": not access_log}},
            "storage": {"filesystem": {"rootdirectory": str(workdir / "storage")},
                        "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": "ligoenv-tests"},
        }
        if notifications:
            config["notifications"] = {"endpoints": notifications}
        # YAML is a superset of JSON, so the registry reads this file as its config.
        self.config_path = workdir / "config.yml"
        self.config_path.write_text(json.dumps(config))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RegistryProcess:
        log = (self.workdir / "registry.log").open("ab")
        self.process = subprocess.Popen(
            ["docker-registry", "serve", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/v2/", timeout=1).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"registry did not start: see {self.workdir / 'registry.log'}")

    def requests(self, method: str = "") -> int:
        """Requests to /v2/ in the access log (of `method` only, when given)."""
        text = (self.workdir / "registry.log").read_text(errors="replace")
        return sum(1 for line in text.splitlines() if f'"{method}' in line and " /v2/" in line)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def skopeo_push(layout: Path, tag_in_layout: str, destination: str) -> None:
    """Push `oci:LAYOUT:TAG` to `docker://DESTINATION` (a loopback registry, plain HTTP)."""
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--all", "--dest-tls-verify=false",
         f"oci:{layout}:{tag_in_layout}", f"docker://{destination}"],
        check=True, capture_output=True,
    )


def skopeo_digest(reference: str) -> str:
    """The manifest digest `skopeo inspect` reports for a reference on a loopback registry."""
    out = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{reference}"],
        check=True, capture_output=True,
    ).stdout
    import hashlib

    return "sha256:" + hashlib.sha256(out).hexdigest()
