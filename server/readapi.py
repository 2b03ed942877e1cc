"""Read-only endpoints for clients without the publish root mounted.

`GET /.ligoenv/index/<registry>/<repository>.json` serves the digest manifest index at the
same path as a static mirror of the publish root would, so `ligoenv` reads both the same way;
`GET /v1/resolve?ref=REF[&at=TIME][&platform=OS/ARCH]` answers a resolution directly.
"""

from __future__ import annotations

from datetime import datetime

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ligoenv.errors import LigoenvError, NotFound, UsageError
from ligoenv.index import format_time, load_index, parse_time
from ligoenv.oci.platform import Platform
from ligoenv.oci.reference import Reference
from ligoenv.publishroot import PublishRoot

INDEX_PREFIX = "/.ligoenv/index/"


def read_routes(layout: PublishRoot) -> list[Route]:
    api = _ReadApi(layout)
    return [Route(INDEX_PREFIX + "{path:path}", api.index_file, methods=["GET", "HEAD"]),
            Route("/v1/resolve", api.resolve, methods=["GET"])]


class _ReadApi:
    def __init__(self, layout: PublishRoot) -> None:
        self.layout = layout
        self.index_root = (layout.root / ".ligoenv" / "index").resolve()

    async def index_file(self, request: Request) -> Response:
        relative = request.path_params["path"]
        path = (self.index_root / relative).resolve()
        # Only index files, only under the index directory: no traversal, no other files.
        if not relative.endswith(".json") or not path.is_relative_to(self.index_root) \
                or not path.is_file():
            return JSONResponse({"error": f"no index at {INDEX_PREFIX}{relative}"}, 404)
        return FileResponse(path, media_type="application/json",
                            headers={"Cache-Control": "no-cache"})

    async def resolve(self, request: Request) -> Response:
        try:
            return JSONResponse(self._resolve(request.query_params.get("ref", ""),
                                              request.query_params.get("at"),
                                              request.query_params.get("platform")))
        except NotFound as error:
            return JSONResponse({"error": str(error)}, 404)
        except (UsageError, ValueError) as error:
            return JSONResponse({"error": str(error)}, 400)
        except LigoenvError as error:
            return JSONResponse({"error": str(error)}, 500)

    def _resolve(self, text: str, at: str | None, platform_text: str | None) -> dict[str, object]:
        if not text:
            raise UsageError("missing query parameter ref")
        ref = Reference.parse(text)
        index = load_index(self.layout.index_path(ref.registry, ref.repository))
        if index is None:
            raise NotFound(f"{ref.name} is not in the publish index")
        digest = ref.digest
        if digest is None:
            assert ref.tag is not None
            digest = index.at(ref.tag, _parse_time(at)) if at else index.current(ref.tag)
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
                "at": format_time(_parse_time(at)) if at else None}


def _parse_time(text: str) -> datetime:
    try:
        return parse_time(text)
    except UsageError as error:
        raise UsageError(f"query parameter at: {error}") from None
