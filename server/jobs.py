"""The values that flow from relay to queue to worker: publish requests and jobs."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

SYNC_SOURCE = "sync:"  # jobs from `ligoenv-server sync` have the source `sync:<list name>`


class Action(enum.StrEnum):
    PUBLISH = "publish"  # publish the image a tag points at (digest given or resolved)
    UNTAG = "untag"  # the tag was deleted upstream: record it in history, keep the image


@dataclass(frozen=True)
class PublishRequest:
    """A normalised webhook event: what to publish, and where we heard of it."""

    registry: str  # a registry configured for the endpoint, never a host from the payload
    repository: str
    tag: str | None
    digest: str | None  # sha256:... when the source told us; resolved by the worker otherwise
    source: str  # e.g. "webhook:distribution/main-registry", "webhook:dockerhub/hub", "cli"
    received_at: datetime
    action: Action = Action.PUBLISH
    callback_url: str | None = None  # Docker Hub only, host already validated by the relay
    # The platforms the endpoint asks for ("linux/arm64", ...); empty: the publisher's default.
    # Carried in the request so that workers need not share the relay's endpoint config.
    platforms: tuple[str, ...] = ()
    # When the registry says the push happened (its event timestamp), for the push-to-published
    # latency; None when the source gives none. Not part of the request's identity.
    event_time: datetime | None = field(default=None, compare=False)

    def dedup_key(self) -> str:
        """Identical pending requests share this key and are queued once."""
        return "|".join([self.action, self.registry, self.repository, self.tag or "",
                         self.digest or "", ",".join(self.platforms)])

    def to_json(self) -> dict[str, Any]:
        return {"registry": self.registry, "repository": self.repository, "tag": self.tag,
                "digest": self.digest, "source": self.source,
                "received_at": self.received_at.isoformat(), "action": str(self.action),
                "callback_url": self.callback_url, "platforms": list(self.platforms),
                "event_time": _iso(self.event_time)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PublishRequest:
        """Raises ValueError for a time that is no date or has no time zone (which would
        compare with nothing in the tag history)."""
        received_at = datetime.fromisoformat(data["received_at"])
        if received_at.tzinfo is None:
            raise ValueError(f"received_at {data['received_at']!r} has no time zone")
        return cls(registry=data["registry"], repository=data["repository"], tag=data.get("tag"),
                   digest=data.get("digest"), source=data["source"], received_at=received_at,
                   action=Action(data.get("action", "publish")),
                   callback_url=data.get("callback_url"),
                   platforms=tuple(data.get("platforms") or ()),
                   event_time=_from_iso(data.get("event_time")))


def source_name(source: str) -> str:
    """The one spelling of where a request came from, as jobs and tag histories show it:
    `webhook:harbor/lab`, `sync:osg`, `cli`. Requests queued by earlier versions spell `harbor:lab`."""
    kind, colon, endpoint = source.partition(":")
    if not colon or kind == "webhook" or source.startswith(SYNC_SOURCE):
        return source
    return f"webhook:{kind}/{endpoint}"


class JobState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # dead letter: attempts exhausted or a permanent error


@dataclass(frozen=True)
class QueueSummary:
    """Jobs by state as operators count them: `failed` are pending again after a failed attempt
    (waiting for their retry), `dead` are dead letters."""

    pending: int
    running: int
    failed: int
    dead: int
    oldest_pending: datetime | None  # when the oldest pending job was queued


@dataclass(frozen=True)
class EnqueueResult:
    job_id: int
    created: bool  # False when an identical request was already pending


@dataclass(frozen=True)
class Job:
    id: int
    request: PublishRequest
    state: JobState
    attempts: int
    max_attempts: int
    created_at: datetime
    updated_at: datetime
    available_at: datetime  # not claimable before this (backoff)
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    last_error: str | None = None
    result: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The job as schemas/job.schema.json describes it (the queue service speaks this)."""
        return {"id": self.id, "request": self.request.to_json(), "state": str(self.state),
                "attempts": self.attempts, "max_attempts": self.max_attempts,
                "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat(),
                "available_at": self.available_at.isoformat(), "lease_owner": self.lease_owner,
                "lease_expires_at": _iso(self.lease_expires_at), "last_error": self.last_error,
                "result": self.result}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        return cls(id=data["id"], request=PublishRequest.from_json(data["request"]),
                   state=JobState(data["state"]), attempts=data["attempts"],
                   max_attempts=data["max_attempts"],
                   created_at=datetime.fromisoformat(data["created_at"]),
                   updated_at=datetime.fromisoformat(data["updated_at"]),
                   available_at=datetime.fromisoformat(data["available_at"]),
                   lease_owner=data.get("lease_owner"),
                   lease_expires_at=_from_iso(data.get("lease_expires_at")),
                   last_error=data.get("last_error"), result=data.get("result") or {})


class JobSink(Protocol):
    """What the relay needs of a queue: durable acceptance, or QueueUnavailable."""

    def enqueue(self, request: PublishRequest) -> EnqueueResult: ...


class JobSource(Protocol):
    """What a worker needs of a queue. A lost lease makes the lease methods return False."""

    def claim(self, worker_id: str) -> Job | None: ...

    def heartbeat(self, job_id: int, worker_id: str) -> bool: ...

    def complete(self, job_id: int, worker_id: str, result: dict[str, Any]) -> bool: ...

    def fail(self, job_id: int, worker_id: str, error: str, temporary: bool) -> bool: ...

    def release(self, job_id: int, worker_id: str) -> bool: ...


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _from_iso(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)
