"""Assemble the server's roles into ASGI apps and worker pools from one ServerConfig."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute, Mount

from .config import ServerConfig
from .model import EnqueueResult, JobSink, JobSource, PublishRequest
from .publishers.base import Publisher, make_publisher
from .queue import HttpQueueClient, SqlQueue, open_queue
from .readapi import read_routes
from .relay.app import create_relay_app
from .worker import Worker, WorkerPool

log = logging.getLogger("ligoenv_server")
Queue = SqlQueue | HttpQueueClient


def queue_from(config: ServerConfig) -> Queue:
    token = config.queue.token.reveal() if config.queue.token is not None else None
    return open_queue(config.queue.url, token=token, max_attempts=config.queue.max_attempts,
                      lease_seconds=config.queue.lease_seconds)


def publisher_from(config: ServerConfig) -> Publisher:
    return make_publisher(config.publisher, staging_root=config.state_dir / "staging")


def worker_pool(config: ServerConfig, queue: JobSource, publisher: Publisher) -> WorkerPool:
    count = max(1, config.worker.concurrency)
    return WorkerPool(tuple(Worker(config, queue, publisher) for _ in range(count)))


def create_server_app(config: ServerConfig, *, queue: Queue | None = None,
                      run_workers: bool = True, relay: bool = True) -> Starlette:
    """Relay + read API (+ workers in this process when `run_workers`): `ligoenv-server serve`."""
    queue = queue or queue_from(config)
    publisher = publisher_from(config)
    stop = threading.Event()
    pool = worker_pool(config, queue, publisher)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        threads = pool.run(stop) if run_workers else []
        try:
            yield
        finally:
            # SIGTERM: uvicorn stops accepting requests, then we let each worker finish the
            # job in hand (it never takes another) so that nothing is lost or half done.
            stop.set()
            for thread in threads:
                await run_in_threadpool(thread.join)
            queue.close()

    routes: list[BaseRoute] = [*read_routes(publisher.layout)]
    if relay:
        sink: JobSink = _WakingSink(queue, pool) if run_workers else queue
        routes.append(Mount("/", app=create_relay_app(config, sink)))
    return Starlette(routes=routes, lifespan=lifespan)


def state_paths(config: ServerConfig) -> dict[str, Path]:
    """Where things live, for `ligoenv-server serve` to say on start."""
    return {"publish root": config.publisher.root, "state": config.state_dir,
            "layer cache": config.worker.cache_dir}


class _WakingSink:
    """Queues durably, then wakes this process's idle workers (no waiting for their poll)."""

    def __init__(self, queue: Queue, pool: WorkerPool) -> None:
        self._queue, self._pool = queue, pool

    def enqueue(self, request: PublishRequest) -> EnqueueResult:
        result = self._queue.enqueue(request)
        self._pool.wake()
        return result
