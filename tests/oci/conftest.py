"""Fixtures of the OCI core tests: clients, unique repositories, registries that need a login,
credential files and helpers, and a scripted HTTP stub for answers a real registry never gives."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ligoenv.oci.registry import RegistryClient
from testbed.registry import RegistryProcess
from testbed.tokenserver import TokenServer

USER, PASSWORD = "alice", "s3cret-pass"


@pytest.fixture(autouse=True)
def no_user_credentials(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Tests never read the real ~/.docker/config.json: HOME is an empty directory."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    return home


@pytest.fixture()
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name of this test's own on the shared registry."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    return f"tests/{name[:100]}"


@pytest.fixture()
def client(registry: RegistryProcess) -> Iterator[RegistryClient]:
    with RegistryClient(registry.host, anonymous=True) as c:
        yield c


def blob_file(registry: RegistryProcess, digest: Any) -> Path:
    """Where the registry stores a blob's bytes (to tamper with them)."""
    return (registry.workdir / "storage/docker/registry/v2/blobs" / digest.algorithm
            / digest.hex[:2] / digest.hex / "data")


class LoginRegistry(RegistryProcess):
    """The real registry with an `auth` section: ready when /v2/ answers 401."""

    def __init__(self, workdir: Path, auth: dict[str, Any]) -> None:
        super().__init__(workdir)
        config = json.loads(self.config_path.read_text())
        config["auth"] = auth
        self.config_path.write_text(json.dumps(config))

    def start(self) -> LoginRegistry:
        log = (self.workdir / "registry.log").open("ab")
        self.process = subprocess.Popen(["docker-registry", "serve", str(self.config_path)],
                                        stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if requests.get(f"{self.url}/v2/", timeout=1).status_code == 401:
                    return self
            except requests.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"registry did not start: see {self.workdir / 'registry.log'}")


def bcrypt_hash(password: str) -> str:
    # Neither htpasswd nor the bcrypt package is installed; glibc's crypt() (libxcrypt) does bcrypt.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 4))


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoginRegistry]:
    """The real registry behind htpasswd (Basic) auth: user alice."""
    workdir = tmp_path_factory.mktemp("basic-registry")
    htpasswd = workdir / "htpasswd"
    htpasswd.write_text(f"{USER}:{bcrypt_hash(PASSWORD)}\n")
    process = LoginRegistry(workdir, {"htpasswd": {"realm": "ligoenv-tests", "path": str(htpasswd)}})
    yield process.start()
    process.stop()


@pytest.fixture(scope="session")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    server = TokenServer(tmp_path_factory.mktemp("token-server"), USER, PASSWORD).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory,
                   token_server: TokenServer) -> Iterator[LoginRegistry]:
    """The real registry with bearer-token auth from `token_server`."""
    process = LoginRegistry(tmp_path_factory.mktemp("token-registry"), token_server.auth_config())
    yield process.start()
    process.stop()


def write_docker_config(directory: Path, config: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.json"
    path.write_text(json.dumps(config))
    return path


def inline_auth(user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture()
def helper_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in `docker-credential-test` on PATH: knows alice for the hosts in its store file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    store = tmp_path / "helper-store.json"
    store.write_text("{}")
    script = bin_dir / "docker-credential-test"
    script.write_text(f"""#!/bin/sh
read server
echo "$server" >> {tmp_path}/helper-calls
case "$server" in
  slow) sleep 30 ;;
esac
exec {sys.executable} - "$server" <<'EOF'
import json, sys
store = json.load(open({str(store)!r}))
entry = store.get(sys.argv[1])
if entry is None:
    print("credentials not found in native keychain")
    sys.exit(1)
print(json.dumps({{"ServerURL": sys.argv[1], "Username": entry[0], "Secret": entry[1]}}))
EOF
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return store


class Sleeps(list[float]):
    """An injectable sleep that records the delays instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture()
def sleeps() -> Sleeps:
    return Sleeps()
