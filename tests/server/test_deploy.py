"""deploy/: the systemd units pass `systemd-analyze verify` and its security check, and each
long-running unit's ExecStart line, run as written (paths and ports substituted), starts a
server that answers /healthz and /readyz on the shipped config."""

from __future__ import annotations

import itertools
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from testbed.postgres import PostgresCluster
from testbed.registry import RegistryProcess, free_port
from testbed.stack import wait_for

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = DEPLOY / "systemd"
SERVER = str(Path(sys.executable).parent / "ligoenv-server")
SECRETS = {"LIGOENV_WEBHOOK_SECRET": "deploy-test-webhook", "LIGOENV_QUEUE_TOKEN": "deploy-test-token",
           "PGPASSWORD": "unused-with-trust-auth"}
_databases = itertools.count(1)


def unit(name: str) -> dict[str, list[str]]:
    """The [Service] (or [Timer]) settings of a unit, each key with all its values in order."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in (UNITS / name).read_text().splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif line and not line.startswith("#") and "=" in line and section in ("Service", "Timer"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def services() -> list[str]:
    return sorted(p.name for p in UNITS.glob("*.service"))


def test_every_role_has_a_unit() -> None:
    assert services() == ["ligoenv-gc.service", "ligoenv-queue.service", "ligoenv-relay.service",
                          "ligoenv-sync.service", "ligoenv-worker@.service"]
    assert sorted(p.name for p in UNITS.glob("*.timer")) == ["ligoenv-gc.timer", "ligoenv-sync.timer"]


@pytest.mark.parametrize("name", services())
def test_units_are_hardened(name: str) -> None:
    settings = unit(name)
    for key, value in {"User": "ligoenv", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "PrivateTmp": "yes", "ProtectHome": "yes", "CapabilityBoundingSet": "",
                       "EnvironmentFile": "/etc/ligoenv/ligoenv-server.env"}.items():
        assert settings.get(key) == [value], key
    writable = settings.get("ReadWritePaths", [])
    publishes = name.startswith(("ligoenv-worker", "ligoenv-gc"))
    assert writable == (["/srv/ligoenv/publish"] if publishes else [])
    assert 'root = "/srv/ligoenv/publish"' in (DEPLOY / "server.toml").read_text()


def _installed_copy(tmp_path: Path) -> Path:
    """The units as installed: ExecStart's program where this checkout has it."""
    target = tmp_path / "units"
    target.mkdir()
    for path in UNITS.iterdir():
        (target / path.name).write_text(path.read_text().replace("/opt/ligoenv/bin/ligoenv-server",
                                                                 SERVER))
    return target


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd; scripts/setup.sh)")
    return found


def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    analyze = _systemd_analyze()
    units = sorted(str(p) for p in _installed_copy(tmp_path).iterdir() if p.suffix in (".service", ".timer"))
    done = subprocess.run([analyze, "verify", *units], capture_output=True, text=True, check=False)
    # verify exits 0 on unknown keys and bad values, only warning: any output is a finding.
    assert (done.returncode, done.stderr.strip(), done.stdout.strip()) == (0, "", "")


@pytest.mark.parametrize("name", services())
def test_systemd_rates_each_service_well_hardened(tmp_path: Path, name: str) -> None:
    analyze = _systemd_analyze()
    copy = _installed_copy(tmp_path)
    done = subprocess.run([analyze, "security", "--offline=true", "--threshold=20",
                           "--no-pager", str(copy / name)], capture_output=True, text=True, check=False)
    # Exposure on systemd's 0-10 scale, x10 for --threshold: at most 2.0 (they rate 1.7, "OK").
    assert done.returncode == 0, done.stdout[-600:] + done.stderr


def test_the_sysusers_file_makes_the_units_user(tmp_path: Path) -> None:
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is None:
        pytest.skip("systemd-sysusers is not installed (Debian package systemd; scripts/setup.sh)")
    (tmp_path / "etc").mkdir()
    subprocess.run([sysusers, f"--root={tmp_path}", str(UNITS / "ligoenv.sysusers")],
                   check=True, capture_output=True)
    (entry,) = (tmp_path / "etc/passwd").read_text().splitlines()
    name, _, _, _, _, home, shell = entry.split(":")
    assert (name, home, shell) == ("ligoenv", "/var/lib/ligoenv", "/usr/sbin/nologin")


# -- the ExecStart lines, run --------------------------------------------------------------

@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    process = RegistryProcess(tmp_path_factory.mktemp("registry")).start()
    yield process
    process.stop()


def _deployment(tmp_path: Path, registry_host: str, queue_url: str, relay_port: int) -> dict[str, str]:
    """deploy/server.toml and the environment file with this machine's paths, ports, registry and
    database in place of the deployment's; returns the path mapping to apply to unit lines."""
    (tmp_path / "publish").mkdir()
    config = (DEPLOY / "server.toml").read_text()
    for old, new in {"/var/lib/ligoenv": str(tmp_path / "state"),
                     "/srv/ligoenv/publish": str(tmp_path / "publish"),
                     "postgresql+psycopg://ligoenv@127.0.0.1:5432/ligoenv": queue_url,
                     "containers.ligo.org": registry_host,
                     "port = 8080": f"port = {relay_port}"}.items():
        assert old in config, old
        config = config.replace(old, new)
    (tmp_path / "server.toml").write_text(config)
    env_file = (DEPLOY / "ligoenv-server.env").read_text()
    for key, value in SECRETS.items():
        env_file, found = re.subn(rf"^{key}=.*$", f"{key}={value}", env_file, flags=re.M)
        assert found == 1, key
    (tmp_path / "ligoenv-server.env").write_text(env_file)
    return {"/opt/ligoenv/bin/ligoenv-server": SERVER, "/etc/ligoenv": str(tmp_path),
            "/run/ligoenv-metrics": str(tmp_path / "run-metrics")}


def _environment(settings: dict[str, list[str]], paths: dict[str, str]) -> dict[str, str]:
    """What systemd gives the process: the EnvironmentFile's variables, then Environment=."""
    env = {"PATH": "/usr/bin:/bin", "HOME": paths["/etc/ligoenv"]}
    for file in settings.get("EnvironmentFile", []):
        for line in Path(_substitute(file, paths)).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                key, _, value = line.partition("=")
                env[key.strip()] = value.strip()
    for assignment in settings.get("Environment", []):
        key, _, value = assignment.partition("=")
        env[key] = _substitute(value, paths)
    return env


def _substitute(text: str, paths: dict[str, str]) -> str:
    for old, new in paths.items():
        text = text.replace(old, new)
    return text


@pytest.mark.postgres
@pytest.mark.parametrize(("name", "port_option", "listen"), [
    ("ligoenv-relay.service", None, None),
    ("ligoenv-queue.service", "--port", "8081"),
    ("ligoenv-worker@.service", "--metrics-port", "9102"),
])
def test_exec_start_as_written_serves_health(tmp_path: Path, registry: RegistryProcess,
                                            postgres_cluster: PostgresCluster, name: str,
                                            port_option: str | None, listen: str | None) -> None:
    relay_port = free_port()
    paths = _deployment(tmp_path, registry.host,
                        postgres_cluster.create_database(f"deploy_{next(_databases)}"), relay_port)
    settings = unit(name)
    for directory in settings.get("RuntimeDirectory", []):  # what systemd creates first
        (tmp_path / f"run-{directory.removeprefix('ligoenv-')}").mkdir()
    (exec_start,) = settings["ExecStart"]
    argv = [_substitute(arg, paths) for arg in shlex.split(exec_start)]
    port = relay_port
    if port_option is not None:
        position = argv.index(port_option) + 1
        assert argv[position] == listen
        port = free_port()
        argv[position] = str(port)
    log = (tmp_path / "service.log").open("wb")
    process = subprocess.Popen(argv, env=_environment(settings, paths), cwd=tmp_path,
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url, process), f"{name} to answer /healthz", 30)
        assert process.poll() is None, (tmp_path / "service.log").read_text()
        ready = requests.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert requests.get(f"{url}/metrics", timeout=10).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)  # what `systemctl stop` sends
        code = process.wait(60)
    # uvicorn ends by raising the signal again once shut down; systemd counts SIGTERM as clean.
    assert code in (0, -signal.SIGTERM), (tmp_path / "service.log").read_text()
    assert "Traceback" not in (tmp_path / "service.log").read_text()


def _answers(url: str, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"the service exited with {process.returncode}")
    try:
        return requests.get(f"{url}/healthz", timeout=1).status_code == 200
    except requests.ConnectionError:
        return False
