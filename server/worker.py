"""The worker: claim a job, run it (pipeline.RequestProcessor), report the outcome; repeat.

Crash-safe: a worker that dies loses its lease and the job is claimed again; the publisher
either moves a complete image into place or leaves nothing visible. A worker thread never dies
of an error: queue outages are retried, bugs are logged and the job failed (and retried).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ligoenv.oci.errors import LigoenvError, RegistryError

from . import metrics
from .config import ServerConfig
from .hubcallback import docker_hub_callback
from .jobs import Job, JobSource, PublishRequest
from .logs import job_context
from .pipeline import LeaseLost, RequestProcessor
from .publishers.base import Publisher

log = logging.getLogger(__name__)
DEFAULT_DRAIN_SECONDS = 120.0  # on SIGTERM, then the jobs in hand are released
REPORT_ATTEMPTS = 6  # ~30 s of retries to tell the queue an outcome before the lease decides


def new_worker_id() -> str:
    """Unique per worker, also among threads of one process: leases are held by this id."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    """Runs jobs from `queue` until `stop` is set."""

    def __init__(self, config: ServerConfig, queue: JobSource, processor: RequestProcessor, *,
                 worker_id: str | None = None,
                 callback: Callable[[PublishRequest, str, str], None] | None = None) -> None:
        self.config = config
        self.queue = queue
        self.processor = processor
        self.worker_id = worker_id or new_worker_id()
        # Set by an in-process relay after it queued something, so that an idle worker starts
        # at once instead of at its next poll (`ligoenv-server serve`).
        self.wake = threading.Event()
        self.current: Job | None = None  # the job in hand, for draining on shutdown
        self._callback = callback or docker_hub_callback

    def run(self, stop: threading.Event) -> None:
        """Claim and run jobs until `stop` is set; the job in hand is finished first."""
        log.info("worker started", extra={"worker": self.worker_id})
        while not stop.is_set():
            try:
                job = self.queue.claim(self.worker_id)
                if job is None:
                    self.wake.wait(self.config.worker.poll_interval)
                    self.wake.clear()
                    continue
                self.run_job(job, stop)
            except LigoenvError as error:
                log.warning("queue unavailable: %s", error, extra={"worker": self.worker_id})
                stop.wait(self.config.worker.poll_interval)
            except Exception:  # a bug must not end the worker: log it, pause, go on
                log.exception("worker error", extra={"worker": self.worker_id})
                stop.wait(self.config.worker.poll_interval)
        log.info("worker stopped", extra={"worker": self.worker_id})

    def run_job(self, job: Job, stop: threading.Event | None = None) -> None:
        """Process one claimed job and report its outcome to the queue."""
        self.current = job
        try:
            with job_context(job_id=job.id, repository=job.request.repository,
                             tag=job.request.tag, digest=job.request.digest) as context:
                self._run_job(job, context, stop or threading.Event())
        finally:
            self.current = None

    def _run_job(self, job: Job, context: dict[str, Any], stop: threading.Event) -> None:
        started = time.monotonic()
        lease_seconds = self.config.queue.lease_seconds
        with _Heartbeat(self.queue, job.id, self.worker_id, lease_seconds / 3) as heartbeat:
            try:
                result = self.processor.process(job.request, context, heartbeat.still_ours)
            except LeaseLost as error:
                log.warning("%s", error)  # the job is the other worker's now: report nothing
                return
            except LigoenvError as error:
                _count_failure(job, error)
                self._failed(job, str(error), error.temporary, stop)
                return
            except Exception as error:
                log.exception("job crashed")
                _count_failure(job, error)
                self._failed(job, f"internal error: {error!r}", True, stop)
                return
        result["seconds"] = round(time.monotonic() - started, 3)
        if not self._report(self.queue.complete, stop, job.id, self.worker_id, result):
            log.warning("published, but the job was no longer ours to complete")
            return
        log.info("job done", extra={"tag_moved": result.get("tag_moved"), "seconds": result["seconds"],
                                    "unpacked": len(result.get("unpacked", []))})
        metrics.job_finished("done", job.attempts)
        if result.get("tag_moved"):
            metrics.tag_published(job.request.event_time or job.request.received_at)
        self._callback(job.request, "success", f"published {result.get('digest', '')}")

    def _failed(self, job: Job, error: str, temporary: bool, stop: threading.Event) -> None:
        final = not temporary or job.attempts >= job.max_attempts
        log.warning("job failed%s: %s", "" if final else " (will retry)", error,
                    extra={"temporary": temporary, "attempt": job.attempts})
        if self._report(self.queue.fail, stop, job.id, self.worker_id, error, temporary) and final:
            metrics.job_finished("dead", job.attempts)
            self._callback(job.request, "failure", error)  # only the final outcome is told

    def _report(self, method: Callable[..., bool], stop: threading.Event, *args: Any) -> bool:
        """Tell the queue an outcome, retrying while it is unavailable; False if the job was no
        longer ours. When the queue stays down the lease expires and the job runs again."""
        for attempt in range(REPORT_ATTEMPTS):
            try:
                return method(*args)
            except LigoenvError as error:
                log.warning("cannot report to the queue (%s): %s", method.__name__, error)
                if stop.wait(min(2.0 ** attempt, 10.0)):
                    break
        return False


def _count_failure(job: Job, error: BaseException) -> None:
    metrics.publish_failed(error)
    if isinstance(error, RegistryError):
        metrics.registry_error(job.request.registry)


class _Heartbeat:
    """Extends the job's lease in the background while the job runs; remembers a lost lease."""

    def __init__(self, queue: JobSource, job_id: int, worker_id: str, interval: float) -> None:
        self._queue, self._job_id, self._worker_id = queue, job_id, worker_id
        self._interval = max(interval, 0.2)
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def still_ours(self) -> bool:
        return not self._lost.is_set()

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                if not self._queue.heartbeat(self._job_id, self._worker_id):
                    log.warning("lease lost: another worker may take this job",
                                extra={"job_id": self._job_id})
                    self._lost.set()
                    return
            except LigoenvError as error:
                log.warning("heartbeat failed: %s", error, extra={"job_id": self._job_id})


@dataclass(frozen=True)
class WorkerPool:
    """`concurrency` workers as threads of this process, sharing one queue and publisher."""

    workers: tuple[Worker, ...]

    @classmethod
    def build(cls, config: ServerConfig, queue: JobSource, publisher: Publisher) -> WorkerPool:
        processor = RequestProcessor(config, publisher)
        return cls(tuple(Worker(config, queue, processor)
                         for _ in range(max(1, config.worker.concurrency))))

    def wake(self) -> None:
        for worker in self.workers:
            worker.wake.set()

    def run(self, stop: threading.Event) -> list[threading.Thread]:
        threading.Thread(target=self._wake_on, args=(stop,), daemon=True).start()
        threads = [threading.Thread(target=w.run, args=(stop,), name=f"worker-{i}")
                   for i, w in enumerate(self.workers)]
        for thread in threads:
            thread.start()
        return threads

    def drain(self, threads: list[threading.Thread], timeout: float | None) -> bool:
        """After `stop` was set: wait for the jobs in hand, at most `timeout` seconds. Jobs still
        running then are released to the queue (not counted as an attempt); returns False if
        any was, and the caller must exit the process rather than wait for them."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        running = [w for w in self.workers if w.current is not None]
        for worker in running:
            job = worker.current
            if job is not None:
                log.warning("drain timeout: releasing the job in hand", extra={"job_id": job.id})
                try:
                    worker.queue.release(job.id, worker.worker_id)
                except LigoenvError as error:
                    log.warning("cannot release job %s (its lease will expire): %s", job.id, error)
        return not running

    def _wake_on(self, stop: threading.Event) -> None:
        stop.wait()
        self.wake()  # idle workers see the stop at once
