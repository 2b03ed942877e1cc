"""The durable job queue on SQLAlchemy Core: SQLite for one machine, PostgreSQL for several.

A claimed job holds a lease that its worker extends with heartbeats; a lease that runs out makes
the job claimable again, or a dead letter once its attempts are used up. Every method that looks
at the time takes `now` so that tests never sleep.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc

from ligoenv.oci.errors import NotFound, UsageError
from ligoenv.store.errors import ConfigError, QueueUnavailable

from ..jobs import EnqueueResult, Job, JobState, PublishRequest, QueueSummary
from .backoff import Backoff
from .db import Database
from .tables import jobs, to_job, utc

T = TypeVar("T")
Clock = Callable[[], datetime]

LEASE_EXPIRED = "lease expired (worker died?)"
_PENDING, _RUNNING = str(JobState.PENDING), str(JobState.RUNNING)
_DONE, _FAILED = str(JobState.DONE), str(JobState.FAILED)
_MAX_ERROR = 4000  # characters of an error message worth keeping
# A conflict on the pending-dedup index means another process changed the same request's jobs
# between our read and our write; reading again settles it, so a few tries always suffice.
_CONFLICT_TRIES = 5
MAX_JOB_ID = 2**31 - 1  # the id column is an INTEGER


def _system_clock() -> datetime:
    return datetime.now(UTC)


class SqlQueue:
    """Jobs in one SQL table. `url` is `sqlite:////path/queue.db` or `postgresql+psycopg://...`."""

    def __init__(self, url: str, *, clock: Clock | None = None, max_attempts: int = 5,
                 backoff: Backoff | None = None, lease_seconds: float = 60.0,
                 timeout: float = 10.0) -> None:
        if max_attempts < 1:
            raise ConfigError(f"queue max_attempts must be at least 1, got {max_attempts}")
        if lease_seconds <= 0 or timeout <= 0:
            raise ConfigError("queue lease_seconds and timeout must be positive")
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff()
        self.lease = timedelta(seconds=lease_seconds)
        self._clock = clock or _system_clock
        self._db = Database(url, timeout=timeout)
        self.url = self._db.shown  # without the password
        try:
            self._db.create_schema()
        except BaseException:
            self._db.close()
            raise

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine, for diagnostics and tests."""
        return self._db.engine

    def enqueue(self, request: PublishRequest, *, now: datetime | None = None) -> EnqueueResult:
        """Queue `request` durably, unless an identical request is already pending."""
        at = self._now(now)
        key = request.dedup_key()
        values = {"dedup_key": key, "request": request.to_json(), "state": _PENDING,
                  "attempts": 0, "max_attempts": self.max_attempts, "created_at": at,
                  "updated_at": at, "available_at": at}
        insert = (self._db.insert(jobs).values(**values)
                  .on_conflict_do_nothing(index_elements=[jobs.c.dedup_key],
                                          index_where=sa.text("state = 'pending'"))
                  .returning(jobs.c.id))
        for _ in range(_CONFLICT_TRIES):
            with self._db.write() as conn:
                new_id = conn.execute(insert).scalar_one_or_none()
                if new_id is not None:
                    return EnqueueResult(job_id=new_id, created=True)
                existing = conn.execute(sa.select(jobs.c.id).where(
                    jobs.c.dedup_key == key, jobs.c.state == _PENDING)).scalar_one_or_none()
                if existing is not None:
                    return EnqueueResult(job_id=existing, created=False)
            # The twin we collided with was claimed in between: insert again.
        raise self._busy("enqueue")

    def claim(self, worker_id: str, now: datetime | None = None) -> Job | None:
        """Lease the oldest available job to `worker_id`, or None when there is nothing to do."""
        at = self._now(now)
        with self._db.write() as conn:
            self._dead_letter_expired(conn, at)
            available = sa.or_(
                sa.and_(jobs.c.state == _PENDING, jobs.c.available_at <= at),
                sa.and_(jobs.c.state == _RUNNING, jobs.c.lease_expires_at <= at))
            # SKIP LOCKED: concurrent claimers on PostgreSQL pass over each other's rows
            # instead of waiting; SQLite serialises writers with BEGIN IMMEDIATE instead.
            pick = (sa.select(jobs.c.id).where(available)
                    .order_by(jobs.c.available_at, jobs.c.id).limit(1)
                    .with_for_update(skip_locked=True))
            job_id = conn.execute(pick).scalar_one_or_none()
            if job_id is None:
                return None
            row = conn.execute(
                sa.update(jobs).where(jobs.c.id == job_id)
                .values(state=_RUNNING, lease_owner=worker_id, lease_expires_at=at + self.lease,
                        attempts=jobs.c.attempts + 1, updated_at=at)
                .returning(*jobs.c)).one()
            return to_job(row)

    def heartbeat(self, job_id: int, worker_id: str, *, now: datetime | None = None) -> bool:
        """Extend the lease; False when the job is no longer `worker_id`'s to run."""
        at = self._now(now)
        with self._db.write() as conn:
            return self._update_owned(conn, job_id, worker_id,
                                      lease_expires_at=at + self.lease, updated_at=at)

    def complete(self, job_id: int, worker_id: str, result: dict[str, Any], *,
                 now: datetime | None = None) -> bool:
        """Mark the job done with `result`; False (and nothing changed) if the lease was lost."""
        at = self._now(now)
        with self._db.write() as conn:
            return self._update_owned(conn, job_id, worker_id, state=_DONE, result=result,
                                      lease_expires_at=None, updated_at=at)

    def fail(self, job_id: int, worker_id: str, error: str, temporary: bool, *,
             now: datetime | None = None) -> bool:
        """Retry later with backoff if `temporary` and attempts remain, else dead-letter the job."""
        at = self._now(now)
        message = error[:_MAX_ERROR]

        def work(conn: sa.Connection) -> bool:
            row = self._lock(conn, *self._owned(job_id, worker_id))
            if row is None:
                return False
            if temporary and row.attempts < row.max_attempts:
                later = at + timedelta(seconds=self.backoff.delay(row.attempts))
                self._back_to_pending(conn, row, at, available_at=later,
                                      attempts=row.attempts, last_error=message)
            else:
                conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(
                    state=_FAILED, last_error=message, lease_expires_at=None, updated_at=at))
            return True

        return self._write_settling_conflicts(work)

    def release(self, job_id: int, worker_id: str, *, now: datetime | None = None) -> bool:
        """Give the job back unfinished (worker shutting down) without counting the attempt."""
        at = self._now(now)

        def work(conn: sa.Connection) -> bool:
            row = self._lock(conn, *self._owned(job_id, worker_id))
            if row is None:
                return False
            self._back_to_pending(conn, row, at, available_at=at, attempts=row.attempts - 1,
                                  last_error=row.last_error)
            return True

        return self._write_settling_conflicts(work)

    def retry(self, job_id: int, *, now: datetime | None = None) -> Job:
        """Queue a failed (dead-letter) job again with its attempts reset."""
        at = self._now(now)

        def work(conn: sa.Connection) -> Job:
            row = self._lock(conn, _is_job(job_id))
            if row is None:
                raise NotFound(f"no job {job_id} in the queue")
            if row.state != _FAILED:
                raise UsageError(f"job {job_id} is {row.state}: only failed jobs can be retried")
            self._back_to_pending(conn, row, at, available_at=at, attempts=0,
                                  last_error=row.last_error)
            return to_job(conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).one())

        return self._write_settling_conflicts(work)

    def reap(self, now: datetime | None = None) -> int:
        """Dead-letter running jobs whose lease expired with no attempts left; how many."""
        at = self._now(now)
        with self._db.write() as conn:
            return self._dead_letter_expired(conn, at)

    def get(self, job_id: int) -> Job:
        with self._db.read() as conn:
            row = conn.execute(sa.select(jobs).where(_is_job(job_id))).one_or_none()
        if row is None:
            raise NotFound(f"no job {job_id} in the queue")
        return to_job(row)

    def list(self, state: JobState | None = None, limit: int = 100) -> builtins.list[Job]:
        """The newest `limit` jobs, optionally only those in `state`."""
        if limit < 1:
            raise UsageError(f"limit must be at least 1, got {limit}")
        query = sa.select(jobs).order_by(jobs.c.id.desc()).limit(limit)
        if state is not None:
            query = query.where(jobs.c.state == str(JobState(state)))
        with self._db.read() as conn:
            return [to_job(row) for row in conn.execute(query)]

    def counts(self) -> dict[JobState, int]:
        """How many jobs are in each state (every state present, zero included)."""
        query = sa.select(jobs.c.state, sa.func.count()).group_by(jobs.c.state)
        with self._db.read() as conn:
            found = {JobState(state): int(n) for state, n in conn.execute(query)}
        return {state: found.get(state, 0) for state in JobState}

    def summary(self) -> QueueSummary:
        """Jobs by state as operators count them, and when the oldest pending job was queued."""
        retrying = sa.and_(jobs.c.state == _PENDING, jobs.c.attempts > 0)
        query = (sa.select(jobs.c.state, retrying.label("retrying"), sa.func.count(),
                           sa.func.min(jobs.c.created_at))
                 # IN, not != done: the index on state skips the done jobs, which pile up.
                 .where(jobs.c.state.in_([_PENDING, _RUNNING, _FAILED]))
                 .group_by(jobs.c.state, "retrying"))
        counts = {"pending": 0, "running": 0, "failed": 0, "dead": 0}
        oldest: datetime | None = None
        with self._db.read() as conn:
            for state, is_retry, n, first in conn.execute(query):
                name = {_RUNNING: "running", _FAILED: "dead"}.get(
                    state, "failed" if is_retry else "pending")
                counts[name] += int(n)
                if state == _PENDING and first is not None:
                    oldest = min(oldest or utc(first), utc(first))
        return QueueSummary(oldest_pending=oldest, **counts)

    def ping(self) -> None:
        """Raise QueueUnavailable unless the database answers."""
        with self._db.read() as conn:
            conn.execute(sa.select(1))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SqlQueue:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _now(self, now: datetime | None) -> datetime:
        return utc(now if now is not None else self._clock())

    def _dead_letter_expired(self, conn: sa.Connection, at: datetime) -> int:
        # An alias, so that the subquery is not correlated with the UPDATE's own table.
        old = jobs.alias("expired")
        expired = (sa.select(old.c.id)
                   .where(old.c.state == _RUNNING, old.c.lease_expires_at <= at,
                          old.c.attempts >= old.c.max_attempts)
                   .with_for_update(skip_locked=True))
        done = conn.execute(sa.update(jobs).where(jobs.c.id.in_(expired)).values(
            state=_FAILED, last_error=LEASE_EXPIRED, lease_expires_at=None, updated_at=at))
        return int(done.rowcount)

    def _update_owned(self, conn: sa.Connection, job_id: int, worker_id: str,
                      **values: Any) -> bool:
        done = conn.execute(sa.update(jobs).where(*self._owned(job_id, worker_id)).values(**values))
        return bool(done.rowcount == 1)

    @staticmethod
    def _lock(conn: sa.Connection, *where: sa.ColumnElement[bool]) -> sa.Row[Any] | None:
        return conn.execute(sa.select(jobs).where(*where).with_for_update()).one_or_none()

    @staticmethod
    def _owned(job_id: int, worker_id: str) -> tuple[sa.ColumnElement[bool], ...]:
        # An expired lease nobody has taken over yet still counts: the worker is alive after all.
        return (_is_job(job_id), jobs.c.state == _RUNNING, jobs.c.lease_owner == worker_id)

    @staticmethod
    def _back_to_pending(conn: sa.Connection, job: sa.Row[Any], at: datetime, *,
                         available_at: datetime, attempts: int, last_error: str | None) -> None:
        """Make `job` pending again, or, if an identical request is already pending, close it
        as done and superseded: that twin will do the same work."""
        twin = conn.execute(sa.select(jobs.c.id).where(
            jobs.c.dedup_key == job.dedup_key, jobs.c.state == _PENDING,
            jobs.c.id != job.id)).scalar_one_or_none()
        values: dict[str, Any] = {"attempts": attempts, "last_error": last_error,
                                  "lease_expires_at": None, "updated_at": at}
        if twin is not None:
            values.update(state=_DONE, result={"superseded_by": twin})
        else:
            values.update(state=_PENDING, available_at=available_at)
        conn.execute(sa.update(jobs).where(jobs.c.id == job.id).values(**values))

    def _write_settling_conflicts(self, work: Callable[[sa.Connection], T]) -> T:
        for _ in range(_CONFLICT_TRIES):
            try:
                with self._db.write() as conn:
                    return work(conn)
            except exc.IntegrityError:
                continue  # an identical request became pending meanwhile: look again
        raise self._busy("update")

    def _busy(self, what: str) -> QueueUnavailable:
        return QueueUnavailable(f"job queue {self.url}: could not {what} a job because other "
                                "processes kept changing the same request; try again")


def _is_job(job_id: int) -> sa.ColumnElement[bool]:
    """`id == job_id`; never true for an id the column cannot hold (PostgreSQL's INTEGER), which
    the driver would refuse with an overflow instead of finding nothing."""
    return jobs.c.id == job_id if 0 < job_id <= MAX_JOB_ID else sa.false()
