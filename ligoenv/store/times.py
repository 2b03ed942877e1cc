"""Times as ligoenv writes and reads them: RFC 3339 in UTC with a `Z` (index, lockfile, pins,
provenance), and the forgiving form a user types after --at."""

from __future__ import annotations

from datetime import UTC, datetime

from ligoenv.oci.errors import UsageError


def format_time(when: datetime, *, whole_seconds: bool = False) -> str:
    """RFC 3339 UTC with a `Z`; fractions of a second only when there are some (and wanted).

    Naive times are taken to be UTC. Lockfiles use `whole_seconds=True`.
    """
    when = as_utc(when)
    if whole_seconds:
        when = when.replace(microsecond=0)
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{when.microsecond:06d}Z" if when.microsecond else f"{text}Z"


def parse_time(text: str) -> datetime:
    """`2026-03-01`, `2026-03-01T12:00[:00]`, with `Z` or `+02:00` or neither (then UTC)."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"invalid time {text!r}: use e.g. 2026-03-01, 2026-03-01T12:00 or 2026-03-01T12:00Z "
            "(times without an offset are UTC)"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def as_utc(when: datetime) -> datetime:
    """`when` in UTC; a naive time is taken to be UTC already."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
