"""The relay's Starlette app: one POST route per configured endpoint, plus GET /healthz.

A delivery is answered 202 only after every publish request in it was durably queued; while
the queue is down the answer is 503, so the registry keeps the delivery and sends it again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ligoenv.oci.errors import LigoenvError, UsageError
from ligoenv.store.errors import QueueUnavailable
from ligoenv.store.schemas import schema_errors

from .. import metrics, requestbody
from ..config import EndpointConfig, EndpointKind, ServerConfig
from ..health import healthz
from ..jobs import JobSink, PublishRequest
from . import auth, distribution, dockerhub, generic, harbor, payload
from .common import Ignored, Parsed, allowed, not_allowed

RETRY_AFTER_SECONDS = 30
_PARSERS: dict[EndpointKind, Callable[[dict[str, Any], EndpointConfig, datetime], list[Parsed]]] = {
    EndpointKind.DISTRIBUTION: distribution.parse,
    EndpointKind.DOCKERHUB: dockerhub.parse,
    EndpointKind.HARBOR: harbor.parse,
    EndpointKind.GENERIC: generic.parse,
}
log = logging.getLogger(__name__)


def create_relay_app(config: ServerConfig, sink: JobSink, *,
                     clock: Callable[[], datetime] | None = None) -> Starlette:
    routes = [Route("/healthz", healthz, methods=["GET"])]
    for endpoint in config.relay.endpoints:
        handler = _EndpointHandler(endpoint, sink, config.relay.body_limit, clock or _utcnow)
        routes.append(Route(endpoint.path, handler.handle, methods=["POST"]))
    return Starlette(routes=routes, exception_handlers={HTTPException: _error_response,
                                                        RecursionError: _too_deep})


class _EndpointHandler:
    def __init__(self, endpoint: EndpointConfig, sink: JobSink, body_limit: int,
                 clock: Callable[[], datetime]) -> None:
        self.endpoint = endpoint
        self.sink = sink
        self.body_limit = body_limit
        self.clock = clock

    async def handle(self, request: Request) -> Response:
        status = 500
        try:
            response = await self._handle(request)
            status = response.status_code
            return response
        except HTTPException as error:
            status = error.status_code
            raise
        finally:
            metrics.webhook_received(self.endpoint.name, status)

    async def _handle(self, request: Request) -> Response:
        now = self.clock()
        try:
            document = await self.read(request)
            items = self.parse(document, now)
        except HTTPException as error:
            log.warning("rejected delivery (%s): %s", error.status_code, error.detail,
                        extra={"endpoint": self.endpoint.name})
            raise
        requests, ignored = self.split(items)
        try:
            jobs = await run_in_threadpool(self.enqueue_all, requests)
        except QueueUnavailable as error:
            return self.retry_later("queue unavailable", error)
        except LigoenvError as error:
            # Not expected from a queue (a misconfigured one, say), but the delivery must not
            # be lost: 503 makes the registry send it again, a 500 may not.
            return self.retry_later("could not queue", error)
        return JSONResponse({"accepted": len(jobs), "jobs": jobs,
                             "ignored": [item.to_json() for item in ignored]}, 202)

    def retry_later(self, what: str, error: LigoenvError) -> Response:
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        log.error("%s, asked the sender to retry: %s", what, reason,
                  extra={"endpoint": self.endpoint.name})
        return JSONResponse({"error": f"{what}: {reason}"}, 503,
                            headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

    async def read(self, request: Request) -> Any:
        """Checks in the order a sender can act on: credentials, content type, size, JSON, schema
        (an HMAC signs the body, so it is checked once the capped body is read)."""
        auth_config = self.endpoint.auth
        auth.check_request(auth_config, request.headers, request.path_params)
        if not auth.needs_body(auth_config):
            payload.check_content_type(self.endpoint.kind, request)
        raw = await requestbody.read_capped(request, self.body_limit)
        auth.check_signature(auth_config, request.headers, raw)
        if auth.needs_body(auth_config):
            payload.check_content_type(self.endpoint.kind, request)
        document = requestbody.parse_json(raw)
        errors = schema_errors(document, f"webhooks/{self.endpoint.kind}")
        if errors:
            # A field's value may be huge: keep the answer (and the log line) short.
            raise HTTPException(400, f"payload does not match the {self.endpoint.kind} webhook "
                                f"schema: {_shorten(errors[0])}")
        return document

    def parse(self, document: dict[str, Any], now: datetime) -> list[Parsed]:
        try:
            return _PARSERS[self.endpoint.kind](document, self.endpoint, now)
        except UsageError as error:
            raise HTTPException(400, str(error)) from None

    def split(self, items: list[Parsed]) -> tuple[list[PublishRequest], list[Ignored]]:
        requests: list[PublishRequest] = []
        ignored: list[Ignored] = []
        for item in items:
            if isinstance(item, PublishRequest) and not allowed(self.endpoint, item):
                item = not_allowed(self.endpoint, item)
            if isinstance(item, Ignored):
                # Debug: every pushed layer sends an event that is ignored here.
                log.debug("ignored: %s", item.reason, extra={"endpoint": self.endpoint.name})
                ignored.append(item)
            else:
                requests.append(item)
        return requests, ignored

    def enqueue_all(self, requests: list[PublishRequest]) -> list[int]:
        # In order, and all before answering: a failure part-way leaves the earlier ones queued,
        # and the sender's retry finds them pending (the queue deduplicates them).
        jobs = []
        for request in requests:
            result = self.sink.enqueue(request)
            log.info("queued %s request", request.action, extra={
                "endpoint": self.endpoint.name, "repository": request.repository,
                "tag": request.tag, "digest": request.digest, "job_id": result.job_id})
            jobs.append(result.job_id)
        return jobs


async def _error_response(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    return JSONResponse({"error": error.detail}, error.status_code, headers=error.headers)


async def _too_deep(request: Request, error: Exception) -> Response:
    # parse_json bounds the depth first; this is the last line of defence, never a 500.
    log.warning("rejected delivery (400): payload nested too deeply to read")
    return JSONResponse({"error": "payload nested too deeply to read"}, 400)


def _shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _utcnow() -> datetime:
    return datetime.now(UTC)
