"""The worker: claim a job, pull the image by digest, complete it for Apptainer, publish it.

Idempotent (a published digest is never unpacked again: only its tag moves) and crash-safe
(unpacking happens in a staging directory the publisher either moves into place whole or
discards; a worker that dies mid-job loses its lease and the job is claimed again).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ligoenv.errors import ConfigError, LigoenvError, PlatformNotFound
from ligoenv.index import manifest_record
from ligoenv.oci.cache import LayerCache
from ligoenv.oci.digest import Digest
from ligoenv.oci.manifest import ImageIndex, ImageManifest
from ligoenv.oci.platform import Platform
from ligoenv.oci.pull import pull
from ligoenv.oci.reference import Reference
from ligoenv.oci.registry import RegistryClient
from ligoenv.oci.unpack import UnpackOptions
from ligoenv.sandbox import complete_tree

from .config import RegistryConfig, ServerConfig
from .logs import job_context
from .model import Action, Job, JobSource, PublishRequest
from .publishers.base import Publisher, PublishOutcome, StagedImage, StagedPlatform

log = logging.getLogger("ligoenv.worker")
ClientFactory = Callable[[RegistryConfig], RegistryClient]


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 100000}"


def registry_client(registry: RegistryConfig) -> RegistryClient:
    """A client for a configured registry, with its configured credentials if any."""
    from ligoenv.oci.auth import Credentials

    credentials = None
    if registry.username and registry.password is not None:
        credentials = Credentials(registry.username, registry.password.reveal(), "server config")
    return RegistryClient(registry.host, insecure=registry.insecure, credentials=credentials)


class Worker:
    """Runs jobs from `queue` until `stop` is set; `process()` does one request (and is all that
    `ligoenv-server publish` uses, without a queue)."""

    def __init__(self, config: ServerConfig, queue: JobSource | None, publisher: Publisher, *,
                 worker_id: str | None = None, client_factory: ClientFactory = registry_client,
                 clock: Callable[[], datetime] | None = None,
                 wake: threading.Event | None = None) -> None:
        self.config = config
        # Set by an in-process relay after it queued something, so that an idle worker starts
        # at once instead of at its next poll (`ligoenv-server serve`).
        self.wake = wake or threading.Event()
        self.queue = queue
        self.publisher = publisher
        self.worker_id = worker_id or default_worker_id()
        self.cache = LayerCache(config.worker.cache_dir)
        self._client_factory = client_factory
        self._clock = clock or (lambda: datetime.now(UTC))
        self._options = UnpackOptions(keep_setuid=config.publisher.keep_setuid)

    def run(self, stop: threading.Event) -> None:
        """Claim and run jobs until `stop` is set; the job in hand is always finished first."""
        assert self.queue is not None, "a worker without a queue can only process() requests"
        log.info("worker started", extra={"worker": self.worker_id})
        while not stop.is_set():
            try:
                job = self.queue.claim(self.worker_id)
            except LigoenvError as error:
                log.warning("cannot claim a job: %s", error, extra={"worker": self.worker_id})
                stop.wait(self.config.worker.poll_interval)
                continue
            if job is None:
                self._idle(stop)
                continue
            self.run_job(job)
        log.info("worker stopped", extra={"worker": self.worker_id})

    def _idle(self, stop: threading.Event) -> None:
        self.wake.wait(self.config.worker.poll_interval)
        self.wake.clear()

    def run_job(self, job: Job) -> None:
        """Process one claimed job and report its outcome to the queue (never raises)."""
        with job_context(**_context(job)) as context:
            self._run_job(job, context)

    def _run_job(self, job: Job, context: dict[str, Any]) -> None:
        assert self.queue is not None
        started = time.monotonic()
        with _Heartbeat(self.queue, job.id, self.worker_id, self.config.queue.lease_seconds / 3):
            try:
                result = self.process(job.request, context)
            except LigoenvError as error:
                log.warning("job failed: %s", error, extra={"temporary": error.temporary})
                self.queue.fail(job.id, self.worker_id, str(error), error.temporary)
                _callback(job.request, "failure" if not error.temporary else "error", str(error))
                return
            except Exception as error:  # a bug must not kill the worker or lose the job
                log.exception("job crashed")
                self.queue.fail(job.id, self.worker_id, f"internal error: {error!r}", True)
                return
        result["seconds"] = round(time.monotonic() - started, 3)
        self.queue.complete(job.id, self.worker_id, result)
        log.info("job done", extra=_log_fields(result))
        _callback(job.request, "success", f"published {result.get('digest', '')}")

    def process(self, request: PublishRequest, context: dict[str, Any] | None = None) -> dict[str, Any]:
        """Publish (or untag) what `request` names; return the job's result."""
        context = context or {}
        registry = self.config.registry_by_host(request.registry)
        if registry is None:
            raise ConfigError(f"registry {request.registry} is not configured on this server")
        if request.action is Action.UNTAG:
            if not request.tag:
                raise ConfigError("an untag request needs a tag")
            moved = self.publisher.untag(request.registry, request.repository, request.tag,
                                         request.received_at, request.source)
            return {"action": "untag", "tag": request.tag, "changed": moved}
        with self._client_factory(registry) as client:
            return self._publish(client, request, context)

    def _publish(self, client: RegistryClient, request: PublishRequest,
                 context: dict[str, Any]) -> dict[str, Any]:
        ref = Reference(request.registry, request.repository, request.tag,
                        Digest.parse(request.digest) if request.digest else None)
        if ref.digest is None:
            ref = ref.with_digest(client.resolve(ref))  # Docker Hub events carry no digest
        top = client.fetch_manifest(ref)
        context["digest"] = str(top.digest)  # from here on, on every line of this job
        wanted = self.config.platforms_for(request.source)
        staged: list[StagedPlatform] = []
        staging_dirs: list[Path] = []
        try:
            for platform, manifest_digest in _platform_manifests(top, wanted, ref):
                staged.append(self._stage(client, ref, platform, manifest_digest, staging_dirs,
                                          context))
            image = StagedImage(
                registry=request.registry, repository=request.repository, tag=request.tag,
                top_digest=top.digest, top_media_type=top.media_type, platforms=tuple(staged),
                source=_history_source(request), when=request.received_at,
                index_platforms=_index_platforms(top))
            outcome = self.publisher.publish(image)
        finally:
            for staging in staging_dirs:  # what publish() moved into place is gone from here
                self.publisher.discard(staging)
        return _result(outcome)

    def _stage(self, client: RegistryClient, ref: Reference, platform: str, digest: Digest,
               staging_dirs: list[Path], context: dict[str, Any]) -> StagedPlatform:
        """Pull one platform's image into a staging directory, unless it is already published."""
        pinned = ref.with_digest(digest)
        fields = {"platform": platform, "manifest": str(digest)}
        if self.publisher.has_image(digest):
            manifest = client.fetch_manifest(pinned)
            assert isinstance(manifest, ImageManifest)
            log.info("already published: only the tag moves", extra=fields)
            return StagedPlatform(platform, digest, manifest_record(manifest, platform), None)
        staging = self.publisher.staging_dir()
        staging_dirs.append(staging)
        log.info("unpacking", extra=fields)
        tree = staging / "tree"
        pulled = pull(pinned, tree, cache=self.cache, client=client, options=self._options)
        complete_tree(tree, pulled.config)
        return StagedPlatform(platform, digest, manifest_record(pulled.manifest, platform), tree)


def _platform_manifests(top: ImageManifest | ImageIndex, wanted: tuple[Platform, ...],
                        ref: Reference) -> list[tuple[str, Digest]]:
    """(platform, manifest digest) to publish; the first is the one the tag link points at."""
    if isinstance(top, ImageManifest):
        # A single-platform image is published as what it is; its config says which platform.
        return [(str(wanted[0]) if wanted else "linux/amd64", top.digest)]
    chosen = []
    for platform in wanted:
        try:
            chosen.append((str(platform), top.select(platform).digest))
        except PlatformNotFound:
            log.info("platform not in index, skipped", extra={"platform": str(platform)})
    if not chosen:
        wanted_text = ", ".join(str(p) for p in wanted)
        available = ", ".join(str(p) for p in top.platforms())
        raise PlatformNotFound(f"{ref}: none of the configured platforms ({wanted_text}) is in "
                               f"index {top.digest.short}; available: {available or 'none'}")
    return chosen


def _index_platforms(top: ImageManifest | ImageIndex) -> dict[str, Digest]:
    if isinstance(top, ImageManifest):
        return {}
    return {str(d.platform): d.digest for d in top.manifests
            if d.platform is not None and d.platform.os not in ("", "unknown")}


def _history_source(request: PublishRequest) -> str:
    """How the tag's move was learned, for its history: `webhook:harbor/lab`, `cli`, ..."""
    if ":" not in request.source:
        return request.source
    kind, _, endpoint = request.source.partition(":")
    return f"webhook:{kind}/{endpoint}"


def _result(outcome: PublishOutcome) -> dict[str, Any]:
    return {
        "action": "publish",
        "digest": str(outcome.top_digest),
        "tag": outcome.tag,
        "tag_moved": outcome.tag_moved,
        "unpacked": [str(d) for d in outcome.new_images],
        "reused": [str(d) for d in outcome.reused_images],
        "paths": outcome.paths,
    }


def _log_fields(result: dict[str, Any]) -> dict[str, Any]:
    return {"digest": result.get("digest"), "tag_moved": result.get("tag_moved"),
            "unpacked": len(result.get("unpacked", [])), "seconds": result.get("seconds")}


def _context(job: Job) -> dict[str, Any]:
    request = job.request
    return {"job_id": job.id, "repository": request.repository, "tag": request.tag,
            "digest": request.digest, "registry": request.registry}


def _callback(request: PublishRequest, state: str, description: str) -> None:
    """Tell Docker Hub how publishing went (only to a callback URL the relay validated)."""
    if not request.callback_url:
        return
    from .relay.dockerhub import is_docker_hub_callback

    if not is_docker_hub_callback(request.callback_url):
        return
    import requests

    body = {"state": state, "description": description[:255], "context": "ligoenv"}
    try:
        requests.post(request.callback_url, json=body, timeout=10)
    except requests.RequestException as error:
        log.warning("Docker Hub callback failed: %s", type(error).__name__,
                    extra={"repository": request.repository})


class _Heartbeat:
    """Extends the job's lease in the background while the job runs."""

    def __init__(self, queue: JobSource, job_id: int, worker_id: str, interval: float) -> None:
        self._queue, self._job_id, self._worker_id = queue, job_id, worker_id
        self._interval = max(interval, 0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                if not self._queue.heartbeat(self._job_id, self._worker_id):
                    log.warning("lease lost: another worker may take this job",
                                extra={"job_id": self._job_id})
            except LigoenvError as error:
                log.warning("heartbeat failed: %s", error, extra={"job_id": self._job_id})


@dataclass(frozen=True)
class WorkerPool:
    """`concurrency` workers as threads of this process, sharing one queue and publisher."""

    workers: tuple[Worker, ...]

    def wake(self) -> None:
        for worker in self.workers:
            worker.wake.set()

    def _wake_on(self, stop: threading.Event) -> None:
        stop.wait()
        self.wake()  # idle workers see the stop at once

    def run(self, stop: threading.Event) -> list[threading.Thread]:
        threading.Thread(target=self._wake_on, args=(stop,), daemon=True).start()
        threads = [threading.Thread(target=w.run, args=(stop,), name=f"worker-{i}")
                   for i, w in enumerate(self.workers)]
        for thread in threads:
            thread.start()
        return threads


def staging_root(config: ServerConfig) -> Path:
    return config.state_dir / "staging"
