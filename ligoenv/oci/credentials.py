"""Registry credentials, found where `docker login` and `podman login` put them.

Looked up in `$REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG/config.json` and `~/.docker/config.json`:
inline `auths` entries and `credHelpers`/`credsStore` (`docker-credential-<name> get`).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ligoenv.oci.errors import AuthError
from ligoenv.oci.reference import DOCKER_HUB

DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io",
             "registry.hub.docker.com")
HELPER_TIMEOUT = 10.0


@dataclass(frozen=True)
class Credentials:
    """A username and a secret for one registry; the secret never appears in repr or logs."""

    username: str
    password: str = field(repr=False)
    source: str = ""  # where they came from, for messages

    def basic(self) -> str:
        """The base64 `user:password` value of an `Authorization: Basic` header."""
        return base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def config_files(env: Mapping[str, str] | None = None, home: Path | None = None) -> list[Path]:
    """The credential files to consult, most specific first (only those that exist)."""
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    candidates = []
    if env.get("REGISTRY_AUTH_FILE"):
        candidates.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("DOCKER_CONFIG"):
        candidates.append(Path(env["DOCKER_CONFIG"]) / "config.json")
    candidates.append(home / ".docker" / "config.json")
    return [path for path in candidates if path.is_file()]


def find_credentials(registry: str, *, env: Mapping[str, str] | None = None,
                     home: Path | None = None, timeout: float = HELPER_TIMEOUT) -> Credentials | None:
    """Credentials for `registry` (a reference's registry name), or None to go anonymous."""
    for path in config_files(env, home):
        found = _from_config(path, _load(path), registry, env, timeout)
        if found is not None:
            return found
    return None


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AuthError(f"cannot read registry credentials from {path}: {error}") from None
    if not isinstance(data, dict):
        raise AuthError(f"cannot read registry credentials from {path}: not a JSON object")
    return data


def _from_config(path: Path, config: dict[str, Any], registry: str, env: Mapping[str, str] | None,
                 timeout: float) -> Credentials | None:
    keys = _keys_for(registry)
    helpers = _matching(config.get("credHelpers"), keys)
    if helpers:
        key, name = helpers[0]
        return run_helper(str(name), key, registry, env=env, timeout=timeout)
    for key, entry in _matching(config.get("auths") or {}, keys):
        found = _inline(entry, f"{path} ({key})")
        if found is not None:
            return found
    if config.get("credsStore"):
        return run_helper(str(config["credsStore"]), _server_url(registry), registry, env=env,
                          timeout=timeout)
    return None


def _keys_for(registry: str) -> tuple[str, ...]:
    """The host names a config file may use for `registry`."""
    if registry == DOCKER_HUB or registry in _HUB_KEYS:
        return _HUB_KEYS
    return (registry,)


def _matching(section: Any, keys: tuple[str, ...]) -> list[tuple[str, Any]]:
    """Entries of `section` whose key names one of `keys` (with or without scheme and path)."""
    if not isinstance(section, dict):
        return []
    found = [(key, value) for key, value in section.items() if _hostname(key) in keys]
    return sorted(found, key=lambda item: keys.index(_hostname(item[0])))


def _hostname(key: str) -> str:
    # `docker login` has written keys as `host`, `https://host` and `https://host/v1/`.
    if key == DOCKER_HUB_AUTH_KEY:
        return key
    for prefix in ("https://", "http://"):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key.split("/", 1)[0]


def _server_url(registry: str) -> str:
    return DOCKER_HUB_AUTH_KEY if registry in (DOCKER_HUB, *_HUB_KEYS) else registry


def _inline(entry: Any, source: str) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(str(entry["auth"]), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise AuthError(f"malformed 'auth' value in {source}: log in again") from None
        username, colon, password = decoded.partition(":")
        if not colon:
            raise AuthError(f"malformed 'auth' value in {source}: log in again")
        return Credentials(username, password, source)
    if entry.get("username") and entry.get("password"):
        return Credentials(str(entry["username"]), str(entry["password"]), source)
    return None


def run_helper(name: str, server: str, registry: str, *, env: Mapping[str, str] | None = None,
               timeout: float = HELPER_TIMEOUT) -> Credentials | None:
    """Ask `docker-credential-<name>` for the credentials of `server`; None if it has none."""
    program = f"docker-credential-{name}"
    try:
        done = _run(program, server, env, timeout)
    except FileNotFoundError:
        raise AuthError(f"credential helper {program} (configured for {registry}) is not on PATH: "
                        "install it or remove it from your docker config") from None
    except subprocess.TimeoutExpired:
        raise AuthError(f"credential helper {program} did not answer within {timeout:g} s "
                        f"for {registry}: unlock your keychain or log in again") from None
    if done.returncode != 0:
        message = (done.stdout or done.stderr).decode(errors="replace").strip()
        if "credentials not found" in message.lower():
            return None
        # The helper's own words are safe to show: helpers never print the secret on failure.
        raise AuthError(f"credential helper {program} failed for {registry}: "
                        f"{message.splitlines()[0] if message else 'exit ' + str(done.returncode)}")
    return _helper_answer(done.stdout, program, registry)


def _run(program: str, server: str, env: Mapping[str, str] | None,
         timeout: float) -> subprocess.CompletedProcess[bytes]:
    # Its own session, so a timeout also stops whatever the helper started (gpg, pass, ...).
    with subprocess.Popen([program, "get"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=None if env is None else dict(env),
                          start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(server.encode(), timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _helper_answer(stdout: bytes, program: str, registry: str) -> Credentials | None:
    try:
        data = json.loads(stdout)
        username, secret = str(data["Username"]), str(data["Secret"])
    except (ValueError, KeyError, TypeError):
        raise AuthError(f"credential helper {program} gave an unreadable answer for {registry}") from None
    if not secret:
        return None
    return Credentials(username, secret, program)
