"""Reading an HTTP request body safely: at most `limit` bytes, then JSON of bounded depth.

Used by every endpoint that takes a body: the relay's webhooks, the pins API, the queue service.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request

from ligoenv.store import boundedjson


async def read_capped(request: Request, limit: int) -> bytes:
    """The body, or 413 as soon as it is known to exceed `limit`: from Content-Length when it is
    declared, and by counting while streaming, because a chunked or lying sender declares nothing."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HTTPException(400, "invalid Content-Length header")
        if int(declared) > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    try:
        return boundedjson.loads(raw)
    except ValueError as error:
        raise HTTPException(400, f"invalid JSON: {error}") from None


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"request body larger than {limit} bytes")
