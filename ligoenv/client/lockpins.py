"""A lockfile environment's platform pins, checked against the image its top digest names.

A lockfile cites one top digest, and `run` uses the manifest pinned for a platform: each pin
must therefore be that index's own entry, or a hand-edited lockfile could cite one build and run
another. The index's entries come from the publish index, else the verified copy in the cache,
else the registry by digest (that copy is then kept in the cache, so the next run needs no
network).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ligoenv.oci.digest import Digest
from ligoenv.oci.errors import DigestMismatch
from ligoenv.oci.manifest import MANIFEST_TYPES, ImageIndex, ImageManifest
from ligoenv.store.errors import LockfileError
from ligoenv.store.lockfile import Environment

if TYPE_CHECKING:
    from ligoenv.client.resolve import Resolver

Entries = Callable[[str], Digest | None]


def check_pins(name: str, env: Environment, resolver: Resolver, cache: Path) -> None:
    """LockfileError unless every platform pin of `env` is its top digest's entry for that platform."""
    entry = _entries(env, resolver, cache)
    for key, pin in sorted(env.platforms.items()):
        expected = entry(key)
        if expected != pin.manifest:
            raise LockfileError(
                f"environment {name} pins {key} to {pin.manifest}, which is not the entry of "
                f"{env.pinned().pinned_str()} for {key} ({expected or 'it has none'}): "
                "the lockfile was altered; re-lock it with `ligoenv lock`")


def _entries(env: Environment, resolver: Resolver, cache: Path) -> Entries:
    if env.media_type in MANIFEST_TYPES:
        return lambda _: env.digest  # one image: it is its own entry for its platform
    published = _published(env, resolver)
    if published is not None and all(key in published for key in env.platforms):
        return published.get
    top = _top(env, resolver, cache)
    if not isinstance(top, ImageIndex):
        return lambda _: env.digest
    return top.runnable_platforms().get


def _published(env: Environment, resolver: Resolver) -> Mapping[str, Digest] | None:
    repo = resolver.repository_index(env.pinned())
    record = resolver.ask_index(lambda: repo.record(env.digest), None) if repo is not None else None
    return record.platforms if record is not None and record.platforms else None


def _top(env: Environment, resolver: Resolver, cache: Path) -> ImageIndex | ImageManifest:
    from ligoenv.oci.cache import LayerCache
    from ligoenv.oci.digest import VerifyingReader
    from ligoenv.oci.manifest import parse_manifest

    blobs = LayerCache(cache / "layers")
    try:
        raw = blobs.path_for(env.digest).read_bytes()
        env.digest.verify_bytes(raw)
        return parse_manifest(raw, env.digest)
    except (FileNotFoundError, DigestMismatch):
        pass  # not cached, or altered since: the registry's copy is checked instead
    pinned = env.pinned().with_tag(None)
    with resolver.client(pinned) as client:
        top = client.fetch_manifest(pinned)  # its bytes hash to the digest
    what = f"manifest {env.digest.short}"
    size = len(top.raw)
    blobs.store(env.digest, size, VerifyingReader(io.BytesIO(top.raw), env.digest, size, what))
    return top
