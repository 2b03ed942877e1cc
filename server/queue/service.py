"""The queue as its own small HTTP service, so relays and workers on other machines can share it.

Every /v1 route wants `Authorization: Bearer TOKEN`. POST /v1/jobs answers only after the
durable insert; a database that is down answers 503 with Retry-After, never a lost 2xx.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ligoenv.oci.errors import NotFound, UsageError
from ligoenv.store import boundedjson
from ligoenv.store.errors import ConfigError, QueueUnavailable
from ligoenv.store.schemas import load_schema, strict_validator_class

from ..health import ops_routes, queue_check
from ..jobs import JobState, PublishRequest
from ..metrics import QueueCollector
from ..requestbody import read_capped
from .sql import SqlQueue

BODY_LIMIT = 1024 * 1024
RETRY_AFTER = "5"  # seconds a client should wait when the database is unavailable
MAX_LIST = 1000
Handler = Callable[[Request], Awaitable[Response]]


class _Refused(Exception):
    """A request we answer with an error status and a one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def create_queue_app(queue: SqlQueue, token: str, *, body_limit: int = BODY_LIMIT) -> Starlette:
    """The queue service over `queue`; its connections are closed when the app shuts down."""
    if not token:
        raise ConfigError("the queue service needs a token: set [queue] token")
    routes = _Routes(queue, body_limit, _request_validator())
    guard = _Guard(token.encode())

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        queue.close()

    # /healthz pings the database (clients ping the service with it); /readyz says the same
    # with a reason, and /metrics counts the jobs by state. Neither names the database.
    _healthz, readyz, metrics_page = ops_routes([queue_check(queue, detail=False)],
                                                [QueueCollector(queue)])
    return Starlette(lifespan=lifespan, routes=[
        Route("/healthz", routes.healthz, methods=["GET"]), readyz, metrics_page,
        Route("/v1/jobs", guard(routes.enqueue), methods=["POST"]),
        Route("/v1/jobs", guard(routes.list_jobs), methods=["GET"]),
        Route("/v1/counts", guard(routes.counts), methods=["GET"]),
        Route("/v1/claim", guard(routes.claim), methods=["POST"]),
        Route("/v1/jobs/{job_id:int}", guard(routes.get), methods=["GET"]),
        Route("/v1/jobs/{job_id:int}/retry", guard(routes.retry), methods=["POST"]),
        Route("/v1/jobs/{job_id:int}/heartbeat", guard(routes.heartbeat), methods=["POST"]),
        Route("/v1/jobs/{job_id:int}/complete", guard(routes.complete), methods=["POST"]),
        Route("/v1/jobs/{job_id:int}/fail", guard(routes.fail), methods=["POST"]),
        Route("/v1/jobs/{job_id:int}/release", guard(routes.release), methods=["POST"]),
    ])


class _Guard:
    """Checks the bearer token, then turns our errors into statuses with a JSON reason."""

    def __init__(self, token: bytes) -> None:
        self._expected = b"Bearer " + token

    def __call__(self, handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            given = request.headers.get("authorization", "").encode("latin-1", "replace")
            if not hmac.compare_digest(given, self._expected):
                return _error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
            try:
                return await handler(request)
            except _Refused as refused:
                return _error(refused.status, refused.message)
            except QueueUnavailable as error:
                return _error(503, str(error), {"Retry-After": RETRY_AFTER})
            except NotFound as error:
                return _error(404, str(error))
            except UsageError as error:
                return _error(409, str(error))

        return endpoint


class _Routes:
    def __init__(self, queue: SqlQueue, body_limit: int, validator: Any) -> None:
        self.queue = queue
        self.body_limit = body_limit
        self.validator = validator

    async def healthz(self, _request: Request) -> Response:
        try:
            await run_in_threadpool(self.queue.ping)
        except QueueUnavailable:
            # No details without a token: the reason names the database host.
            return JSONResponse({"status": "unavailable"}, status_code=503,
                                headers={"Retry-After": RETRY_AFTER})
        return JSONResponse({"status": "ok"})

    async def enqueue(self, request: Request) -> Response:
        body = await self._body(request)
        errors = sorted(self.validator.iter_errors(body), key=lambda e: len(e.path))
        if errors:
            where = ".".join(str(part) for part in errors[0].absolute_path) or "(top level)"
            raise _Refused(400, f"publish request: {where}: {errors[0].message}")
        try:
            publish = PublishRequest.from_json(body)
        except ValueError as error:  # a time that matches the pattern but is no date
            raise _Refused(400, f"publish request: {error}") from error
        result = await run_in_threadpool(self.queue.enqueue, publish)
        return JSONResponse({"job_id": result.job_id, "created": result.created},
                            status_code=201 if result.created else 200)

    async def list_jobs(self, request: Request) -> Response:
        state = request.query_params.get("state") or None
        if state is not None and state not in set(JobState):
            raise _Refused(400, f"state must be one of {', '.join(JobState)}, got {state!r}")
        limit = request.query_params.get("limit", "100")
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIST:
            raise _Refused(400, f"limit must be a whole number from 1 to {MAX_LIST}")
        found = await run_in_threadpool(
            self.queue.list, None if state is None else JobState(state), int(limit))
        return JSONResponse({"jobs": [job.to_json() for job in found]})

    async def counts(self, _request: Request) -> Response:
        counts = await run_in_threadpool(self.queue.counts)
        return JSONResponse({str(state): n for state, n in counts.items()})

    async def get(self, request: Request) -> Response:
        job = await run_in_threadpool(self.queue.get, request.path_params["job_id"])
        return JSONResponse(job.to_json())

    async def retry(self, request: Request) -> Response:
        job = await run_in_threadpool(self.queue.retry, request.path_params["job_id"])
        return JSONResponse(job.to_json())

    async def claim(self, request: Request) -> Response:
        worker = _worker(await self._body(request))
        job = await run_in_threadpool(self.queue.claim, worker)
        return Response(status_code=204) if job is None else JSONResponse(job.to_json())

    async def heartbeat(self, request: Request) -> Response:
        body = await self._body(request)
        return _leased(request, await run_in_threadpool(
            self.queue.heartbeat, request.path_params["job_id"], _worker(body)))

    async def complete(self, request: Request) -> Response:
        body = await self._body(request)
        result = body.get("result", {})
        if not isinstance(result, dict):
            raise _Refused(400, "result must be a JSON object")
        return _leased(request, await run_in_threadpool(
            self.queue.complete, request.path_params["job_id"], _worker(body), result))

    async def fail(self, request: Request) -> Response:
        body = await self._body(request)
        error, temporary = body.get("error"), body.get("temporary")
        if not isinstance(error, str) or not isinstance(temporary, bool):
            raise _Refused(400, "fail needs error (a string) and temporary (true or false)")
        return _leased(request, await run_in_threadpool(
            self.queue.fail, request.path_params["job_id"], _worker(body), error, temporary))

    async def release(self, request: Request) -> Response:
        body = await self._body(request)
        return _leased(request, await run_in_threadpool(
            self.queue.release, request.path_params["job_id"], _worker(body)))

    async def _body(self, request: Request) -> dict[str, Any]:
        """The JSON object in the body, read no further than the size limit."""
        try:
            data = await read_capped(request, self.body_limit)
        except HTTPException as refused:
            raise _Refused(refused.status_code, refused.detail) from None
        try:
            body = boundedjson.loads(data)
        except boundedjson.TooDeep as error:
            raise _Refused(400, str(error)) from None
        except ValueError as error:
            raise _Refused(400, "body is not valid JSON") from error
        if not isinstance(body, dict):
            raise _Refused(400, "body must be a JSON object")
        return body


def _worker(body: dict[str, Any]) -> str:
    worker = body.get("worker_id")
    if not isinstance(worker, str) or not 0 < len(worker) <= 255:
        raise _Refused(400, "worker_id must be a string of 1 to 255 characters")
    return worker


def _leased(request: Request, kept: bool) -> Response:
    if kept:
        return JSONResponse({"ok": True})
    return _error(409, f"job {request.path_params['job_id']} is not leased to this worker any more")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _request_validator() -> Any:
    """A validator for `$defs/request` of the job schema (the body of POST /v1/jobs)."""
    schema = load_schema("job")
    request_schema = {"$schema": schema["$schema"], "$defs": schema["$defs"],
                      "$ref": "#/$defs/request"}
    return strict_validator_class(schema)(request_schema)
