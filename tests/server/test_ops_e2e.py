"""Operations against real processes: /metrics scraped from running roles and checked with
`promtool check metrics`, /readyz, the worker's listener shared by two workers through
PROMETHEUS_MULTIPROC_DIR, and the log file reopened on SIGHUP."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from testbed.images import build_busybox_image, push_image
from testbed.registry import free_port
from testbed.stack import SECRET, Stack, new_stack, server_config, wait_for
from tests.server.test_metrics import samples

TOKEN = "ops-queue-token"


def promtool_check(text: bytes) -> None:
    """promtool (Debian's `prometheus` package, installed by scripts/setup.sh) lints the names,
    types and suffixes of a scrape; any complaint fails the test."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed: run scripts/setup.sh (Debian package prometheus)"
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True)
    assert done.returncode == 0, done.stderr.decode() + done.stdout.decode()


def scrape(url: str) -> bytes:
    response = requests.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return response.content


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("ops")
    stack = new_stack(workdir, extra=f'file = "{workdir / "server-file.log"}"')
    stack.start("serve")
    yield stack
    stack.stop_all()
    stack.registry.stop()


def _published(stack: Stack, repository: str, tag: str, digest: object) -> bool:
    index = stack.index(repository)
    link = stack.root / stack.registry.host / f"{repository}:{tag}"
    return index is not None and index.current(tag) == digest and link.exists()


def test_serve_metrics_pass_promtool_and_count_a_publication(stack: Stack) -> None:
    digest = push_image(stack.registry.host, "lvk/metrics", "v1", build_busybox_image("metrics"))
    wait_for(lambda: _published(stack, "lvk/metrics", "v1", digest), "the push to be published")
    # The job is reported done just after the tag link moves: wait for its count too.
    wait_for(lambda: samples(scrape(stack.relay_url)).get(
        ("ligoenv_job_attempts_count", (("outcome", "done"),))), "the job to be counted")
    text = scrape(stack.relay_url)
    promtool_check(text)
    found = samples(text)
    assert found[("ligoenv_webhooks_received_total", (("endpoint", "local"), ("status", "202")))] >= 1
    assert found[("ligoenv_publish_latency_seconds_count", ())] >= 1
    assert found[("ligoenv_unpack_bytes_total", ())] > 0
    assert found[("ligoenv_jobs", (("state", "dead"),))] == 0
    assert found[("ligoenv_queue_up", ())] == 1
    ready = requests.get(f"{stack.relay_url}/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"queue": "ok", "publish_root": "ok", "registry local": "ok"}


def test_sighup_reopens_the_log_file(stack: Stack) -> None:
    log = stack.workdir / "server-file.log"
    wait_for(log.exists, "the log file")
    rotated = log.with_name("server-file.log.1")
    log.rename(rotated)
    stack.processes[0].send_signal(signal.SIGHUP)
    wait_for(log.exists, "the log file to be opened again")
    # A refused delivery is logged: it must land in the new file, not the renamed one.
    answer = requests.post(f"{stack.relay_url}/hooks/registry", data=b"{}", timeout=10,
                           headers={"Authorization": "Bearer wrong-secret-after-hup"})
    assert answer.status_code == 401
    wait_for(lambda: "rejected delivery (401)" in log.read_text(), "the new file to get the line")
    assert "rejected delivery (401)" not in rotated.read_text()
    assert SECRET not in log.read_text()


def test_workers_share_one_metrics_port_and_sum_their_counters(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = new_stack(tmp_path)
    try:
        _run_remote_roles(stack, tmp_path, monkeypatch)
    finally:
        stack.stop_all(signal.SIGKILL)
        stack.registry.stop()


def _run_remote_roles(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    queue_port, metrics_port = free_port(), free_port()
    queue_url, worker_url = f"http://127.0.0.1:{queue_port}", f"http://127.0.0.1:{metrics_port}"
    service = server_config(stack.workdir, stack.registry.host, free_port(), queue_token=TOKEN,
                            name="queue.toml")
    remote = server_config(stack.workdir, stack.registry.host, stack.relay_port,
                           queue_url=queue_url, queue_token=TOKEN, name="remote.toml")
    stack.start("queue", "--port", str(queue_port), config=service, ready_url=queue_url)
    stack.start("relay", config=remote)
    shared = tmp_path / "worker-metrics"
    shared.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(shared))
    for _ in range(2):  # as worker@1 and worker@2 would, on one port
        stack.start("worker", "--metrics-port", str(metrics_port), config=remote,
                    ready_url=worker_url)
    digests = [push_image(stack.registry.host, "lvk/shared", f"v{i}", build_busybox_image(f"s{i}"))
               for i in range(3)]

    def counted() -> float:
        return samples(scrape(worker_url)).get(("ligoenv_job_attempts_count",
                                                (("outcome", "done"),)), 0)

    wait_for(lambda: counted() == len(digests), "every job counted by the workers' listener")
    # Whichever worker answers (the kernel spreads connections over both), it reports the role.
    assert [counted() for _ in range(8)] == [len(digests)] * 8
    for i, digest in enumerate(digests):
        assert _published(stack, "lvk/shared", f"v{i}", digest)
    for url in (worker_url, queue_url, stack.relay_url):
        promtool_check(scrape(url))
    assert samples(scrape(queue_url))[("ligoenv_jobs", (("state", "pending"),))] == 0
    ready = requests.get(f"{worker_url}/readyz", timeout=10).json()
    assert ready["checks"] == {"queue": "ok", "publish_root": "ok", "registry local": "ok"}
