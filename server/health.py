"""Liveness and readiness of a role: /healthz says the process answers, /readyz that it can reach
what its role needs (its queue, the publish root, the configured registries), with the reason in
the body when it cannot.

Routes for the Starlette apps (relay, queue service) and the handlers of the worker's small
listener share these checks and the /metrics answer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ligoenv.oci.errors import AuthError, LigoenvError

from . import metrics
from .config import RegistryConfig

REGISTRY_TIMEOUT = 3.0  # a readiness probe must answer well within a probe's own timeout


class Pingable(Protocol):
    def ping(self) -> None: ...


@dataclass(frozen=True)
class Check:
    """One thing a role needs: `probe` returns None when fine, else the reason it is not."""

    name: str
    probe: Callable[[], str | None]


def queue_check(queue: Pingable, *, detail: bool = True) -> Check:
    def probe() -> str | None:
        try:
            queue.ping()
        except LigoenvError as error:
            return first_line(error) if detail else "database unavailable"
        return None

    return Check("queue", probe)


def publish_root_check(root: Path, *, writable: bool) -> Check:
    """The publish root is a directory (and, for a directory publisher, one we may write in;
    a CVMFS mount is read-only outside transactions)."""
    def probe() -> str | None:
        if not root.is_dir():
            return f"{root} is not a directory (is it mounted?)"
        if not os.access(root, os.R_OK | os.X_OK | (os.W_OK if writable else 0)):
            return f"{root} is not {'writable' if writable else 'readable'} by this user"
        return None

    return Check("publish_root", probe)


def registry_check(registry: RegistryConfig) -> Check:
    def probe() -> str | None:
        from .registries import registry_client

        try:
            with registry_client(registry, timeout=REGISTRY_TIMEOUT, retries=0) as client:
                client.ping()
        except AuthError:
            return None  # it answered; it only wants credentials for /v2/
        except LigoenvError as error:
            metrics.registry_error(registry.host)
            return first_line(error)
        return None

    return Check(f"registry {registry.name}", probe)


def readiness(checks: Iterable[Check]) -> tuple[bool, dict[str, Any]]:
    """Run every check; (ready, the body to answer with: each check's "ok" or its reason)."""
    results = {check.name: check.probe() or "ok" for check in checks}
    failing = [f"{name}: {reason}" for name, reason in results.items() if reason != "ok"]
    body: dict[str, Any] = {"status": "ready" if not failing else "not ready", "checks": results}
    if failing:
        body["reason"] = "; ".join(failing)
    return not failing, body


def first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]


async def healthz(_request: Request) -> Response:
    """Alive: the process answers requests."""
    return JSONResponse({"status": "ok"})


def ops_routes(checks: Iterable[Check], collectors: Iterable[Any] = ()) -> list[Route]:
    """GET /healthz, /readyz and /metrics for a Starlette app."""
    checks, collectors = tuple(checks), tuple(collectors)

    async def readyz(_request: Request) -> Response:
        ready, body = await run_in_threadpool(readiness, checks)
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics_page(_request: Request) -> Response:
        data = await run_in_threadpool(metrics.exposition, collectors)
        return Response(data, media_type=metrics.CONTENT_TYPE)

    return [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_page, methods=["GET"])]
