"""A real `ligoenv-server relay` process against real sockets: idle and slow connections are
bounded and closed, the open-files limit is raised, a busy port is one line. No timing asserts:
tests wait for what must happen, and count."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from testbed.registry import free_port
from testbed.relay import DISTRIBUTION_V1, fixture_bytes
from testbed.stack import SECRET, SERVER, server_config, wait_for

PARTIAL_HEAD = b"POST /hooks/registry HTTP/1.1\r\nHost: relay\r\nContent-Type: appl"


def relay_config(directory: Path, port: int, relay: str) -> Path:
    return server_config(directory, "127.0.0.1:5000", port, relay=relay)


Start = Callable[..., tuple[subprocess.Popen[bytes], str]]


@pytest.fixture()
def start(tmp_path: Path) -> Iterator[Start]:
    processes: list[subprocess.Popen[bytes]] = []

    def run(relay: str = "", preexec: Callable[[], None] | None = None
            ) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        config = relay_config(tmp_path, port, relay)
        process = subprocess.Popen([str(SERVER), "relay", "--config", str(config)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   preexec_fn=preexec)
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(url), "the relay to answer", 20)
        return process, url

    yield run
    for process in processes:
        process.terminate()
        process.wait(30)


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def idle_connection(url: str, head: bytes = PARTIAL_HEAD) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    sock.sendall(head)
    sock.setblocking(False)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def webhook(url: str) -> requests.Response:
    return requests.post(f"{url}/hooks/registry", data=fixture_bytes("distribution_push.json"),
                         headers={"Authorization": f"Bearer {SECRET}",
                                  "Content-Type": DISTRIBUTION_V1}, timeout=30)


def test_a_flood_of_idle_connections_does_not_lock_out_webhooks(start: Start) -> None:
    _, url = start("max_connections = 16\nheader_timeout = 300")
    flood = [idle_connection(url) for _ in range(40)]
    try:
        assert webhook(url).status_code == 202
        # Every connection past the bound made the one waiting longest for its head go.
        wait_for(lambda: sum(closed_by_server(s) for s in flood) >= 40 - 16 + 1,
                 "the idle connections past the bound to be closed")
        assert not any(closed_by_server(s) for s in flood[-10:])  # the newest ones stay
        assert webhook(url).status_code == 202
    finally:
        for sock in flood:
            sock.close()


def test_a_request_head_that_does_not_arrive_in_time_is_closed(start: Start) -> None:
    _, url = start("header_timeout = 0.5")
    slow = idle_connection(url)
    silent = idle_connection(url, b"")
    kept = requests.Session()
    assert kept.get(f"{url}/healthz", timeout=10).status_code == 200
    try:
        wait_for(lambda: closed_by_server(slow), "a slow request head to be closed")
        wait_for(lambda: closed_by_server(silent), "a silent connection to be closed")
        assert webhook(url).status_code == 202
    finally:
        slow.close()
        silent.close()
        kept.close()


def test_the_open_files_limit_is_raised_to_the_hard_limit(start: Start) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip("the hard limit leaves nothing to raise")
    process, _ = start(preexec=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)))
    line = next(line for line in Path(f"/proc/{process.pid}/limits").read_text().splitlines()
                if line.startswith("Max open files"))
    soft_now, hard_now = line.split()[3:5]
    assert soft_now == hard_now != "256"


def test_a_busy_port_is_one_line_naming_the_address_and_its_holder(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        config = relay_config(tmp_path, port, "")
        result = subprocess.run([str(SERVER), "relay", "--config", str(config)],
                                capture_output=True, text=True, timeout=60)
    finally:
        holder.close()
    assert result.returncode != 0
    assert result.stderr.splitlines() == [
        f"ligoenv-server: error: cannot listen on 127.0.0.1:{port}: the port is in use (held by "
        f"{Path('/proc/self/comm').read_text().strip()} (pid {os.getpid()})); stop it or choose "
        "another port"]
