"""`ligoenv-server` as a user runs it: publish by hand, list and retry jobs, check the config."""

from __future__ import annotations

import gc
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ligoenv_server.config import load_config
from ligoenv_server.jobs import JobState
from ligoenv_server.publishers.directory import DirectoryPublisher
from ligoenv_server.queue import SqlQueue
from testbed.images import build_busybox_image, push_image
from testbed.registry import RegistryProcess, free_port
from testbed.stack import SERVER, server_config


def server(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SERVER), *map(str, args)], capture_output=True, text=True,
                          check=check, timeout=120)


@pytest.fixture()
def config(tmp_path: Path, registry: RegistryProcess) -> Path:
    return server_config(tmp_path, registry.host, free_port())


def test_publish_by_hand_then_again_moves_only_the_tag(config: Path, registry: RegistryProcess) -> None:
    digest = push_image(registry.host, "cli/app", "v1", build_busybox_image("cli-v1"))
    first = json.loads(server("publish", f"{registry.host}/cli/app:v1", "-c", config, "--json").stdout)
    assert first["digest"] == str(digest) and first["unpacked"] == [str(digest)]
    push_image(registry.host, "cli/app", "stable", build_busybox_image("cli-v1"))
    again = json.loads(server("publish", f"{registry.host}/cli/app:stable", "-c", config, "--json").stdout)
    assert again["unpacked"] == [] and again["reused"] == [str(digest)]
    human = server("publish", f"{registry.host}/cli/app:stable", "-c", config).stdout
    assert f"published {digest} as :stable" in human and "nothing unpacked" in human


def test_jobs_and_retry_of_a_dead_letter(config: Path, registry: RegistryProcess) -> None:
    queued = server("publish", f"{registry.host}/cli/missing:v1", "-c", config, "--enqueue", "--json")
    job_id = json.loads(queued.stdout)["job_id"]
    cfg = load_config(config)
    queue = SqlQueue(cfg.queue.url, max_attempts=1)
    job = queue.claim("test-worker")
    assert job is not None and job.id == job_id
    queue.fail(job.id, "test-worker", "manifest unknown", temporary=False)
    listing = server("jobs", "-c", config, "--state", "failed").stdout
    assert "cli/missing:v1" in listing and "manifest unknown" in listing
    assert "is pending again" in server("retry", str(job_id), "-c", config).stdout
    assert queue.get(job_id).state is JobState.PENDING
    queue.close()


def test_errors_are_one_line(config: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[publisher]\nbackend = "ftp"\n')
    result = server("check-config", "-c", bad, check=False)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "publisher.backend" in result.stderr
    missing = server("retry", "999", "-c", config, check=False)
    assert missing.returncode == 3 and "Traceback" not in missing.stderr
    unreachable = server("publish", "127.0.0.1:1/x/y:z", "-c", config, check=False)
    assert unreachable.returncode != 0 and unreachable.stderr.startswith("ligoenv-server: error:")


def test_check_config_never_prints_secrets(config: Path) -> None:
    out = server("check-config", "-c", config).stdout
    assert "/hooks/registry" in out and "e2e-webhook-secret" not in out


def test_serve_refuses_an_open_endpoint_off_loopback(tmp_path: Path) -> None:
    result = server("serve", "--host", "0.0.0.0", "--state-dir", tmp_path, check=False)
    assert result.returncode == 2
    assert "has no authentication" in result.stderr and result.stderr.count("\n") == 1
    config = server_config(tmp_path, "127.0.0.1:5000", free_port())
    mixed = server("serve", "-c", config, "--registry", "127.0.0.1:5001", check=False)
    assert mixed.returncode == 2 and "--registry" in mixed.stderr


def test_no_webhook_endpoints_is_a_warning_to_check_and_refused_by_the_relay(tmp_path: Path) -> None:
    bare = tmp_path / "bare.toml"
    bare.write_text(f'state_dir = "{tmp_path / "state"}"\n[relay]\nport = {free_port()}\n')
    checked = server("check-config", "-c", bare)
    assert checked.stderr.splitlines() == [
        "ligoenv-server: warning: no [[relay.endpoints]]: the relay accepts no webhook; add one "
        "(docs/server-config.example.toml shows every kind)"]
    for command in ("relay", "serve"):
        refused = server(command, "-c", bare, check=False)
        assert refused.returncode == 2 and refused.stderr.splitlines() == [
            "ligoenv-server: error: no [[relay.endpoints]]: the relay accepts no webhook; add one "
            "(docs/server-config.example.toml shows every kind)"]


def test_check_config_without_secrets_checks_the_example_structure() -> None:
    example = Path(__file__).resolve().parents[2] / "docs" / "server-config.example.toml"
    without = server("check-config", "-c", example, check=False)
    assert without.returncode == 2 and "is not set" in without.stderr
    checked = server("check-config", "--no-secrets", "-c", example)
    assert "/hooks/harbor  harbor from harbor.example.org" in checked.stdout
    assert "were not read" in checked.stderr


def test_index_migrate(config: Path) -> None:
    root = load_config(config).publisher.root
    shutil.copytree(Path(__file__).resolve().parents[1] / "data" / "index-v1",
                    root / ".ligoenv" / "index", ignore=shutil.ignore_patterns("*.md"))
    live = DirectoryPublisher(root)  # a worker publishing to the root: migrate must refuse
    refused = server("index", "migrate", "-c", config, check=False)
    assert refused.returncode != 0 and refused.stderr.count("\n") == 1
    assert "a worker is publishing to" in refused.stderr
    del live
    gc.collect()
    done = json.loads(server("index", "migrate", "-c", config, "--json").stdout)
    assert done["converted"] == ["127.0.0.1:5000/lab/app.json/x", "127.0.0.1:5000/lvk/lalsuite"]
    assert not (root / ".ligoenv/index/127.0.0.1:5000").exists()
    assert server("index", "migrate", "-c", config).stdout.strip() == "nothing to migrate"
