"""The job queue, one suite run against SQLite and PostgreSQL (the `queue` fixture)."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ligoenv.oci.errors import NotFound, UsageError
from ligoenv.store.errors import ConfigError, QueueUnavailable
from ligoenv_server.jobs import Job, JobState, PublishRequest
from ligoenv_server.queue import HttpQueueClient, open_queue
from ligoenv_server.queue.backoff import Backoff
from ligoenv_server.queue.sql import LEASE_EXPIRED, SqlQueue
from ligoenv_server.queue.tables import jobs
from ligoenv_server.queue.urls import redact_url
from testbed.postgres import PostgresCluster
from tests.server.conftest import FakeClock

Build = Callable[..., PublishRequest]
DIGEST = "sha256:" + "ab" * 32


def _claim(queue: SqlQueue, worker: str) -> Job:
    job = queue.claim(worker)
    assert job is not None, "expected a job to claim"
    return job


def test_enqueue_claim_complete(queue: SqlQueue, clock: FakeClock, publish_request: Build) -> None:
    request = publish_request(digest=DIGEST)
    queued = queue.enqueue(request)
    assert queued.created
    job = queue.get(queued.job_id)
    assert (job.state, job.attempts, job.request) == (JobState.PENDING, 0, request)

    claimed = queue.claim("w1")
    assert claimed is not None and claimed.id == queued.job_id
    assert (claimed.state, claimed.attempts, claimed.lease_owner) == (JobState.RUNNING, 1, "w1")
    assert claimed.lease_expires_at == clock.now + timedelta(seconds=60)
    assert queue.claim("w2") is None

    assert queue.complete(job.id, "w1", {"published": "/cvmfs/x"})
    done = queue.get(job.id)
    assert (done.state, done.result) == (JobState.DONE, {"published": "/cvmfs/x"})
    assert done.lease_expires_at is None
    assert not queue.complete(job.id, "w1", {})
    assert queue.claim("w1") is None


def test_claim_takes_the_oldest_available_job(queue: SqlQueue, clock: FakeClock,
                                              publish_request: Build) -> None:
    first = queue.enqueue(publish_request(tag="a")).job_id
    clock.advance(1)
    second = queue.enqueue(publish_request(tag="b")).job_id
    assert [_claim(queue, "w").id, _claim(queue, "w").id] == [first, second]


def test_identical_pending_request_is_queued_once(queue: SqlQueue, publish_request: Build) -> None:
    first = queue.enqueue(publish_request())
    again = queue.enqueue(publish_request())
    assert again.job_id == first.job_id and not again.created
    other_tag = queue.enqueue(publish_request(tag="stable"))
    assert other_tag.created and other_tag.job_id != first.job_id

    # Once the job runs, the same event means new work (the tag may have moved).
    queue.claim("w1")
    queue.claim("w1")
    rerun = queue.enqueue(publish_request())
    assert rerun.created and rerun.job_id not in (first.job_id, other_tag.job_id)


def test_database_refuses_a_second_pending_job_for_one_request(queue: SqlQueue,
                                                               publish_request: Build) -> None:
    job = queue.get(queue.enqueue(publish_request()).job_id)
    row = {"dedup_key": publish_request().dedup_key(), "request": job.request.to_json(),
           "state": "pending", "attempts": 0, "max_attempts": 3, "created_at": job.created_at,
           "updated_at": job.created_at, "available_at": job.created_at}
    with pytest.raises(sa.exc.IntegrityError), queue.engine.begin() as conn:
        conn.execute(sa.insert(jobs).values(**row))
    with queue.engine.begin() as conn:  # the index covers pending jobs only
        conn.execute(sa.insert(jobs).values(**row | {"state": "done"}))


def test_temporary_failure_retries_with_backoff_then_dead_letters(
        queue: SqlQueue, clock: FakeClock, publish_request: Build) -> None:
    job_id = queue.enqueue(publish_request()).job_id
    start = clock.now
    for attempt, delay in [(1, 2), (2, 4)]:
        claimed = queue.claim("w1")
        assert claimed is not None and claimed.attempts == attempt
        assert queue.fail(job_id, "w1", f"registry timeout {attempt}", temporary=True)
        job = queue.get(job_id)
        assert (job.state, job.last_error) == (JobState.PENDING, f"registry timeout {attempt}")
        assert job.available_at == clock.now + timedelta(seconds=delay)
        clock.advance(delay - 1)
        assert queue.claim("w1") is None
        clock.advance(1)
    assert clock.now == start + timedelta(seconds=6)

    assert queue.claim("w1") is not None
    assert queue.fail(job_id, "w1", "registry timeout 3", temporary=True)
    dead = queue.get(job_id)
    assert (dead.state, dead.attempts, dead.last_error) == (JobState.FAILED, 3, "registry timeout 3")
    assert queue.claim("w1", now=clock.now + timedelta(days=1)) is None


def test_permanent_failure_dead_letters_at_once(queue: SqlQueue, publish_request: Build) -> None:
    job_id = queue.enqueue(publish_request()).job_id
    queue.claim("w1")
    assert queue.fail(job_id, "w1", "manifest unknown", temporary=False)
    job = queue.get(job_id)
    assert (job.state, job.attempts, job.last_error) == (JobState.FAILED, 1, "manifest unknown")
    assert not queue.fail(job_id, "w1", "again", temporary=False)


def test_expired_lease_makes_the_job_claimable_again(queue: SqlQueue, clock: FakeClock,
                                                     publish_request: Build) -> None:
    job_id = queue.enqueue(publish_request()).job_id
    queue.claim("w1")
    assert queue.claim("w2", now=clock.now + timedelta(seconds=59)) is None
    taken = queue.claim("w2", now=clock.now + timedelta(seconds=60))
    assert taken is not None and (taken.id, taken.attempts, taken.lease_owner) == (job_id, 2, "w2")
    # The first worker lost its lease: it can neither extend nor finish the job.
    assert not queue.heartbeat(job_id, "w1")
    assert not queue.complete(job_id, "w1", {})
    assert not queue.release(job_id, "w1")
    assert queue.get(job_id).lease_owner == "w2"


def test_expired_lease_without_attempts_left_is_dead_letter(queue: SqlQueue, clock: FakeClock,
                                                            publish_request: Build) -> None:
    job_id = queue.enqueue(publish_request()).job_id
    for worker in ("w1", "w2", "w3"):
        assert queue.claim(worker) is not None
        clock.advance(60)
    assert queue.claim("w4") is None
    job = queue.get(job_id)
    assert (job.state, job.attempts, job.last_error) == (JobState.FAILED, 3, LEASE_EXPIRED)
    assert not queue.heartbeat(job_id, "w3")


def test_reap_dead_letters_abandoned_jobs_without_claiming(queue: SqlQueue, clock: FakeClock,
                                                           publish_request: Build) -> None:
    job_id = queue.enqueue(publish_request()).job_id
    for _ in range(3):
        queue.claim("w1")
        clock.advance(60)
    assert queue.reap() == 1
    assert queue.get(job_id).state == JobState.FAILED
    assert queue.reap() == 0


def test_heartbeat_extends_the_lease(queue: SqlQueue, clock: FakeClock, publish_request: Build) -> None:
    job_id = queue.enqueue(publish_request()).job_id
    start = clock.now
    queue.claim("w1")
    clock.advance(50)
    assert queue.heartbeat(job_id, "w1")
    assert queue.get(job_id).lease_expires_at == start + timedelta(seconds=110)
    assert queue.claim("w2", now=start + timedelta(seconds=109)) is None
    assert queue.claim("w2", now=start + timedelta(seconds=110)) is not None
    assert not queue.heartbeat(job_id, "w1")
    assert not queue.heartbeat(999_999, "w1")


def test_release_gives_the_job_back_without_counting_the_attempt(
        queue: SqlQueue, publish_request: Build) -> None:
    job_id = queue.enqueue(publish_request()).job_id
    queue.claim("w1")
    assert queue.release(job_id, "w1")
    job = queue.get(job_id)
    assert (job.state, job.attempts, job.lease_expires_at) == (JobState.PENDING, 0, None)
    again = queue.claim("w2")
    assert again is not None and (again.id, again.attempts) == (job_id, 1)
    assert not queue.release(job_id, "w1")


def test_retry_queues_a_failed_job_again(queue: SqlQueue, publish_request: Build) -> None:
    job_id = queue.enqueue(publish_request()).job_id
    queue.claim("w1")
    queue.fail(job_id, "w1", "unauthorized", temporary=False)
    job = queue.retry(job_id)
    assert (job.state, job.attempts, job.last_error) == (JobState.PENDING, 0, "unauthorized")
    with pytest.raises(UsageError, match=f"job {job_id} is pending: only failed jobs"):
        queue.retry(job_id)
    with pytest.raises(NotFound, match="no job 999999"):
        queue.retry(999_999)
    assert _claim(queue, "w1").attempts == 1


def test_job_going_back_to_pending_yields_to_an_identical_pending_job(
        queue: SqlQueue, publish_request: Build) -> None:
    running = queue.enqueue(publish_request()).job_id
    queue.claim("w1")
    twin = queue.enqueue(publish_request()).job_id  # the registry sent the event again
    assert queue.fail(running, "w1", "registry timeout", temporary=True)
    job = queue.get(running)
    assert (job.state, job.result, job.last_error) == (JobState.DONE, {"superseded_by": twin},
                                                       "registry timeout")
    assert queue.counts()[JobState.PENDING] == 1

    assert _claim(queue, "w2").id == twin
    third = queue.enqueue(publish_request()).job_id
    assert queue.release(twin, "w2")
    assert queue.get(twin).result == {"superseded_by": third}


def test_list_by_state_and_counts(queue: SqlQueue, publish_request: Build) -> None:
    ids = [queue.enqueue(publish_request(tag=f"t{i}")).job_id for i in range(4)]
    queue.claim("w1")
    queue.complete(ids[0], "w1", {})
    queue.claim("w1")
    queue.fail(ids[1], "w1", "bad", temporary=False)
    queue.claim("w1")

    assert [j.id for j in queue.list()] == ids[::-1]
    assert [j.id for j in queue.list(limit=2)] == [ids[3], ids[2]]
    by_state = {state: [j.id for j in queue.list(state)] for state in JobState}
    assert by_state == {JobState.DONE: [ids[0]], JobState.FAILED: [ids[1]],
                        JobState.RUNNING: [ids[2]], JobState.PENDING: [ids[3]]}
    assert queue.counts() == dict.fromkeys(JobState, 1)
    with pytest.raises(NotFound):
        queue.get(999_999)


def test_enqueued_job_is_durable_for_a_fresh_connection(queue_url: str, publish_request: Build) -> None:
    with SqlQueue(queue_url) as first:
        job_id = first.enqueue(publish_request(digest=DIGEST)).job_id
    with SqlQueue(queue_url) as fresh:
        job = fresh.get(job_id)
    assert (job.state, job.request.digest) == (JobState.PENDING, DIGEST)


def test_sqlite_runs_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    with SqlQueue(f"sqlite:///{tmp_path / 'q.db'}") as queue, queue.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
    with sqlite3.connect(tmp_path / "q.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_sqlite_locked_too_long_is_queue_unavailable(tmp_path: Path, publish_request: Build) -> None:
    path = tmp_path / "q.db"
    with SqlQueue(f"sqlite:///{path}", timeout=0.2) as queue:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(QueueUnavailable, match=r"q\.db unavailable: database is locked"):
                queue.enqueue(publish_request())
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert queue.enqueue(publish_request()).created


@pytest.mark.postgres
def test_postgres_down_is_queue_unavailable_without_the_password(
        postgres_cluster: PostgresCluster, publish_request: Build) -> None:
    from testbed.registry import free_port

    url = f"postgresql+psycopg://ligoenv:s3cret-pw@127.0.0.1:{free_port()}/queue"
    with pytest.raises(QueueUnavailable) as raised:
        SqlQueue(url, timeout=2)
    message = str(raised.value)
    assert "s3cret-pw" not in message and "ligoenv:***@127.0.0.1" in message
    assert "\n" not in message


@pytest.mark.parametrize(("url", "message"), [
    ("sqlite://", "must live in a file"),
    ("sqlite:///:memory:", "must live in a file"),
    ("mysql://u:pw@host/db", "unsupported database 'mysql'"),
    ("not a url", "does not parse"),
])
def test_unusable_urls_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        SqlQueue(url)
    assert "pw@" not in str(raised.value)


@pytest.mark.parametrize(("url", "shown"), [
    ("sqlite:////var/lib/ligoenv/queue.db", "sqlite:////var/lib/ligoenv/queue.db"),
    ("postgresql+psycopg://ligoenv:s3cret@db:5432/queue", "postgresql+psycopg://ligoenv:***@db:5432/queue"),
    ("postgresql://ligoenv@db/queue?sslmode=require", "postgresql://ligoenv@db/queue?sslmode=require"),
    ("postgresql://u@db/queue?password=s3cret&sslmode=require",
     "postgresql://u@db/queue?password=***&sslmode=require"),
    # Unescaped / ? # @ in a password: the last @ ends it, so none of it shows.
    ("postgresql://u:s3/c?r#e@t@db/queue", "postgresql://u:***@db/queue"),
    ("https://user:s3cret@queue.example:8081/#frag", "https://user:***@queue.example:8081/"),
    ("not a url", "not a url"),
])
def test_redact_url_hides_passwords_in_every_queue_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_bare_postgresql_scheme_uses_psycopg(postgres_url: str) -> None:
    bare = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with SqlQueue(bare) as queue:
        assert queue.engine.dialect.driver == "psycopg"
        queue.ping()


def test_open_queue_picks_the_backend(tmp_path: Path) -> None:
    opened = open_queue(f"sqlite:///{tmp_path / 'q.db'}", max_attempts=2, lease_seconds=5)
    assert isinstance(opened, SqlQueue) and opened.max_attempts == 2
    opened.close()
    assert isinstance(open_queue("http://127.0.0.1:1", token="t"), HttpQueueClient)
    with pytest.raises(ConfigError, match="needs a token"):
        open_queue("https://queue.example")


def test_backoff_is_validated_and_capped() -> None:
    backoff = Backoff(base=2, factor=3, max=50)
    assert [backoff.delay(n) for n in (1, 2, 3, 4, 10_000)] == [2, 6, 18, 50, 50]
    assert Backoff(base=5, factor=1, max=5).delay(7) == 5
    for bad in ({"base": 0}, {"factor": 0.5}, {"max": 1.0}, {"base": float("nan")}):
        with pytest.raises(ConfigError):
            Backoff(**bad)
    with pytest.raises(ValueError):
        backoff.delay(0)


def _claim_all(url: str, worker: str, start: Any, results: Any) -> None:
    """Run in a separate process: claim and complete jobs until none is left."""
    try:
        taken = []
        with SqlQueue(url, lease_seconds=600) as queue:
            start.wait()
            while (job := queue.claim(worker)) is not None:
                taken.append(job.id)
                # A moment of "work" outside any transaction, as a real worker has: without
                # it one process can win SQLite's write lock every time and take every job.
                time.sleep(0.002)
                assert queue.complete(job.id, worker, {"by": worker})
        results.put((worker, taken))
    except BaseException as error:
        results.put((worker, repr(error)))


def _enqueue_all(url: str, worker: str, start: Any, results: Any) -> None:
    """Run in a separate process: enqueue the same 50 requests as every other process."""
    try:
        from datetime import UTC, datetime

        with SqlQueue(url) as queue:
            start.wait()
            made = [queue.enqueue(PublishRequest(
                registry="r", repository="lvk/x", tag=f"t{i}", digest=None, source="test",
                received_at=datetime(2026, 1, 1, tzinfo=UTC))) for i in range(50)]
        results.put((worker, [(r.job_id, r.created) for r in made]))
    except BaseException as error:
        results.put((worker, repr(error)))


def _in_processes(target: Callable[..., None], url: str, count: int) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(count), context.Queue()
    processes = [context.Process(target=target, args=(url, f"w{n}", start, results))
                 for n in range(count)]
    for process in processes:
        process.start()
    found = dict(results.get(timeout=60) for _ in processes)
    for process in processes:
        process.join(timeout=30)
    failed = {worker: out for worker, out in found.items() if isinstance(out, str)}
    assert not failed, failed
    return found


@pytest.mark.slow
def test_concurrent_claimers_take_disjoint_jobs(queue_url: str, publish_request: Build) -> None:
    with SqlQueue(queue_url) as queue:
        ids = {queue.enqueue(publish_request(tag=f"t{i}")).job_id for i in range(200)}
        taken = _in_processes(_claim_all, queue_url, 3)
        claimed = [job_id for jobs_of_worker in taken.values() for job_id in jobs_of_worker]
        assert sorted(claimed) == sorted(ids)  # every job once: union is all, no overlap
        assert queue.counts()[JobState.DONE] == 200
        owners = {job.id: job.result["by"] for job in queue.list(JobState.DONE, limit=1000)}
    assert all(owners[job_id] == worker for worker, got in taken.items() for job_id in got)


@pytest.mark.slow
def test_concurrent_relays_queue_each_request_once(queue_url: str) -> None:
    with SqlQueue(queue_url) as queue:
        made = _in_processes(_enqueue_all, queue_url, 3)
        assert queue.counts()[JobState.PENDING] == 50
    for i in range(50):
        answers = [made[worker][i] for worker in made]
        assert len({job_id for job_id, _ in answers}) == 1
        assert sum(created for _, created in answers) == 1


def test_job_json_round_trips(queue: SqlQueue, publish_request: Build) -> None:
    job_id = queue.enqueue(publish_request(digest=DIGEST)).job_id
    job = queue.claim("w1")
    assert job is not None and job.id == job_id
    assert Job.from_json(job.to_json()) == job


@pytest.mark.parametrize("job_id", [2**31, 2**63, 10**40])
def test_an_id_no_job_can_have_is_not_found_on_every_backend(queue: SqlQueue, job_id: int) -> None:
    with pytest.raises(NotFound, match=f"no job {job_id}"):
        queue.get(job_id)
    with pytest.raises(NotFound):
        queue.retry(job_id)
    assert not queue.heartbeat(job_id, "worker")
    assert not queue.fail(job_id, "worker", "boom", temporary=True)
