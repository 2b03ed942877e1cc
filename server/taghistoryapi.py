"""A tag's history in the shape proposed for the OCI distribution spec's `_oci` extensions.

`GET /v2/<name>/_oci/tag-history/<tag>` (the proposal's path) and `GET /v2/<name>/_oci/tag/history?tag=`
answer an OCI image index whose descriptors are the digests the tag pointed at, newest first,
so tools that know the proposal read ligoenv's history without knowing its index format.
`<name>` is `<registry>/<repository>` as in the publish root. See docs/tag-history-api.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ligoenv.oci.errors import InvalidReference, LigoenvError
from ligoenv.oci.manifest import OCI_INDEX
from ligoenv.oci.reference import Reference
from ligoenv.store.index import RepositoryView, TagEvent
from ligoenv.store.index.reader import LocalIndexReader
from ligoenv.store.publishroot import PublishRoot
from ligoenv.store.times import format_time, parse_time

PREFIX = "org.ligoenv.tag."
MAX_PAGE = 1000


def tag_history_routes(layout: PublishRoot) -> list[Route]:
    api = _TagHistoryApi(layout)
    return [Route("/v2/{name:path}/_oci/tag-history/{tag}", api.by_path, methods=["GET"]),
            Route("/v2/{name:path}/_oci/tag/history", api.by_query, methods=["GET"])]


class _TagHistoryApi:
    def __init__(self, layout: PublishRoot) -> None:
        self.layout = layout

    async def by_path(self, request: Request) -> Response:
        return self._answer(request, request.path_params["name"], request.path_params["tag"])

    async def by_query(self, request: Request) -> Response:
        return self._answer(request, request.path_params["name"], request.query_params.get("tag", ""))

    def _answer(self, request: Request, name: str, tag: str) -> Response:
        try:
            ref = Reference.parse(f"{name}:{tag}")
            if ref.name != name or ref.tag != tag:
                raise InvalidReference(f"{name}:{tag} is not a canonical repository and tag")
            limit = _limit(request.query_params.get("n"))
            last = request.query_params.get("last")
            before = parse_time(last) if last else None
        except (LigoenvError, ValueError) as error:
            return _error("NAME_INVALID", str(error), 400)
        try:
            index = LocalIndexReader(self.layout.root).get(ref.registry, ref.repository)
            events = _newest_first(index, tag, before, limit + 1)
            page, more = events[:limit], len(events) > limit
            manifests = [_descriptor(index, tag, event) for event in page]
        except LigoenvError as error:
            return _error("UNKNOWN", str(error), 500)
        headers = {"Cache-Control": "no-cache"}
        if more:
            query = urlencode({"n": limit, "last": format_time(page[-1].since),
                               **({"tag": tag} if "tag" in request.query_params else {})})
            headers["Link"] = f'<{request.url.path}?{query}>; rel="next"'
        body = {"schemaVersion": 2, "mediaType": OCI_INDEX,
                "manifests": manifests}
        return JSONResponse(body, headers=headers, media_type=OCI_INDEX)


def _newest_first(index: RepositoryView, tag: str, before: datetime | None,
                  wanted: int) -> list[TagEvent]:
    """Up to `wanted` of the tag's pushes, newest first; only those older than `before` when
    paging. Reads only the newest history segments it needs (untags are skipped, so it asks
    for more until it has enough or the history ends); an unknown tag has none."""
    count = wanted
    while True:
        events = index.history(tag, limit=count, before=before)
        pushes = [event for event in reversed(events) if event.digest is not None]
        if len(pushes) >= wanted or len(events) < count:
            return pushes[:wanted]
        count *= 2


def _descriptor(index: RepositoryView, tag: str, event: TagEvent) -> dict[str, Any]:
    assert event.digest is not None
    record = index.record(event.digest)
    annotations = {"org.opencontainers.image.ref.name": tag, PREFIX + "from": format_time(event.since),
                   PREFIX + "source": event.source}
    if event.until is not None:
        annotations[PREFIX + "until"] = format_time(event.until)
    descriptor: dict[str, Any] = {"mediaType": record.media_type if record else "",
                                  "digest": str(event.digest), "annotations": annotations}
    if record is not None and record.size is not None:
        annotations[PREFIX + "image-size"] = str(record.size)
    return descriptor


def _limit(text: str | None) -> int:
    if text is None:
        return MAX_PAGE
    value = int(text)
    if not 1 <= value <= MAX_PAGE:
        raise ValueError(f"n must be between 1 and {MAX_PAGE}")
    return value


def _error(code: str, message: str, status: int) -> Response:
    # The distribution spec's error body.
    return JSONResponse({"errors": [{"code": code, "message": message}]}, status)
