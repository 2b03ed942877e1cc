"""`GET /v1/status?ref=REF[&platform=OS/ARCH]`: is an image published yet, and if not, why?

Answers from the publish root (see ligoenv.store.published) and, where the process has a queue,
from the newest jobs about the repository, so `ligoenv wait` can stop at once with the
server's own error when publishing failed.
"""

from __future__ import annotations

from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ligoenv.oci.errors import LigoenvError, UsageError
from ligoenv.oci.platform import Platform
from ligoenv.oci.reference import Reference
from ligoenv.store.index.reader import LocalIndexReader
from ligoenv.store.published import publication
from ligoenv.store.publishroot import PublishRoot

from .jobs import Job, JobState

RECENT_JOBS = 500  # how far back the newest jobs are searched for the image's own


class JobLister(Protocol):
    def list(self, state: JobState | None = None, limit: int = 100) -> list[Job]: ...


def status_routes(layout: PublishRoot, jobs: JobLister | None) -> list[Route]:
    api = _StatusApi(layout, jobs)
    return [Route("/v1/status", api.status, methods=["GET"])]


class _StatusApi:
    def __init__(self, layout: PublishRoot, jobs: JobLister | None) -> None:
        self.layout = layout
        self.jobs = jobs

    async def status(self, request: Request) -> Response:
        try:
            return JSONResponse(self._status(request.query_params.get("ref", ""),
                                             request.query_params.get("platform")),
                                headers={"Cache-Control": "no-store"})
        except UsageError as error:
            return JSONResponse({"error": str(error)}, 400)
        except LigoenvError as error:
            return JSONResponse({"error": str(error)}, 503 if error.temporary else 500)

    def _status(self, text: str, platform_text: str | None) -> dict[str, Any]:
        if not text:
            raise UsageError("missing query parameter ref")
        ref = Reference.parse(text)
        if ref.digest is None:
            raise UsageError(f"ref {text!r}: give the digest to wait for (REF@sha256:...)")
        platform = Platform.parse(platform_text) if platform_text else None
        index = LocalIndexReader(self.layout.root).get(ref.registry, ref.repository)
        state = publication(self.layout, index, ref, platform)
        return {"reference": str(ref), "published": state.published, "path": state.path,
                "current": str(state.current) if state.current else None, "job": self._job(ref)}

    def _job(self, ref: Reference) -> dict[str, Any] | None:
        if self.jobs is None:
            return None
        for job in self.jobs.list(limit=RECENT_JOBS):
            request = job.request
            if (request.registry, request.repository) != (ref.registry, ref.repository):
                continue
            if request.digest == str(ref.digest) or (request.digest is None and request.tag == ref.tag):
                return {"id": job.id, "state": str(job.state), "attempts": job.attempts,
                        "error": job.last_error, "updated": job.updated_at.isoformat()}
        return None
