"""Several machines' worth of roles: `ligoenv-server queue` as an HTTP service, a relay and a
worker that reach it over HTTP, and a relay that answers 503 while the queue service is down."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from testbed.images import build_busybox_image, push_image
from testbed.registry import free_port
from testbed.stack import Stack, new_stack, server_config, wait_for

TOKEN = "queue-service-token"


@pytest.fixture()
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = new_stack(tmp_path)
    yield stack
    stack.stop_all(signal.SIGKILL)
    stack.registry.stop()


def test_relay_and_worker_through_the_queue_service(stack: Stack) -> None:
    queue_port = free_port()
    queue_url = f"http://127.0.0.1:{queue_port}"
    service = server_config(stack.workdir, stack.registry.host, free_port(), queue_token=TOKEN,
                            name="queue.toml")
    remote = server_config(stack.workdir, stack.registry.host, stack.relay_port, queue_url=queue_url,
                           queue_token=TOKEN, name="remote.toml")
    queue = stack.start("queue", "--port", str(queue_port), config=service, ready_url=queue_url)
    stack.start("relay", config=remote)
    stack.start("worker", config=remote)

    digest = push_image(stack.registry.host, "lvk/remote", "v1", build_busybox_image("remote"))
    wait_for(lambda: (i := stack.index("lvk/remote")) is not None and i.current("v1") == digest,
             "publication through the queue service")

    # The queue service goes away: the relay must not answer 2xx for what it cannot queue.
    queue.send_signal(signal.SIGKILL)
    queue.wait()
    envelope = {"events": [{
        "id": "1", "timestamp": "2026-03-01T12:00:00Z", "action": "push",
        "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": str(digest),
                   "size": 1, "repository": "lvk/remote", "tag": "v2"},
        "request": {"id": "r", "addr": "127.0.0.1", "host": stack.registry.host, "method": "PUT",
                    "useragent": "test"},
        "actor": {}, "source": {"addr": "x", "instanceID": "y"}}]}
    answer = requests.post(f"{stack.relay_url}/hooks/registry", json=envelope, timeout=30,
                           headers={"Authorization": "Bearer e2e-webhook-secret"})
    assert answer.status_code == 503 and answer.headers["Retry-After"]

    # Back up: the registry's retry of the same delivery is accepted and published.
    stack.start("queue", "--port", str(queue_port), config=service, ready_url=queue_url)
    answer = requests.post(f"{stack.relay_url}/hooks/registry", json=envelope, timeout=30,
                           headers={"Authorization": "Bearer e2e-webhook-secret"})
    assert answer.status_code == 202 and answer.json()["accepted"] == 1
    wait_for(lambda: (i := stack.index("lvk/remote")) is not None and i.current("v2") == digest,
             "the retried delivery to be published")
