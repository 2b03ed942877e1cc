"""The queue's database connection: engine settings per backend, transactions, and errors.

SQLite runs in WAL mode with synchronous=FULL (a commit is on disk before we answer) and takes
the write lock up front (`BEGIN IMMEDIATE`) so that writers in several processes queue up on
the busy timeout instead of failing. PostgreSQL gets connect and lock timeouts.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.dialects import postgresql, sqlite

from ligoenv.store.errors import ConfigError, QueueUnavailable

from .tables import metadata
from .urls import redact_url

# Any constant will do: it only has to be the same in every process opening the queue.
_SCHEMA_LOCK = 0x6C69676F656E76
_READ_ONLY = "ligoenv_read_only"
_VALID = "sqlite:////path/queue.db or postgresql+psycopg://user@host/db"
# Connections a PostgreSQL engine keeps for reuse. A relay answers many webhooks at once (Starlette's
# thread pool has 40 threads); beyond the pool each use opens and closes a connection, which
# halved the webhooks/s a relay accepts in bench/e2e.py.
_PG_POOL_SIZE = 20


class Database:
    """One engine plus the transaction and error conventions of the queue."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self.shown = redact_url(url)
        parsed = _parse(url)
        self._password = parsed.password
        self.backend = parsed.get_backend_name()
        self._timeout = timeout
        # SQLite has one writer at a time; threads of this process wait for it here, in turn,
        # instead of in SQLite's busy handler, which sleeps in growing steps while the lock
        # is free again (hundreds of milliseconds at p99 under a burst of webhooks).
        self._write_lock = threading.Lock() if self.backend == "sqlite" else None
        if self.backend == "sqlite":
            self.engine = _sqlite_engine(parsed, self.shown, timeout)
        elif self.backend == "postgresql":
            self.engine = _postgres_engine(parsed, timeout)
        else:
            raise ConfigError(f"job queue URL {self.shown}: unsupported database "
                              f"{self.backend!r}; use {_VALID}")

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A transaction that holds the write lock (SQLite) from its first statement."""
        with self._writer_turn(), self.unavailable_as_error(), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        if self._write_lock is None:
            yield
            return
        if not self._write_lock.acquire(timeout=self._timeout):
            raise QueueUnavailable(f"job queue {self.shown} unavailable: busy for "
                                   f"{self._timeout:.0f} s with other writes")
        try:
            yield
        finally:
            self._write_lock.release()

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        with self.unavailable_as_error(), self.engine.connect() as conn:
            conn.execution_options(**{_READ_ONLY: True})
            with conn.begin():
                yield conn

    @contextmanager
    def unavailable_as_error(self) -> Iterator[None]:
        """Turn a database that is down, locked or timing out into QueueUnavailable."""
        try:
            yield
        except (exc.OperationalError, exc.InterfaceError, exc.TimeoutError) as error:
            raise QueueUnavailable(f"job queue {self.shown} unavailable: {self._reason(error)}"
                                   ) from error

    def insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT, which knows ON CONFLICT DO NOTHING."""
        return postgresql.insert(table) if self.backend == "postgresql" else sqlite.insert(table)

    def create_schema(self) -> None:
        with self.write() as conn:
            if self.backend == "postgresql":
                # Two processes opening a fresh database must not both create the table.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
            metadata.create_all(conn)

    def close(self) -> None:
        self.engine.dispose()

    def _reason(self, error: exc.SQLAlchemyError) -> str:
        original = getattr(error, "orig", None) or error
        lines = str(original).strip().splitlines() or [type(original).__name__]
        if self._password:
            return lines[0].replace(str(self._password), "***")
        return lines[0]


def _parse(url: str) -> sa.URL:
    try:
        parsed = sa.engine.make_url(url)
    except exc.ArgumentError as error:
        raise ConfigError(f"job queue URL {redact_url(url)} does not parse: use {_VALID}") from error
    if parsed.drivername == "postgresql":
        # The bare scheme means psycopg2 to SQLAlchemy; we ship psycopg (3).
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _sqlite_engine(url: sa.URL, shown: str, timeout: float) -> sa.Engine:
    if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
        raise ConfigError(f"job queue URL {shown}: the queue must live in a file, "
                          "e.g. sqlite:////var/lib/ligoenv/queue.db")
    try:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"job queue URL {shown}: cannot create its directory: "
                          f"{error.strerror}") from error
    engine = sa.create_engine(url, pool_timeout=timeout)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # We issue BEGIN ourselves (below); pysqlite's own would be a deferred one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        read_only = conn.get_execution_options().get(_READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def _postgres_engine(url: sa.URL, timeout: float) -> sa.Engine:
    milliseconds = int(timeout * 1000)
    connect_args = {
        "connect_timeout": max(2, math.ceil(timeout)),  # libpq's minimum is 2 seconds
        "options": f"-c lock_timeout={milliseconds} -c statement_timeout={milliseconds}",
    }
    # pre_ping: connections left over from before a server restart are replaced, not used.
    return sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True,
                            pool_size=_PG_POOL_SIZE, pool_timeout=timeout)
