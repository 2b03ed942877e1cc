"""What one publish request does: resolve, pull each platform by digest, complete, publish.

Idempotent: a manifest digest already published is never unpacked again (only tags move).
Stale or replayed events never move a tag back: the registry says what the tag means now.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ligoenv.oci.cache import LayerCache
from ligoenv.oci.digest import Digest
from ligoenv.oci.errors import LigoenvError, NotFound, PlatformNotFound
from ligoenv.oci.manifest import (
    ImageConfig,
    ImageIndex,
    ImageManifest,
    parse_config,
    platform_manifest,
)
from ligoenv.oci.platform import Platform
from ligoenv.oci.pull import fetch_config, pull
from ligoenv.oci.reference import Reference
from ligoenv.oci.registry import RegistryClient
from ligoenv.oci.unpack import UnpackOptions
from ligoenv.store.completion import complete_tree
from ligoenv.store.errors import ConfigError
from ligoenv.store.index import manifest_record
from ligoenv.store.provenance import Provenance

from . import metrics
from .chains import ChainedImage, build_chains, built_from
from .config import RegistryConfig, ServerConfig
from .jobs import Action, PublishRequest, source_name
from .publishers.base import Publisher
from .publishers.staged import Fill, PublishOutcome, StagedImage, StagedPlatform
from .registries import registry_client
from .tagevents import may_move_tag, registry_tag

log = logging.getLogger(__name__)
ClientFactory = Callable[[RegistryConfig], RegistryClient]
StillOurs = Callable[[], bool]


class LeaseLost(LigoenvError):
    """Another worker took the job (this one's lease expired): stop before publishing."""

    temporary = True


class RequestProcessor:
    """Turns a PublishRequest into a publication (or an untag) through `publisher`."""

    def __init__(self, config: ServerConfig, publisher: Publisher, *,
                 client_factory: ClientFactory = registry_client) -> None:
        self.config = config
        self.publisher = publisher
        self.cache = LayerCache(config.worker.cache_dir)
        self._client_factory = client_factory
        self._options = UnpackOptions(keep_setuid=config.publisher.keep_setuid,
                                      max_expanded_bytes=config.publisher.max_expanded_bytes,
                                      max_expansion_ratio=config.publisher.max_expansion_ratio)

    def process(self, request: PublishRequest, context: dict[str, Any] | None = None,
                still_ours: StillOurs = lambda: True) -> dict[str, Any]:
        """Publish (or untag) what `request` names; return the job's result. `context` gains
        the digest once known (it is the job's log context)."""
        context = {} if context is None else context
        registry = self.config.registry_by_host(request.registry)
        if registry is None:
            raise ConfigError(f"registry {request.registry} is not configured on this server")
        with self._client_factory(registry) as client:
            if request.action is Action.UNTAG:
                return self._untag(client, request)
            return self._publish(client, request, context, still_ours)

    def _untag(self, client: RegistryClient, request: PublishRequest) -> dict[str, Any]:
        if not request.tag:
            raise ConfigError("an untag request needs a tag")
        now = registry_tag(client, request)
        index = self.publisher.read_index(request.registry, request.repository)
        if not may_move_tag(request, None, now, index):
            return {"action": "untag", "tag": request.tag, "changed": False,
                    "stale_untag": str(now)}  # the tag was pushed again since
        changed = self.publisher.untag(request.registry, request.repository, request.tag,
                                       request.received_at, source_name(request.source))
        return {"action": "untag", "tag": request.tag, "changed": changed}

    def _publish(self, client: RegistryClient, request: PublishRequest, context: dict[str, Any],
                 still_ours: StillOurs) -> dict[str, Any]:
        ref = Reference(request.registry, request.repository, request.tag,
                        Digest.parse(request.digest) if request.digest else None)
        if ref.digest is None:
            ref = ref.with_digest(client.resolve(ref))  # Docker Hub events carry no digest
        try:
            top = client.fetch_manifest(ref)
        except NotFound:
            if request.digest is None:
                raise
            # A replayed push for a manifest deleted since: nothing to publish, nothing failed.
            log.warning("manifest %s is no longer in the registry: skipped", ref)
            return {"action": "publish", "digest": request.digest, "tag": request.tag,
                    "skipped": "the manifest was deleted upstream"}
        context["digest"] = str(top.digest)  # from here on, on every line of this job
        tag = self._tag_to_move(client, request, top.digest)
        wanted = tuple(Platform.parse(p) for p in request.platforms) or \
            self.config.platforms_for(request.source)
        bind_points = self.config.bind_points_for(request.source)
        staging_dirs: list[Path] = []
        try:
            staged = [self._stage(client, ref, top, platform, digest, staging_dirs, bind_points)
                      for platform, digest in _platform_manifests(top, wanted, ref)]
            if not still_ours():
                raise LeaseLost(f"job for {ref} was taken by another worker: not publishing")
            outcome = self.publisher.publish(StagedImage(
                registry=request.registry, repository=request.repository, tag=tag,
                top_digest=top.digest, top_media_type=top.media_type, platforms=tuple(staged),
                source=source_name(request.source), when=request.received_at,
                index_platforms=_index_platforms(top)))
        finally:
            for staging in staging_dirs:  # what publish() moved into place is gone from here
                self.publisher.discard(staging)
        return _result(outcome, stale_tag=request.tag if tag is None else None)

    def _tag_to_move(self, client: RegistryClient, request: PublishRequest,
                     digest: Digest) -> str | None:
        """The tag, unless the event is stale or replayed: the registry's tag has moved on and
        the index already holds that newer state (a late event is still placed in history)."""
        if not request.tag or request.digest is None:
            return request.tag  # the digest was just resolved from the tag itself
        now = registry_tag(client, request)
        index = self.publisher.read_index(request.registry, request.repository)
        return request.tag if may_move_tag(request, digest, now, index) else None

    def _stage(self, client: RegistryClient, ref: Reference, top: ImageManifest | ImageIndex,
               platform: Platform | None, digest: Digest, staging_dirs: list[Path],
               bind_points: tuple[str, ...]) -> StagedPlatform:
        """Pull one platform's image into a staging directory, unless it is already published.

        `platform` is None for a single-platform image: its config says what it is. A tree
        already published keeps the bind points it was made with.
        """
        pinned = ref.with_digest(digest)
        manifest = top if isinstance(top, ImageManifest) else \
            platform_manifest(client.fetch_manifest(pinned), top.digest, str(ref))
        if self.publisher.has_image(digest):
            return self._published(client, ref, manifest, platform)
        if self.publisher.chains and manifest.layers:
            config = fetch_config(client, ref, manifest)
            watch = metrics.Stopwatch()
            chained = build_chains(self.publisher, client, ref.repository, manifest, config,
                                   self.cache, self._options)
            name = str(platform or _platform_of(config))
            return StagedPlatform(name, digest, manifest_record(manifest, name, built_from(config)),
                                  None, chain=chained.base, top_layer=_counted(chained, watch),
                                  config=config, bind_points=bind_points,
                                  provenance=Provenance.of(ref, digest, name, datetime.now(UTC)))
        staging = self.publisher.staging_dir()
        staging_dirs.append(staging)
        tree = staging / "tree"
        log.info("unpacking", extra={"manifest": str(digest), "layers": len(manifest.layers)})
        watch = metrics.Stopwatch()
        pulled = pull(pinned, tree, cache=self.cache, client=client, options=self._options)
        metrics.unpacked(sum(layer.bytes_written for layer in pulled.layers), watch.seconds())
        name = str(platform or Platform.parse(str(pulled.platform)))  # configs say "Linux" too
        origin = Provenance.of(ref, digest, name, datetime.now(UTC))
        made = complete_tree(tree, pulled.config, bind_points=bind_points, provenance=origin)
        record = replace(manifest_record(pulled.manifest, name), bind_points=made)
        return StagedPlatform(name, digest, record, tree)

    def _published(self, client: RegistryClient, ref: Reference, manifest: ImageManifest,
                   platform: Platform | None) -> StagedPlatform:
        """An image already published: its record, with the chain it was cloned from if any."""
        chains: list[Digest] = []
        if self.publisher.chains or platform is None:
            config = parse_config(client.fetch_blob(ref.repository, manifest.config),
                                  manifest.config.digest)
            platform = platform or _platform_of(config)
            chains = built_from(config) if self.publisher.chains else []
            chains = chains if chains and self.publisher.has_chain(chains[-1]) else []
        name = str(platform)
        log.info("already published: only the tag moves", extra={"platform": name})
        return StagedPlatform(name, manifest.digest, manifest_record(manifest, name, chains), None)


def _counted(chained: ChainedImage, watch: metrics.Stopwatch) -> Fill:
    """`chained`'s top layer, counting the whole unpack once the publisher has applied it."""
    def apply(tree: Path) -> set[str]:
        changed = chained.top(tree)
        metrics.unpacked(chained.written, watch.seconds())
        return changed
    return apply


def _platform_of(config: ImageConfig) -> Platform:
    return Platform.parse(f"{config.os or 'linux'}/{config.architecture or 'amd64'}")


def _platform_manifests(top: ImageManifest | ImageIndex, wanted: tuple[Platform, ...],
                        ref: Reference) -> list[tuple[Platform | None, Digest]]:
    """(platform, manifest digest) to publish; the first is the one the tag link points at."""
    if isinstance(top, ImageManifest):
        return [(None, top.digest)]  # published as what it is, whatever was configured
    chosen: list[tuple[Platform | None, Digest]] = []
    for platform in wanted:
        try:
            chosen.append((platform, top.select(platform).digest))
        except PlatformNotFound:
            log.info("platform not in index, skipped", extra={"platform": str(platform)})
    if not chosen:
        wanted_text = ", ".join(str(p) for p in wanted)
        available = ", ".join(str(p) for p in top.platforms())
        raise PlatformNotFound(f"{ref}: none of the configured platforms ({wanted_text}) is in "
                               f"index {top.digest.short}; available: {available or 'none'}")
    return chosen


def _index_platforms(top: ImageManifest | ImageIndex) -> dict[str, Digest]:
    return {} if isinstance(top, ImageManifest) else top.runnable_platforms()


def _result(outcome: PublishOutcome, stale_tag: str | None) -> dict[str, Any]:
    result = {
        "action": "publish",
        "digest": str(outcome.top_digest),
        "tag": outcome.tag,
        "tag_moved": outcome.tag_moved,
        "unpacked": [str(d) for d in outcome.new_images],
        "reused": [str(d) for d in outcome.reused_images],
        "paths": outcome.paths,
    }
    if stale_tag:
        result["stale_tag"] = stale_tag  # the event was older than the tag's current digest
    return result
