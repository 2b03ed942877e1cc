"""Read-only endpoints for clients without the publish root mounted.

`GET /.ligoenv/index/<path>` serves index files at the same paths as a static mirror of the
publish root would, so `ligoenv` reads both the same way: digest records are immutable and
cacheable for a year, pointers and history segments for seconds. `GET /v1/resolve`
answers a resolution; `/v1/history` pages through a tag's history and `/v1/tags` and
`/v1/repositories` list names, each reading only the files its page needs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ligoenv.oci.errors import LigoenvError, NotFound, UsageError
from ligoenv.oci.platform import Platform
from ligoenv.oci.reference import Reference
from ligoenv.store.index import paths
from ligoenv.store.index.reader import LocalIndexReader, list_repositories
from ligoenv.store.publishroot import PublishRoot
from ligoenv.store.times import format_time, parse_time

INDEX_PREFIX = f"/{paths.INDEX_DIR}/"
IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=5"
DEFAULT_PAGE = 100
MAX_PAGE = 1000


def read_routes(layout: PublishRoot) -> list[Route]:
    api = _ReadApi(layout)
    return [Route(INDEX_PREFIX + "{path:path}", api.index_file, methods=["GET", "HEAD"]),
            Route("/v1/resolve", api.answer(api.resolve), methods=["GET"]),
            Route("/v1/history", api.answer(api.history), methods=["GET"]),
            Route("/v1/tags", api.answer(api.tags), methods=["GET"]),
            Route("/v1/repositories", api.answer(api.repositories), methods=["GET"])]


class _ReadApi:
    def __init__(self, layout: PublishRoot) -> None:
        self.layout = layout
        self.index_root = (layout.root / paths.INDEX_DIR).resolve()

    async def index_file(self, request: Request) -> Response:
        relative = request.path_params["path"]
        path = (self.index_root / relative).resolve()
        # Only index files, only under the index directory: no traversal, no other files.
        if not relative.endswith(".json") or not path.is_relative_to(self.index_root) \
                or not path.is_file():
            return JSONResponse({"error": f"no index at {INDEX_PREFIX}{relative}"}, 404)
        cache = IMMUTABLE if paths.is_immutable(f"{paths.INDEX_DIR}/{relative}") else SHORT
        return FileResponse(path, media_type="application/json", headers={"Cache-Control": cache})

    def answer(self, handler: Callable[[Any], dict[str, Any]]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                return JSONResponse(handler(request.query_params), headers={"Cache-Control": SHORT})
            except NotFound as error:
                return JSONResponse({"error": str(error)}, 404)
            except (UsageError, ValueError) as error:
                return JSONResponse({"error": str(error)}, 400)
            except LigoenvError as error:
                return JSONResponse({"error": str(error)}, 500)
        return endpoint

    def reader(self) -> LocalIndexReader:
        return LocalIndexReader(self.layout.root)  # per request: files may change between them

    def resolve(self, query: Any) -> dict[str, Any]:
        ref = _reference(query)
        at = query.get("at")
        platform_text = query.get("platform")
        index = self.reader().get(ref.registry, ref.repository)
        digest = ref.digest
        if digest is None:
            assert ref.tag is not None
            digest = index.at(ref.tag, _parse_time(at, "at")) if at else index.current(ref.tag)
            if digest is None:
                raise NotFound(f"{ref.name}:{ref.tag} is not tagged now")
        platform = Platform.parse(platform_text) if platform_text else Platform("linux", "amd64")
        manifest = index.platform_digest(digest, platform)
        path = index.path_of(digest, platform)
        return {"reference": f"{ref.name}@{digest}", "digest": str(digest),
                "platform": str(platform), "manifest": str(manifest),
                # Relative to the publish root: where the server keeps it is none of a client's
                # business, and the client's mount of the root (CVMFS) may be elsewhere.
                "path": path,
                "at": format_time(_parse_time(at, "at")) if at else None}

    def history(self, query: Any) -> dict[str, Any]:
        """One page of a tag's history, newest last; `next` asks for the page before it."""
        ref = _reference(query)
        if ref.tag is None or ref.digest is not None:
            raise UsageError("query parameter ref: name a tag, e.g. registry/repository:tag")
        limit = _limit(query)
        since, before = (_parse_time(query[k], k) if query.get(k) else None
                         for k in ("since", "before"))
        index = self.reader().get(ref.registry, ref.repository)
        events = index.history(ref.tag, limit=limit + 1, since=since, before=before)
        if not events:
            raise NotFound(f"no history for {ref.name}:{ref.tag}"
                           + (" in that window" if since or before else ""))
        page = events[-limit:]
        more = len(events) > limit
        return {"reference": f"{ref.name}:{ref.tag}",
                "history": [e.to_json() for e in page],
                "next": {"before": format_time(page[0].since)} if more else None}

    def tags(self, query: Any) -> dict[str, Any]:
        text = _required(query, "repository")
        ref = Reference.parse(text)
        if text != ref.name:
            raise UsageError("query parameter repository: give registry/repository, no tag")
        names = self.reader().get(ref.registry, ref.repository).tag_names() or []
        return _page("tags", names, query)

    def repositories(self, query: Any) -> dict[str, Any]:
        limit = _limit(query)
        found = list_repositories(self.layout.root, _required(query, "registry"),
                                  after=query.get("after") or "", limit=limit + 1)
        return _paged("repositories", found, limit)


def _page(key: str, names: list[str], query: Any) -> dict[str, Any]:
    """`names` (sorted) after the `after` cursor, `limit` of them, and the next cursor."""
    after = query.get("after") or ""
    return _paged(key, [n for n in names if n > after], _limit(query))


def _paged(key: str, chosen: list[str], limit: int) -> dict[str, Any]:
    page = chosen[:limit]
    return {key: page, "next": {"after": page[-1]} if len(chosen) > limit else None}


def _reference(query: Any) -> Reference:
    return Reference.parse(_required(query, "ref"))


def _required(query: Any, name: str) -> str:
    value = query.get(name)
    if not value:
        raise UsageError(f"missing query parameter {name}")
    return str(value)


def _limit(query: Any) -> int:
    text = query.get("limit") or str(DEFAULT_PAGE)
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise UsageError(f"query parameter limit: a number from 1 to {MAX_PAGE}, not {text!r}")
    return int(text)


def _parse_time(text: str, name: str) -> datetime:
    try:
        return parse_time(text)
    except UsageError as error:
        raise UsageError(f"query parameter {name}: {error}") from None
