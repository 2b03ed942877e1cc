"""Metrics: job counts read from the queue at scrape time, error labels, and counters summed over
several processes that share PROMETHEUS_MULTIPROC_DIR."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ligoenv.oci.errors import RegistryUnavailable, UnsafeArchive
from ligoenv.store.errors import ConfigError, QueueUnavailable
from ligoenv_server import metrics
from ligoenv_server.jobs import PublishRequest, QueueSummary
from ligoenv_server.queue.sql import SqlQueue
from tests.server.conftest import FakeClock


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_summary_counts_jobs_as_operators_do(queue: SqlQueue, clock: FakeClock,
                                             publish_request: Callable[..., PublishRequest]) -> None:
    finished = queue.enqueue(publish_request(tag="done"))
    assert queue.claim("w0") is not None and queue.complete(finished.job_id, "w0", {})
    clock.advance(10)
    first = clock()
    for tag in ("retried", "running", "dead", "waiting"):
        queue.enqueue(publish_request(tag=tag))
        clock.advance(10)
    retried = queue.claim("w1")
    running = queue.claim("w2")
    dead = queue.claim("w3")
    assert retried and running and dead
    queue.fail(retried.id, "w1", "registry unavailable", temporary=True)
    queue.fail(dead.id, "w3", "unsafe archive", temporary=False)
    summary = queue.summary()
    assert summary == QueueSummary(pending=1, running=1, failed=1, dead=1, oldest_pending=first)


def test_summary_of_an_empty_queue(queue: SqlQueue) -> None:
    assert queue.summary() == QueueSummary(0, 0, 0, 0, None)


def test_queue_collector_reports_counts_and_the_oldest_pending_age(
        queue: SqlQueue, clock: FakeClock, publish_request: Callable[..., PublishRequest]) -> None:
    queue.enqueue(publish_request(tag="old"))
    clock.advance(90)
    queue.enqueue(publish_request(tag="new"))
    found = samples(metrics.exposition([metrics.QueueCollector(queue, clock)]))
    assert found[("ligoenv_queue_up", ())] == 1
    assert found[("ligoenv_jobs", (("state", "pending"),))] == 2
    assert found[("ligoenv_jobs", (("state", "dead"),))] == 0
    assert found[("ligoenv_oldest_pending_job_age_seconds", ())] == 90


class _DownQueue:
    def summary(self) -> QueueSummary:
        raise QueueUnavailable("database at db.example is down")


def test_a_queue_that_does_not_answer_is_reported_down() -> None:
    found = samples(metrics.exposition([metrics.QueueCollector(_DownQueue())]))
    assert found[("ligoenv_queue_up", ())] == 0
    assert not any(name == "ligoenv_jobs" for name, _ in found)


def test_failure_reasons_are_short_bounded_labels() -> None:
    assert metrics.failure_reason(RegistryUnavailable("x")) == "registry_unavailable"
    assert metrics.failure_reason(UnsafeArchive("x")) == "unsafe_archive"
    assert metrics.failure_reason(KeyError("x")) == "internal"


def test_counters_of_this_process_are_exposed() -> None:
    before = samples(metrics.exposition())
    key = ("ligoenv_publish_failures_total", (("reason", "unsafe_archive"),))
    metrics.publish_failed(UnsafeArchive("bomb"))
    metrics.sync_outcome("queued", 3)
    metrics.gc_outcome("removed")
    metrics.tag_published(datetime.now(UTC) - timedelta(seconds=4))
    after = samples(metrics.exposition())
    assert after[key] == before.get(key, 0) + 1
    assert after[("ligoenv_sync_outcomes_total", (("result", "queued"),))] >= 3
    assert after[("ligoenv_gc_outcomes_total", (("result", "removed"),))] >= 1
    count = ("ligoenv_publish_latency_seconds_count", ())
    assert after[count] == before.get(count, 0) + 1
    assert after[("ligoenv_publish_latency_seconds_bucket", (("le", "2.0"),))] == \
        before.get(("ligoenv_publish_latency_seconds_bucket", (("le", "2.0"),)), 0)


_COUNT_ONE = """
from ligoenv_server import metrics
metrics.webhook_received("hub", 202)
metrics.unpacked(1000, 0.5)
"""
_EXPOSE = "import sys; from ligoenv_server import metrics; sys.stdout.buffer.write(metrics.exposition())"


def test_processes_sharing_a_directory_are_summed(tmp_path: Path) -> None:
    env = {**os.environ, metrics.MULTIPROC_ENV: str(tmp_path)}
    for _ in range(2):  # two processes of one role, one after the other (a timer's runs)
        subprocess.run([sys.executable, "-c", _COUNT_ONE], env=env, check=True)
    out = subprocess.run([sys.executable, "-c", _EXPOSE], env=env, check=True,
                         capture_output=True).stdout
    found = samples(out)
    assert found[("ligoenv_webhooks_received_total", (("endpoint", "hub"), ("status", "202")))] == 2
    assert found[("ligoenv_unpack_bytes_total", ())] == 2000
    assert found[("ligoenv_unpack_seconds_count", ())] == 2


def test_a_missing_shared_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"PROMETHEUS_MULTIPROC_DIR=.*not a writable directory"):
        metrics.check_multiproc_dir({metrics.MULTIPROC_ENV: str(tmp_path / "absent")})
    assert metrics.check_multiproc_dir({}) is None
