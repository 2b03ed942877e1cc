"""The pins of the publish root over HTTP: read them as a mirror would, pin with a token.

`GET /.ligoenv/pins.json` serves the pins file at the path a static mirror has it;
`POST /v1/pins` with `Authorization: Bearer <[gc] pin_token>` and a JSON body
`{"lockfile": {...}, "why": "...", "by": "...", "label": "..."?}` pins every digest of the
lockfile. Without a configured token nothing is accepted.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ligoenv.oci.errors import LigoenvError
from ligoenv.store.lockfile import parse_lockfile
from ligoenv.store.pins import PINS_FILE
from ligoenv.store.publishroot import PublishRoot

from .config import Secret
from .pinning import pin
from .publishers.base import Publisher
from .requestbody import parse_json, read_capped

MAX_PIN_BODY = 1 << 20


def pin_routes(layout: PublishRoot, token: Secret | None,
               publisher: Callable[[], Publisher]) -> list[Route]:
    api = _PinApi(layout, token, publisher)
    return [Route("/" + PINS_FILE, api.pins_file, methods=["GET", "HEAD"]),
            Route("/v1/pins", api.add, methods=["POST"])]


class _PinApi:
    def __init__(self, layout: PublishRoot, token: Secret | None,
                 publisher: Callable[[], Publisher]) -> None:
        self.layout, self.token, self.publisher = layout, token, publisher

    async def pins_file(self, request: Request) -> Response:
        path = self.layout.root / PINS_FILE
        if not path.is_file():
            return JSONResponse({"error": "no pins in this publish root"}, 404)
        return FileResponse(path, media_type="application/json", headers={"Cache-Control": "no-cache"})

    async def add(self, request: Request) -> Response:
        try:
            self._authorize(request)
            body = parse_json(await read_capped(request, MAX_PIN_BODY))
            lockfile, by, why, label = _fields(body)
            label, changes = await run_in_threadpool(
                pin, self.publisher(), lockfile, "api", by=by, why=why, at=datetime.now(UTC),
                label=label)
        except HTTPException as error:
            return JSONResponse({"error": error.detail}, error.status_code)
        except LigoenvError as error:
            status = 503 if error.temporary else 400
            return JSONResponse({"error": str(error)}, status)
        return JSONResponse({"label": label, "pinned": [str(c.digest) for c in changes],
                             "changed": sum(c.changed for c in changes)})

    def _authorize(self, request: Request) -> None:
        if self.token is None:
            raise HTTPException(403, "this server accepts no pins over HTTP: set [gc] pin_token")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not self.token.matches(given.strip()):
            raise HTTPException(401, "a valid bearer token is required to pin")


def _fields(body: Any) -> tuple[Any, str, str, str | None]:
    if not isinstance(body, dict):
        raise HTTPException(400, "expected a JSON object with lockfile, why and by")
    why, by, label = body.get("why"), body.get("by"), body.get("label")
    if not isinstance(why, str) or not why.strip() or not isinstance(by, str) or not by.strip():
        raise HTTPException(400, "why and by must be non-empty strings: who pins, and for what")
    if label is not None and (not isinstance(label, str) or not label.strip()):
        raise HTTPException(400, "label must be a non-empty string")
    return parse_lockfile(body.get("lockfile"), "in the request"), by.strip(), why.strip(), label
