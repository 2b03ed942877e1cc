"""A client of the queue service: the same methods as SqlQueue, over HTTP with timeouts.

A service that cannot be reached, times out, answers 5xx or refuses our token raises
QueueUnavailable, so a relay answers 503 and the registry delivers the event again later; so
does an enqueue answered with anything but a job (a wrong URL's 404, a proxy's 413).
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import requests

from ligoenv.oci.errors import NotFound, UsageError
from ligoenv.store.errors import ConfigError, QueueUnavailable

from ..jobs import EnqueueResult, Job, JobState, PublishRequest
from .urls import redact_url


class HttpQueueClient:
    """Talks to `create_queue_app` at `url` (e.g. `http://queue.example:8081`)."""

    def __init__(self, url: str, token: str, *, timeout: float = 10.0) -> None:
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise ConfigError(f"queue service URL {redact_url(url)} must be http(s)://HOST[:PORT]")
        if not token:
            raise ConfigError("the queue service needs a token: set [queue] token")
        self.base = url.rstrip("/")
        self.url = redact_url(self.base)
        self.timeout = timeout
        self._token = token
        self._sessions = _SessionPool()

    def enqueue(self, request: PublishRequest) -> EnqueueResult:
        """Queue `request`; QueueUnavailable for any answer but a job or our service refusing
        the request itself, so that a relay answers 503 and the registry delivers it again."""
        response = self._send("POST", "/v1/jobs", request.to_json())
        status = response.status_code
        if _misdirected(response):
            raise QueueUnavailable(f"queue service {self.url} answered {status} "
                                   f"({_reason(response)}) to a publish request: check [queue] url")
        data = self._json(response)
        try:
            return EnqueueResult(job_id=int(data["job_id"]), created=bool(data["created"]))
        except (TypeError, KeyError, ValueError) as error:
            raise QueueUnavailable(f"queue service {self.url} answered {status} without a job: "
                                   "check [queue] url") from error

    def claim(self, worker_id: str) -> Job | None:
        response = self._send("POST", "/v1/claim", {"worker_id": worker_id})
        if response.status_code == 204:
            return None
        return Job.from_json(self._json(response))

    def heartbeat(self, job_id: int, worker_id: str) -> bool:
        return self._leased(job_id, "heartbeat", {"worker_id": worker_id})

    def complete(self, job_id: int, worker_id: str, result: dict[str, Any]) -> bool:
        return self._leased(job_id, "complete", {"worker_id": worker_id, "result": result})

    def fail(self, job_id: int, worker_id: str, error: str, temporary: bool) -> bool:
        return self._leased(job_id, "fail", {"worker_id": worker_id, "error": error,
                                             "temporary": temporary})

    def release(self, job_id: int, worker_id: str) -> bool:
        return self._leased(job_id, "release", {"worker_id": worker_id})

    def get(self, job_id: int) -> Job:
        return Job.from_json(self._call("GET", f"/v1/jobs/{int(job_id)}"))

    def list(self, state: JobState | None = None, limit: int = 100) -> builtins.list[Job]:
        params = {"limit": str(limit)} | ({"state": str(state)} if state else {})
        data = self._call("GET", "/v1/jobs", params=params)
        return [Job.from_json(job) for job in data["jobs"]]

    def retry(self, job_id: int) -> Job:
        return Job.from_json(self._call("POST", f"/v1/jobs/{int(job_id)}/retry"))

    def counts(self) -> dict[JobState, int]:
        data = self._call("GET", "/v1/counts")
        return {state: int(data.get(str(state), 0)) for state in JobState}

    def ping(self) -> None:
        """Raise QueueUnavailable unless the service and its database answer."""
        self._call("GET", "/healthz", auth=False)

    def close(self) -> None:
        self._sessions.close()

    def __enter__(self) -> HttpQueueClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _leased(self, job_id: int, action: str, body: dict[str, Any]) -> bool:
        response = self._send("POST", f"/v1/jobs/{int(job_id)}/{action}", body)
        if response.status_code == 409:
            return False  # the lease went to another worker, or the job was dead-lettered
        self._json(response)
        return True

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, *,
              params: dict[str, str] | None = None, auth: bool = True) -> Any:
        return self._json(self._send(method, path, body, params=params, auth=auth))

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None, *,
              params: dict[str, str] | None = None, auth: bool = True) -> requests.Response:
        headers = {"Authorization": f"Bearer {self._token}"} if auth else {}
        try:
            with self._sessions.lend() as session:
                return session.request(method, self.base + path, json=body, params=params,
                                       headers=headers, timeout=self.timeout,
                                       allow_redirects=False)
        except requests.Timeout as error:
            raise QueueUnavailable(f"queue service {self.url} did not answer within "
                                   f"{self.timeout:g}s") from error
        except requests.RequestException as error:
            raise QueueUnavailable(f"queue service {self.url} unreachable: "
                                   f"{type(error).__name__}") from error

    def _json(self, response: requests.Response) -> Any:
        """The JSON of a 2xx answer; any other answer becomes the matching error."""
        status = response.status_code
        if 200 <= status < 300:
            try:
                return response.json()
            except ValueError as error:
                raise QueueUnavailable(f"queue service {self.url} answered {status} "
                                       "with a body that is not JSON: check [queue] url"
                                       ) from error
        reason = _reason(response)
        if status in (401, 403):
            raise QueueUnavailable(f"queue service {self.url} refused our token ({status}): "
                                   "check [queue] token")
        if status == 404:
            raise NotFound(reason)
        if status in (400, 409, 413, 422):
            raise UsageError(f"queue service {self.url}: {reason}")
        raise QueueUnavailable(f"queue service {self.url} answered {status}: {reason}")



class _SessionPool:
    """Sessions lent to one thread at a time (a requests.Session is not thread-safe) and kept
    for the next call, so connections are reused; sessions beyond `keep` idle ones are closed.
    A worker starts a heartbeat thread per job: per-thread sessions would leak one socket each."""

    def __init__(self, keep: int = 8) -> None:
        self._keep = keep
        self._idle: builtins.list[requests.Session] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def lend(self) -> Iterator[requests.Session]:
        with self._lock:
            session = self._idle.pop() if self._idle else None
        session = session or requests.Session()
        try:
            yield session
        finally:
            with self._lock:
                kept = not self._closed and len(self._idle) < self._keep
                if kept:
                    self._idle.append(session)
            if not kept:
                session.close()

    def close(self) -> None:
        """Close the idle sessions; those lent out are closed when given back."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._closed = True
        for session in idle:
            session.close()


def _misdirected(response: requests.Response) -> bool:
    """An answer that says the URL does not lead to a queue service: a redirect, or a 4xx
    other than a refused token (checked apart) and our service's 400 for an invalid request
    (a 404 from a wrong path, a proxy's 413)."""
    status = response.status_code
    if not 300 <= status < 500 or status in (401, 403):
        return False
    return not (status == 400 and _service_error(response) is not None)


def _service_error(response: requests.Response) -> str | None:
    """The one-line `error` of our service's JSON answers, or None for anyone else's."""
    try:
        message = response.json().get("error")
    except (ValueError, AttributeError):
        return None
    return message.splitlines()[0] if isinstance(message, str) and message else None


def _reason(response: requests.Response) -> str:
    return _service_error(response) or response.reason or f"HTTP {response.status_code}"
