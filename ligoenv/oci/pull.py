"""pull(): a reference to an unpacked, verified root filesystem (the core of `ligoenv pull` and the worker).

Resolve the manifest (choosing a platform from an index), fetch and check the config, download
the layers in parallel into the cache and, in order, apply each into a staging directory as it
arrives (ligoenv.oci.growing); the staging directory is renamed onto the target only when every
layer matched its diff_id.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from ligoenv.oci.cache import CorruptCacheEntry, LayerCache
from ligoenv.oci.digest import Digest, Readable
from ligoenv.oci.errors import PlatformNotFound, RegistryError, UsageError
from ligoenv.oci.growing import DownloadFailed, GrowingBlob
from ligoenv.oci.manifest import (
    Descriptor,
    ImageConfig,
    ImageManifest,
    layer_compression,
    parse_config,
    platform_manifest,
)
from ligoenv.oci.platform import Platform
from ligoenv.oci.reference import Reference
from ligoenv.oci.registry import RegistryClient, client_for
from ligoenv.oci.unpack import UnpackOptions, UnpackReport, apply_layer

__all__ = ["Downloads", "PulledImage", "ResolvedImage", "client_for", "pull", "resolve_image",
           "unpack_cached"]

log = logging.getLogger(__name__)

DOWNLOAD_THREADS = 4
Progress = Callable[[int, int], None]  # (bytes done, bytes total)


@dataclass(frozen=True)
class ResolvedImage:
    """The manifest half of a pull: what a reference names now, for one platform."""

    top_digest: Digest  # the index's digest for a multi-platform image, else the manifest's
    top_media_type: str
    manifest: ImageManifest
    platforms: dict[str, Digest] = field(default_factory=dict, hash=False)  # index entries only
    platform: Platform | None = None  # the index entry chosen; None for a single manifest


@dataclass(frozen=True)
class PulledImage:
    reference: Reference  # pinned to top_digest
    top_digest: Digest
    top_media_type: str
    manifest: ImageManifest
    config: ImageConfig
    platform: Platform
    platforms: dict[str, Digest] = field(default_factory=dict, hash=False)
    layers: tuple[UnpackReport, ...] = ()


def resolve_image(client: RegistryClient, ref: Reference, platform: Platform | None = None) -> ResolvedImage:
    """Fetch what `ref` names; from an index, the manifest for `platform` (default: this host's)."""
    top = client.fetch_manifest(ref)
    if isinstance(top, ImageManifest):
        return ResolvedImage(top.digest, top.media_type, top)
    chosen = top.select(platform or Platform.host())
    child = platform_manifest(client.fetch_manifest(ref.with_digest(chosen.digest)), top.digest,
                              ref.display())
    return ResolvedImage(top.digest, top.media_type, child, top.runnable_platforms(),
                         chosen.platform)


def pull(ref: Reference, target: Path, *, platform: Platform | None = None,
         cache: LayerCache | None = None, client: RegistryClient | None = None,
         options: UnpackOptions | None = None, progress: Progress | None = None) -> PulledImage:
    """Pull `ref` into the directory `target` (absent or empty); nothing appears there on failure.

    Without a cache, layers go to a temporary one beside the target that is removed afterwards.
    """
    target = Path(target)
    _check_target(target)
    own_client = client is None
    client = client or client_for(ref)
    try:
        resolved = resolve_image(client, ref, platform)
        config = fetch_config(client, ref, resolved.manifest)
        _check_platform(ref, config, platform, resolved)
        with _cache_or_temporary(cache, target.parent) as layer_cache:
            reports = _download_and_unpack(client, ref.repository, resolved.manifest.layers,
                                           config.diff_ids, layer_cache, target,
                                           options or UnpackOptions(), progress)
    finally:
        if own_client:
            client.close()
    chosen = resolved.platform or Platform(config.os, config.architecture)
    return PulledImage(ref.with_digest(resolved.top_digest), resolved.top_digest,
                       resolved.top_media_type, resolved.manifest, config, chosen,
                       dict(resolved.platforms), tuple(reports))


def unpack_cached(cache: LayerCache, manifest: ImageManifest, config: ImageConfig, target: Path,
                  options: UnpackOptions | None = None) -> list[UnpackReport]:
    """Unpack an image whose layers are all in `cache` (a restored archive): no registry involved.

    The same checks as `pull`: every layer against its digest and diff_id, nothing at `target`
    unless all of them matched.
    """
    _check_target(target)
    if len(config.diff_ids) != len(manifest.layers):
        raise RegistryError(f"image {manifest.digest.short} is malformed: its config lists "
                            f"{len(config.diff_ids)} diff_ids for {len(manifest.layers)} layers")
    return _unpack(cache, manifest.layers, config.diff_ids, target, options or UnpackOptions())


def _check_target(target: Path) -> None:
    if target.is_symlink() or (target.exists() and (not target.is_dir() or any(target.iterdir()))):
        raise UsageError(f"{target} already exists and is not an empty directory: choose a new path")
    target.parent.mkdir(parents=True, exist_ok=True)


def fetch_config(client: RegistryClient, ref: Reference, manifest: ImageManifest) -> ImageConfig:
    """The image's config, checked: one diff_id per layer, every layer of a known media type."""
    config = parse_config(client.fetch_blob(ref.repository, manifest.config), manifest.config.digest)
    if len(config.diff_ids) != len(manifest.layers):
        raise RegistryError(f"{ref.display()}: image {manifest.digest.short} is malformed: its config "
                            f"lists {len(config.diff_ids)} diff_ids for {len(manifest.layers)} layers")
    for layer in manifest.layers:
        layer_compression(layer.media_type)  # refuse unknown layer types before downloading
    return config


def _check_platform(ref: Reference, config: ImageConfig, wanted: Platform | None,
                    resolved: ResolvedImage) -> None:
    if wanted is None or resolved.platform is not None:
        return
    if (wanted.os, wanted.architecture) != (config.os, config.architecture):
        raise PlatformNotFound(f"{ref.display()} is a single-platform image for "
                               f"{config.os}/{config.architecture}; {wanted} was requested")


@contextlib.contextmanager
def _cache_or_temporary(cache: LayerCache | None, parent: Path) -> Iterator[LayerCache]:
    if cache is not None:
        yield cache
        return
    with tempfile.TemporaryDirectory(dir=parent, prefix=".ligoenv-layers-") as scratch:
        yield LayerCache(Path(scratch))


class _Counter:
    """Adds up downloaded bytes from several threads and reports (done, total)."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.done, self.total, self._progress = 0, total, progress
        self._lock = threading.Lock()

    def add(self, count: int) -> None:
        if self._progress is None:
            return
        with self._lock:
            self.done += count
            self._progress(self.done, self.total)


def _download_and_unpack(client: RegistryClient, repository: str, layers: Sequence[Descriptor],
                         diff_ids: Sequence[Digest], cache: LayerCache, target: Path,
                         options: UnpackOptions, progress: Progress | None) -> list[UnpackReport]:
    """Download what the cache lacks and apply each layer as it arrives, while the later ones
    download; all over again if a cached blob turns out corrupt (the cache has dropped it by
    then)."""
    def attempt() -> list[UnpackReport]:
        with Downloads(client, repository, layers, cache, progress) as downloads:
            return _unpack(cache, layers, diff_ids, target, options, downloads.open)
    try:
        return attempt()
    except CorruptCacheEntry as corrupt:
        log.warning("%s: downloading it again", corrupt)
    return attempt()


class Downloads:
    """The layers the cache lacks, downloading in parallel in the background, so that a caller
    can apply one layer while it and the next ones arrive: `open(layer)` reads it as it
    downloads (or from the cache), `wait(layer)` returns once it is in the cache. The first
    failure stops the others. Leaving the context waits for all of them, or, on an error
    (Ctrl-C included), stops those still running."""

    def __init__(self, client: RegistryClient, repository: str, layers: Sequence[Descriptor],
                 cache: LayerCache, progress: Progress | None = None) -> None:
        unique = list({layer.digest: layer for layer in layers}.values())
        counter = _Counter(sum(layer.size for layer in unique), progress)
        counter.add(sum(layer.size for layer in unique if cache.has(layer)))
        missing = [layer for layer in unique if not cache.has(layer)]
        self._cache = cache
        self._cancel = threading.Event()
        self._growing = {layer.digest: GrowingBlob() for layer in missing}
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(DOWNLOAD_THREADS, len(missing))),
                                        thread_name_prefix="ligoenv-pull")
        self._futures = {layer.digest: self._pool.submit(self._download, client, repository, layer,
                                                         counter.add)
                         for layer in missing}  # in layer order: the first one is needed first

    def __enter__(self) -> Downloads:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        try:
            if kind is None:
                self.wait_all()
        finally:
            self._stop()
            for growing in self._growing.values():
                growing.close()

    @contextlib.contextmanager
    def open(self, layer: Descriptor) -> Iterator[Readable]:
        """`layer`'s blob to read to its end: followed as it downloads, or from the cache. Either
        way what is read is checked against its digest before its end is reached."""
        growing = self._growing.get(layer.digest)
        reader = growing.follow() if growing is not None else None
        if reader is None:  # cached already, or downloaded before anyone followed it
            self.wait(layer)
            with self._cache.open(layer) as blob:
                yield blob
            return
        try:
            yield reader
        except DownloadFailed:
            self._raise_failure()
            raise

    def wait(self, layer: Descriptor) -> None:
        """Return once `layer` is in the cache; raise what its download raised, or what another
        download raised meanwhile (the image cannot be had without it)."""
        wanted = self._futures.get(layer.digest)
        if wanted is None:
            return
        for future in as_completed(self._futures.values()):
            self._result(future)
            if future is wanted:
                return

    def wait_all(self) -> None:
        for future in as_completed(self._futures.values()):
            self._result(future)

    def _download(self, client: RegistryClient, repository: str, layer: Descriptor,
                  progress: Callable[[int], None]) -> Path:
        growing = self._growing[layer.digest]
        try:
            path = self._cache.ensure(client, repository, layer, progress, self._cancel, growing)
        except BaseException:
            self._abandon()  # whoever follows another layer stops too: the image is lost
            raise
        growing.finished(ok=True)
        return path

    def _raise_failure(self) -> None:
        """Raise what the failed download raised (a follower only knows that one failed)."""
        for future in as_completed(self._futures.values()):
            if not future.cancelled():
                self._result(future)

    def _result(self, future: Future[Path]) -> None:
        try:
            future.result()
        except BaseException:  # the first failure, or Ctrl-C: the other downloads are moot
            self._stop()
            raise

    def _abandon(self) -> None:
        for growing in self._growing.values():
            growing.finished(ok=False)  # no-op for those that have finished

    def _stop(self) -> None:
        self._cancel.set()  # running ones stop before their next chunk, and close their responses
        self._pool.shutdown(cancel_futures=True)
        self._abandon()  # the cancelled ones will never report


def _unpack(cache: LayerCache, layers: Sequence[Descriptor], diff_ids: Sequence[Digest],
            target: Path, options: UnpackOptions,
            source: Callable[[Descriptor], AbstractContextManager[Readable]] | None = None
            ) -> list[UnpackReport]:
    """Apply `layers` in order, each read from `source` (default: the cache), into a staging
    directory renamed onto `target` when all of them matched their diff_ids."""
    source = source or cache.open
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    try:
        staging.chmod(0o755)
        reports: list[UnpackReport] = []
        for layer, diff_id in zip(layers, diff_ids, strict=True):
            # Read through the digest check: a cached blob changed since its download must say
            # so (and leave the cache) instead of being blamed on the image as a bad archive.
            with source(layer) as blob:
                reports.append(apply_layer(blob, layer_compression(layer.media_type), staging, options,
                                           diff_id, expanded_before=sum(r.expanded_bytes for r in reports),
                                           compressed_size=layer.size))
        os.rename(staging, target)  # replaces an empty target directory atomically
    except BaseException:
        remove_tree(staging)
        raise
    return reports


def remove_tree(path: Path) -> None:
    """Remove a tree even where a layer made directories read-only or unreadable; none is fine."""
    try:
        path.chmod(stat.S_IRWXU)
    except FileNotFoundError:
        return
    # Top-down walk: each directory is opened up before the walk descends into it.
    for root, dirs, _files in os.walk(path):
        for name in dirs:
            child = os.path.join(root, name)
            if not os.path.islink(child):
                os.chmod(child, stat.S_IRWXU)
    shutil.rmtree(path)
