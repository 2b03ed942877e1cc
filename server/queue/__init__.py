"""The durable job queue (SQLAlchemy Core over SQLite or PostgreSQL) and its HTTP service.

`open_queue(url)` picks the backend from the URL: a database URL opens the tables directly,
an http(s):// URL talks to a queue service started with `create_queue_app`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ligoenv.store.errors import ConfigError

from .backoff import Backoff
from .client import HttpQueueClient
from .sql import Clock, SqlQueue

__all__ = ["Backoff", "HttpQueueClient", "SqlQueue", "open_queue"]


def open_queue(url: str, *, token: str | None = None, timeout: float = 10.0,
               max_attempts: int = 5, lease_seconds: float = 60.0,
               backoff: Backoff | None = None, clock: Clock | None = None,
               ) -> SqlQueue | HttpQueueClient:
    """The queue at `url`: `sqlite:////path/queue.db`, `postgresql+psycopg://...` or
    `http(s)://host:port` (a queue service; then `token` is required and the job settings
    are the service's own)."""
    if urlsplit(url).scheme in ("http", "https"):
        if not token:
            raise ConfigError("a queue service URL needs a token: set [queue] token")
        return HttpQueueClient(url, token, timeout=timeout)
    return SqlQueue(url, clock=clock, max_attempts=max_attempts, backoff=backoff,
                    lease_seconds=lease_seconds, timeout=timeout)
