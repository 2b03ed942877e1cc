"""`ligoenv restore`: an archive's environments back into the local cache, or onto a registry.

Every blob is checked against its digest as it is read (a damaged or altered archive is
refused, naming the blob), and every locked environment must be complete in the archive
before anything is unpacked or pushed. Into the cache, this host's image is unpacked where
`ligoenv run --lock` finds it, so it runs with no registry at all; with `--to`, the exact
manifest bytes are pushed, so the digests a paper cites stay the same on the new registry.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ligoenv.client.archive import LOCKFILE_NAME, ClientFor
from ligoenv.client.archive_records import ArchiveRecords
from ligoenv.oci.atomicfile import write_atomic
from ligoenv.oci.cache import LayerCache
from ligoenv.oci.digest import Digest, VerifyingReader
from ligoenv.oci.errors import ArchiveError, LigoenvError, UsageError
from ligoenv.oci.layouttar import LayoutContents, file_sha256, read_layout_tar
from ligoenv.oci.manifest import ImageConfig, ImageIndex, ImageManifest, parse_config, parse_manifest
from ligoenv.oci.platform import Platform
from ligoenv.oci.reference import Reference
from ligoenv.oci.registry import RegistryClient
from ligoenv.oci.transport import FileSlice
from ligoenv.oci.workers import run_all
from ligoenv.store.lockfile import Environment, Lockfile, parse_lockfile

if TYPE_CHECKING:
    from ligoenv.store.provenance import Provenance

Note = Callable[[str], None]
PUSH_THREADS = 4


@dataclass(frozen=True)
class ArchivedImage:
    platform: str
    manifest: ImageManifest
    config: ImageConfig


@dataclass(frozen=True)
class RestoredEnvironment:
    name: str
    environment: Environment
    top: ImageManifest | ImageIndex
    images: tuple[ArchivedImage, ...]  # the locked platforms present in the archive
    tree: Path | None = None  # this host's unpacked copy, when restored into the cache
    pushed: str | None = None  # `registry/repository@digest`, when restored with --to


@dataclass(frozen=True)
class RestoreSummary:
    archive: Path
    sha256: Digest
    lockfile: Lockfile
    lockfile_text: bytes  # exactly as archived
    environments: tuple[RestoredEnvironment, ...]


class _CachedBlobs:
    """Blobs copied into the layer cache as the archive is read (for a restore into the cache)."""

    def __init__(self, cache: LayerCache) -> None:
        self.cache = cache

    def keep(self, digest: Digest, size: int, reader: VerifyingReader, _offset: int) -> None:
        self.cache.store(digest, size, reader)

    def read(self, digest: Digest) -> bytes:
        return self.cache.path_for(digest).read_bytes()


class _ArchivedBlobs:
    """Blobs left where they are in the archive file, read or uploaded from their offsets
    (for a restore to a registry: nothing is copied to disk on the way)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where: dict[Digest, FileSlice] = {}

    def keep(self, digest: Digest, size: int, _reader: VerifyingReader, offset: int) -> None:
        self.where[digest] = FileSlice(self.path, offset, size)  # verified as the reader drains

    def read(self, digest: Digest) -> bytes:
        piece = self.where[digest]
        with self.path.open("rb") as handle:
            handle.seek(piece.offset)
            return handle.read(piece.size)


Blobs = _CachedBlobs | _ArchivedBlobs


@contextlib.contextmanager
def _checksum_beside(path: Path) -> Iterator[Future[Digest]]:
    """The archive's own sha256, hashed on another thread while the restore reads and pushes."""
    if not path.is_file():
        raise ArchiveError(f"no archive at {path}")
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ligoenv-checksum") as pool:
        yield pool.submit(file_sha256, path)


def read_archive(path: Path, blobs: Blobs) -> tuple[LayoutContents, Lockfile, list[RestoredEnvironment]]:
    """Verify every blob of the archive into `blobs`; check that each environment is whole in it."""
    contents = read_layout_tar(path, blobs.keep)
    text = contents.files.get(LOCKFILE_NAME)
    if text is None:
        raise ArchiveError(f"{path} holds no {LOCKFILE_NAME}: it was not written by `ligoenv archive`")
    try:
        lockfile = parse_lockfile(json.loads(text), f"{path}:{LOCKFILE_NAME}")
    except ValueError as error:
        raise ArchiveError(f"{path}: {LOCKFILE_NAME} is not valid JSON ({error})") from None
    found = [_environment(path, contents, blobs, name, env)
             for name, env in sorted(lockfile.environments.items())]
    return contents, lockfile, found


def _environment(path: Path, contents: LayoutContents, blobs: Blobs, name: str,
                 env: Environment) -> RestoredEnvironment:
    top = parse_manifest(_blob(path, contents, blobs, env.digest, f"environment {name}"), env.digest)
    images = []
    for key, pin in sorted(env.platforms.items()):
        if isinstance(top, ImageIndex):
            if pin.manifest not in contents.blobs:
                continue  # narrowed with `archive --platform`: another platform's image
            if top.runnable_platforms().get(key) != pin.manifest:
                raise ArchiveError(f"{path}: environment {name} pins {key} to {pin.manifest.short}, "
                                   f"which is not its index's entry for {key}")
            manifest = parse_manifest(_blob(path, contents, blobs, pin.manifest, name), pin.manifest)
        else:
            manifest = top
        if not isinstance(manifest, ImageManifest):
            raise ArchiveError(f"{path}: {name}: an index inside an index is not supported")
        config = parse_config(_blob(path, contents, blobs, manifest.config.digest, name),
                              manifest.config.digest)
        for layer in manifest.layers:
            _require(path, contents, layer.digest, name)
        images.append(ArchivedImage(key, manifest, config))
    if not images:
        raise ArchiveError(f"{path}: environment {name} has none of its locked platforms in the archive")
    return RestoredEnvironment(name, env, top, tuple(images))


def _require(path: Path, contents: LayoutContents, digest: Digest, what: str) -> None:
    if digest not in contents.blobs:
        raise ArchiveError(f"{path} lacks blob {digest} of {what}: the archive is incomplete")


def _blob(path: Path, contents: LayoutContents, blobs: Blobs, digest: Digest, what: str) -> bytes:
    _require(path, contents, digest, what)
    raw = blobs.read(digest)
    digest.verify_bytes(raw, f"blob {digest.short}")
    return raw


def restore_to_cache(path: Path, cache_root: Path, *, platform: Platform, records: ArchiveRecords,
                     note: Note) -> RestoreSummary:
    """Load the archive into the cache and unpack this host's image of every environment."""
    from ligoenv.client.trees import cache_path, install_tree

    cache = LayerCache(cache_root / "layers")
    with _checksum_beside(path) as checksum:
        contents, lockfile, found = read_archive(path, _CachedBlobs(cache))
        sha256 = checksum.result()
    restored = []
    for item in found:
        image = next((i for i in item.images if platform.matches(Platform.parse(i.platform))), None)
        tree = None
        if image is None:
            note(f"{item.name}: no {platform} image in the archive "
                 f"(it has {', '.join(i.platform for i in item.images)}); its blobs are cached")
        else:
            tree = cache_path(cache_root, image.manifest.digest)
            if not tree.is_dir():
                install_tree(tree, functools.partial(_unpack, cache, image), _origin(item, image))
        _remember(records, item, path, sha256)
        restored.append(RestoredEnvironment(item.name, item.environment, item.top, item.images, tree))
    return RestoreSummary(path, sha256, lockfile, contents.files[LOCKFILE_NAME], tuple(restored))


def _origin(item: RestoredEnvironment, image: ArchivedImage) -> Provenance:
    """The restored tree names the registry digest it was locked at, as a pulled one does."""
    from ligoenv.store.provenance import Provenance

    env = item.environment
    ref = Reference(env.registry, env.repository, env.tag, env.digest)
    return Provenance.of(ref, image.manifest.digest, image.platform, datetime.now(UTC))


def _unpack(cache: LayerCache, image: ArchivedImage, staging: Path) -> ImageConfig:
    from ligoenv.oci.pull import unpack_cached

    unpack_cached(cache, image.manifest, image.config, staging)
    return image.config


def restore_to_registry(path: Path, target: str, *, client_for: ClientFor,
                        records: ArchiveRecords) -> RestoreSummary:
    """Push every environment under `target` (`REGISTRY[/PREFIX]`) with its original digests.

    Blobs go up four at a time straight from the archive file; manifests follow, children
    before the index that names them, and the tag last.
    """
    blobs = _ArchivedBlobs(path)
    with _checksum_beside(path) as checksum:
        contents, lockfile, found = read_archive(path, blobs)
        restored = [_push(item, target, client_for, blobs) for item in found]
        sha256 = checksum.result()
    for item in restored:
        _remember(records, item, path, sha256)
    return RestoreSummary(path, sha256, lockfile, contents.files[LOCKFILE_NAME], tuple(restored))


def _push(item: RestoredEnvironment, target: str, client_for: ClientFor,
          blobs: _ArchivedBlobs) -> RestoredEnvironment:
    destination = rehosted(target, item.environment)
    with client_for(destination) as client:
        _push_blobs(client, destination.repository, blobs, item)
        for image in item.images:
            if image.manifest is not item.top:
                client.push_manifest(destination.repository, str(image.manifest.digest),
                                     image.manifest.raw, image.manifest.media_type)
        client.push_manifest(destination.repository, str(item.top.digest), item.top.raw,
                             item.top.media_type)
        if destination.tag:
            client.push_manifest(destination.repository, destination.tag, item.top.raw,
                                 item.top.media_type)
    return RestoredEnvironment(item.name, item.environment, item.top, item.images,
                               pushed=f"{destination.name}@{item.top.digest}")


def _push_blobs(client: RegistryClient, repository: str, blobs: _ArchivedBlobs,
                item: RestoredEnvironment) -> None:
    wanted = {d.digest for image in item.images for d in (image.manifest.config, *image.manifest.layers)}
    run_all([functools.partial(client.push_blob, repository, blobs.where[digest], digest)
             for digest in sorted(wanted, key=str)], PUSH_THREADS, "ligoenv-restore")


def rehosted(target: str, env: Environment) -> Reference:
    """Where `--to REGISTRY[/PREFIX]` puts an environment: PREFIX/its repository, its tag."""
    host, _, prefix = target.strip().strip("/").partition("/")
    if not ("." in host or ":" in host or host == "localhost"):
        raise UsageError(f"--to {target!r}: start with a registry host, "
                         "e.g. registry.example.org[:PORT][/PREFIX]")
    text = "/".join(part for part in (host, prefix, env.repository) if part)
    try:
        ref = Reference.parse(text)
    except LigoenvError as error:
        raise UsageError(f"--to {target!r}: {error}") from None
    if ref.tag != "latest" or ref.digest is not None or ref.registry != host:
        raise UsageError(f"--to {target!r}: give REGISTRY[/PREFIX], without a tag or digest")
    return Reference(ref.registry, ref.repository, env.tag, None, text)


def _remember(records: ArchiveRecords, item: RestoredEnvironment, path: Path, sha256: Digest) -> None:
    records.remember(item.environment.digest, path, str(sha256), "restored",
                     [image.platform for image in item.images])


def write_restored_lockfile(summary: RestoreSummary, out: Path) -> bool:
    """Write the archive's lockfile to `out`; False when an identical one is already there."""
    archive_text = summary.lockfile_text
    if out.exists():
        if out.read_bytes() == archive_text:
            return False
        raise UsageError(f"{out} exists and differs from the archive's lockfile: "
                         "pass --lockfile PATH to write it elsewhere")
    write_atomic(out, archive_text.decode())
    return True
