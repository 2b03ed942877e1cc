"""Server fixtures: a throwaway PostgreSQL cluster, a fake clock, and the job queue on each backend."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from ligoenv_server.jobs import PublishRequest
from ligoenv_server.queue.backoff import Backoff
from ligoenv_server.queue.sql import SqlQueue
from testbed.postgres import PostgresCluster
from testbed.relay import MemorySink, relay_client, relay_config

_databases = itertools.count(1)


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL 15 cluster for the session; failing to start it fails the tests."""
    cluster = PostgresCluster()
    try:
        cluster.start()
    except (RuntimeError, OSError, LookupError) as error:
        cluster.stop()
        pytest.fail(f"cannot start the PostgreSQL test cluster: {error}", pytrace=False)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """The SQLAlchemy URL of the session's database (shared: tests that need a clean
    database use `queue_url`)."""
    return postgres_cluster.url()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty queue database, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'queue.db'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    return cluster.create_database(f"queue_{next(_databases)}")


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture()
def queue(queue_url: str, clock: FakeClock) -> Iterator[SqlQueue]:
    """A queue on each backend: 3 attempts, backoff 2s, 4s, ... and 60s leases."""
    with SqlQueue(queue_url, clock=clock, max_attempts=3, backoff=Backoff(2.0, 2.0, 300.0),
                  lease_seconds=60) as opened:
        yield opened


@pytest.fixture()
def publish_request(clock: FakeClock) -> Callable[..., PublishRequest]:
    """Build a publish request; keyword arguments override the defaults."""

    def build(tag: str | None = "nightly", digest: str | None = None,
              repository: str = "lvk/lalsuite", registry: str = "127.0.0.1:5000") -> PublishRequest:
        return PublishRequest(registry=registry, repository=repository, tag=tag, digest=digest,
                              source="distribution:test", received_at=clock())

    return build


@pytest.fixture()
def sink() -> MemorySink:
    """What the relay queued, in memory (test files may override it)."""
    return MemorySink()


@pytest.fixture()
def client(tmp_path: Path, sink: MemorySink) -> Iterator[TestClient]:
    """The relay of the shared test config (testbed/relay.py), in-process."""
    with relay_client(relay_config(tmp_path), sink) as opened:
        yield opened
