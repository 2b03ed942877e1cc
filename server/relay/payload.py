"""The content types each kind of webhook endpoint accepts (the body itself is read by
`requestbody`: at most `limit` bytes, then bounded JSON)."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request

from ..config import EndpointKind

DISTRIBUTION_TYPES = ("application/vnd.docker.distribution.events.v1+json",
                      "application/vnd.docker.distribution.events.v2+json")
_ACCEPTED_TYPES = {EndpointKind.DISTRIBUTION: (*DISTRIBUTION_TYPES, "application/json")}


def accepted_types(kind: EndpointKind) -> tuple[str, ...]:
    return _ACCEPTED_TYPES.get(kind, ("application/json",))


def check_content_type(kind: EndpointKind, request: Request) -> None:
    given = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if given not in accepted_types(kind):
        raise HTTPException(415, f"content type {given or '(none)'!r} is not one of "
                            f"{', '.join(accepted_types(kind))}")
