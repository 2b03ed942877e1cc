"""Assemble the server's roles into ASGI apps and worker pools from one ServerConfig."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute, Mount

from ligoenv.store.publishroot import PublishRoot

from .config import ServerConfig
from .health import Check, ops_routes, publish_root_check, queue_check, registry_check
from .jobs import EnqueueResult, JobSink, PublishRequest
from .metrics import QueueCollector
from .pinapi import pin_routes
from .publishers.factory import publisher_from
from .queue import HttpQueueClient, SqlQueue, open_queue
from .readapi import read_routes
from .relay.routes import create_relay_app
from .statusapi import status_routes
from .synctimer import SyncTimer
from .taghistoryapi import tag_history_routes
from .worker import DEFAULT_DRAIN_SECONDS, WorkerPool

log = logging.getLogger(__name__)
Queue = SqlQueue | HttpQueueClient


def queue_from(config: ServerConfig) -> Queue:
    token = config.queue.token.reveal() if config.queue.token is not None else None
    return open_queue(config.queue.url, token=token, max_attempts=config.queue.max_attempts,
                      lease_seconds=config.queue.lease_seconds)


def readiness_checks(config: ServerConfig, queue: Queue, *, publishes: bool) -> list[Check]:
    """What /readyz checks: the queue; for a role that publishes, the publish root and every
    configured registry too."""
    checks = [queue_check(queue)]
    if publishes:
        checks.append(publish_root_check(config.publisher.root,
                                         writable=config.publisher.backend == "directory"))
        checks += [registry_check(registry) for registry in config.registries.values()]
    return checks


def queue_collectors(queue: Queue) -> list[QueueCollector]:
    """Job counts for /metrics where this process reads the queue's database itself (a queue
    service client leaves them to the service)."""
    return [QueueCollector(queue)] if isinstance(queue, SqlQueue) else []


def create_server_app(config: ServerConfig, *, queue: Queue | None = None, run_workers: bool = True,
                      drain_seconds: float | None = DEFAULT_DRAIN_SECONDS) -> Starlette:
    """Relay + read API, and workers in this process when `run_workers` (`serve`; `relay` alone
    touches nothing in the publish root but reads its index)."""
    queue = queue or queue_from(config)
    pool = WorkerPool.build(config, queue, publisher_from(config)) if run_workers else None
    stop = threading.Event()
    sink: JobSink = _WakingSink(queue, pool) if pool else queue
    timer = SyncTimer(config, sink) if pool else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        threads = pool.run(stop) if pool else []
        if timer is not None and timer.enabled:
            timer.start(stop)  # reconciles what webhooks missed, into the same queue
        try:
            yield
        finally:
            # SIGTERM: uvicorn has stopped accepting requests; each worker finishes the job in
            # hand (it takes no other), or releases it back to the queue after drain_seconds.
            stop.set()
            drained = await run_in_threadpool(pool.drain, threads, drain_seconds) if pool else True
            queue.close()
            if not drained:
                os._exit(0)  # jobs were released; their threads must not finish them now

    layout = PublishRoot(config.publisher.root, config.publisher.include_registry)
    routes: list[BaseRoute] = [
        *ops_routes(readiness_checks(config, queue, publishes=run_workers), queue_collectors(queue)),
        *read_routes(layout), *status_routes(layout, queue), *tag_history_routes(layout),
        *pin_routes(layout, config.gc.pin_token, functools.cache(lambda: publisher_from(config))),
        Mount("/", app=create_relay_app(config, sink))]
    return Starlette(routes=routes, lifespan=lifespan)


class _WakingSink:
    """Queues durably, then wakes this process's idle workers (no waiting for their poll)."""

    def __init__(self, queue: Queue, pool: WorkerPool) -> None:
        self._queue, self._pool = queue, pool

    def enqueue(self, request: PublishRequest) -> EnqueueResult:
        result = self._queue.enqueue(request)
        self._pool.wake()
        return result
