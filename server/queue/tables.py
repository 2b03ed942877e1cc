"""The one `jobs` table of the queue, its indexes, and the conversion of its rows to Job values."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from ..jobs import Job, JobState, PublishRequest

metadata = sa.MetaData()

_STATES = ", ".join(f"'{state}'" for state in JobState)
_PENDING = sa.text("state = 'pending'")

jobs = sa.Table(
    "jobs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dedup_key", sa.String(2048), nullable=False),
    sa.Column("request", sa.JSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("available_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("lease_owner", sa.String(255)),
    sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
    sa.Column("last_error", sa.Text),
    sa.Column("result", sa.JSON),
    sa.CheckConstraint(f"state IN ({_STATES})", name="jobs_state_valid"),
    # At most one pending job per request, enforced by the database itself so that
    # concurrent relays in several processes cannot queue the same request twice.
    sa.Index("jobs_pending_dedup", "dedup_key", unique=True,
             sqlite_where=_PENDING, postgresql_where=_PENDING),
    sa.Index("jobs_claimable", "state", "available_at", "id"),
    sa.Index("jobs_leases", "state", "lease_expires_at"),
)


def utc(value: datetime) -> datetime:
    """The same instant in UTC; a naive value (SQLite hands those back) is taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def to_job(row: sa.Row[Any]) -> Job:
    return Job(
        id=row.id, request=PublishRequest.from_json(row.request), state=JobState(row.state),
        attempts=row.attempts, max_attempts=row.max_attempts,
        created_at=utc(row.created_at), updated_at=utc(row.updated_at),
        available_at=utc(row.available_at), lease_owner=row.lease_owner,
        lease_expires_at=None if row.lease_expires_at is None else utc(row.lease_expires_at),
        last_error=row.last_error, result=row.result or {},
    )
