"""Unpacked trees on this machine: a published one (publish root, CVMFS) or a copy in the user cache.

A cached tree appears under `<cache>/images/<hex>` (hex of the platform's manifest digest) only
once it is complete: pulled, verified and completed for Apptainer/bwrap in a staging directory,
then renamed into place.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ligoenv.oci.digest import Digest
from ligoenv.oci.errors import PlatformNotFound, UsageError
from ligoenv.oci.platform import Platform

if TYPE_CHECKING:
    from ligoenv.client.resolve import Resolution, Resolver
    from ligoenv.oci.manifest import ImageConfig
    from ligoenv.store.provenance import Provenance

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class LocalTree:
    path: Path
    manifest: Digest  # the platform's manifest digest
    platform: str
    published: bool  # on a publish root or CVMFS: never modified by the client
    pulled: bool = False  # downloaded just now


def published_tree(resolver: Resolver, answer: Resolution, platform: Platform) -> LocalTree | None:
    """The published tree of `answer` for `platform`, as the configured index gives it.

    Only the index is trusted with paths: a lockfile's `paths` could name any directory (one
    merely named like the digest), so they are left for `cite` and never run.
    """
    reader = resolver.index
    if reader is None:
        return None
    try:
        key, manifest = answer.platform_digest(platform)
    except PlatformNotFound:
        return None
    ref = answer.reference
    path = reader.manifest_path(ref.registry, ref.repository, manifest)
    return LocalTree(path, manifest, key, published=True) if path is not None else None


def cache_path(cache: Path, manifest: Digest) -> Path:
    return cache / "images" / manifest.hex


def cached_tree(resolver: Resolver, answer: Resolution, platform: Platform, cache: Path,
                progress: Progress | None = None) -> LocalTree:
    """The cached copy for `platform`, pulling it first when it is not there yet."""
    if not answer.platforms:
        answer = resolver.from_registry(answer.reference, platform)
    key, manifest = answer.platform_digest(platform)
    target = cache_path(cache, manifest)
    if target.is_dir():
        return LocalTree(target, manifest, key, published=False)
    pull_tree(resolver, answer, Platform.parse(key), manifest, target, cache, progress)
    return LocalTree(target, manifest, key, published=False, pulled=True)


def pull_tree(resolver: Resolver, answer: Resolution, platform: Platform, manifest: Digest,
              target: Path, cache: Path, progress: Progress | None = None) -> None:
    """Pull the platform's manifest into `target`, complete it, and only then make it appear."""
    from ligoenv.oci.cache import LayerCache
    from ligoenv.oci.pull import pull
    from ligoenv.store.provenance import Provenance

    ref = answer.reference.with_digest(manifest)

    def fill(staging: Path) -> ImageConfig:
        with resolver.client(ref) as client:
            return pull(ref, staging, platform=platform, cache=LayerCache(cache / "layers"),
                        client=client, progress=progress).config

    origin = Provenance.of(answer.reference, manifest, str(platform), datetime.now(UTC))
    install_tree(target, fill, origin)


def install_tree(target: Path, fill: Callable[[Path], ImageConfig],
                 provenance: Provenance | None = None) -> None:
    """Have `fill` unpack an image into a staging directory, complete it for Apptainer and bwrap,
    and only then rename it onto `target`: a cached tree is whole or absent."""
    from ligoenv.store.completion import complete_tree

    if os.path.lexists(target) and not _empty_dir(target):
        raise UsageError(f"{target} already exists and is not an empty directory: choose a new one")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.pull-{secrets.token_hex(4)}"
    try:
        config = fill(staging)
        complete_tree(staging, config, provenance=provenance)
        try:
            os.rename(staging, target)
        except OSError as error:
            # Another process may have finished the same pull first: theirs is as good as ours.
            if not target.is_dir():
                raise UsageError(f"cannot create {target}: {error.strerror}") from None
    finally:
        if staging.exists():
            _remove(staging)


def _empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def _remove(path: Path) -> None:
    from ligoenv.oci.pull import remove_tree

    remove_tree(path)
