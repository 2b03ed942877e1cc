"""Prometheus metrics of every role: the metric objects, the small API the code calls, and the
text exposition served at /metrics.

One process answers with its own counters. Several processes of one role on one machine
(`worker@N`, and the `sync`/`gc` runs of the timers) share a directory named by
PROMETHEUS_MULTIPROC_DIR, set before the process starts: each writes its counters there, and any
of them answers /metrics with the sum over all of them. Job counts by state are not counters of
any process: they are read from the queue at scrape time (QueueCollector).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from ligoenv.oci.errors import LigoenvError
from ligoenv.store.errors import ConfigError

from .jobs import QueueSummary

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The classic text format every Prometheus release reads (our names need none of 1.0.0's escaping).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_WEBHOOKS = Counter("ligoenv_webhooks_received", "Webhook deliveries by relay endpoint and the "
                    "HTTP status they were answered with.", ["endpoint", "status"])
_JOB_ATTEMPTS = Histogram("ligoenv_job_attempts", "Attempts a job took, by how it ended (done, "
                          "or dead: attempts exhausted or a permanent error).", ["outcome"],
                          buckets=(1, 2, 3, 4, 5, 10, 20))
_PUBLISH_LATENCY = Histogram(
    "ligoenv_publish_latency_seconds", "From the registry's event timestamp (else the relay's "
    "receipt) to the tag link pointing at the new image.",
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 900, 1800, 3600))
_UNPACK_BYTES = Counter("ligoenv_unpack_bytes", "Bytes written unpacking image layers.")
_UNPACK_SECONDS = Histogram("ligoenv_unpack_seconds", "Time to pull and unpack one platform image.",
                            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800))
_PUBLISH_FAILURES = Counter("ligoenv_publish_failures", "Failed publish attempts by reason (the "
                            "error's kind).", ["reason"])
_REGISTRY_ERRORS = Counter("ligoenv_registry_request_errors", "Failed requests to a registry, by "
                           "registry host.", ["registry"])
_SYNC = Counter("ligoenv_sync_outcomes", "Images a sync run considered, by outcome.", ["result"])
_GC = Counter("ligoenv_gc_outcomes", "Items a garbage collection run considered, by outcome.",
              ["result"])


# -- what the code calls ---------------------------------------------------------------------

def webhook_received(endpoint: str, status: int) -> None:
    _WEBHOOKS.labels(endpoint=endpoint, status=str(status)).inc()


def job_finished(outcome: str, attempts: int) -> None:
    """A job ended for good: `outcome` is "done" or "dead"."""
    _JOB_ATTEMPTS.labels(outcome=outcome).observe(attempts)


def tag_published(event_time: datetime, now: datetime | None = None) -> None:
    """A tag link now points at the image an event of `event_time` announced."""
    now = now or datetime.now(UTC)
    _PUBLISH_LATENCY.observe(max(0.0, (now - event_time).total_seconds()))  # clocks may disagree


def unpacked(nbytes: int, seconds: float) -> None:
    _UNPACK_BYTES.inc(nbytes)
    _UNPACK_SECONDS.observe(seconds)


def publish_failed(error: BaseException) -> None:
    _PUBLISH_FAILURES.labels(reason=failure_reason(error)).inc()


def registry_error(registry: str) -> None:
    _REGISTRY_ERRORS.labels(registry=registry).inc()


def sync_outcome(result: str, count: int = 1) -> None:
    """`count` images of a sync run ended as `result` (e.g. "queued", "current", "error")."""
    _SYNC.labels(result=result).inc(count)


def gc_outcome(result: str, count: int = 1) -> None:
    """`count` items of a GC run ended as `result` (e.g. "removed", "kept", "error")."""
    _GC.labels(result=result).inc(count)


def failure_reason(error: BaseException) -> str:
    """A short, bounded label for an error: its class name in snake case (`registry_unavailable`,
    `unsafe_archive`), `internal` for anything that is not one of ours."""
    if not isinstance(error, LigoenvError):
        return "internal"
    name = type(error).__name__
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


class Stopwatch:
    """Seconds since it was made, on the monotonic clock."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    def seconds(self) -> float:
        return time.monotonic() - self._start


# -- job counts from the queue -----------------------------------------------------------------

class SummarisedQueue(Protocol):
    def summary(self) -> QueueSummary: ...


class QueueCollector:
    """`ligoenv_jobs{state}`, the oldest pending job's age and `ligoenv_queue_up`, read from the
    queue at scrape time; a queue that does not answer gives `ligoenv_queue_up 0` only."""

    def __init__(self, queue: SummarisedQueue, clock: Callable[[], datetime] | None = None) -> None:
        self._queue = queue
        self._clock = clock or (lambda: datetime.now(UTC))

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("ligoenv_queue_up", "1 when the job queue answered this scrape.")
        try:
            summary = self._queue.summary()
        except LigoenvError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily("ligoenv_jobs", "Jobs in the queue by state (failed: waiting to "
                                 "retry after a failed attempt; dead: dead letters).",
                                 labels=["state"])
        for state in ("pending", "running", "failed", "dead"):
            jobs.add_metric([state], getattr(summary, state))
        yield jobs
        age = 0.0
        if summary.oldest_pending is not None:
            age = max(0.0, (self._clock() - summary.oldest_pending).total_seconds())
        yield GaugeMetricFamily("ligoenv_oldest_pending_job_age_seconds",
                                "Age of the oldest pending job (0 when none is pending).", value=age)


# -- exposition --------------------------------------------------------------------------------

class _Collectors:
    def __init__(self, collectors: Iterable[Any]) -> None:
        self._collectors = list(collectors)

    def collect(self) -> Iterator[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


def check_multiproc_dir(environ: dict[str, str] | None = None) -> Path | None:
    """The shared metrics directory, if one is set; a ConfigError if it is not a directory we
    can write, said before any metric is touched rather than on the first job."""
    value = (os.environ if environ is None else environ).get(MULTIPROC_ENV)
    if not value:
        return None
    path = Path(value)
    if not path.is_dir() or not os.access(path, os.W_OK):
        raise ConfigError(f"{MULTIPROC_ENV}={value}: not a writable directory; create it (one per "
                          "role on a machine, emptied at boot) or unset it")
    return path


def exposition(extra: Iterable[Any] = ()) -> bytes:
    """The metrics of this process (or of every process sharing PROMETHEUS_MULTIPROC_DIR), plus
    the `extra` collectors (a QueueCollector), in the Prometheus text format."""
    shared = check_multiproc_dir()
    if shared is not None:
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=str(shared))  # type: ignore[no-untyped-call]
        base: Any = merged
    else:
        base = REGISTRY
    return _generate_latest(_Collectors([base, *extra]))
