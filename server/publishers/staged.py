"""What a publisher is given to publish (a staged image, each platform's tree) and what it answers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ligoenv.oci.digest import Digest
from ligoenv.oci.manifest import INDEX_TYPES
from ligoenv.store.completion import BIND_POINTS
from ligoenv.store.errors import PublishError
from ligoenv.store.index import DigestRecord

if TYPE_CHECKING:
    from ligoenv.oci.manifest import ImageConfig
    from ligoenv.store.provenance import Provenance


# applies one layer to a tree; returns the paths it made or changed (to seal)
Fill = Callable[[Path], set[str]]


@dataclass(frozen=True)
class StagedPlatform:
    """One platform's image: its manifest digest, its record and where it was unpacked."""

    platform: str  # "linux/amd64"
    digest: Digest  # the manifest digest: the image directory's name
    record: DigestRecord  # e.g. ligoenv.store.index.manifest_record(manifest, platform)
    tree: Path | None  # a completed tree in staging_dir(); None when has_image(digest) said so
    # or when `top_layer` is set: then the tree is made from the published layer chain `chain`
    # (an empty tree when None), with the image's top layer applied, completed for `config`
    # (publishers with `chains`)
    chain: Digest | None = None
    top_layer: Fill | None = None
    config: ImageConfig | None = None
    bind_points: tuple[str, ...] = BIND_POINTS  # what completing a clone of `chain` makes
    provenance: Provenance | None = None  # where the tree came from, written by completion
    sealed: bool = False  # `tree` is sealed already (made from `top_layer` on a sealed chain)


@dataclass(frozen=True)
class StagedImage:
    """Everything the worker hands to `publish()`. The tag link points at platforms[0]."""

    registry: str
    repository: str
    tag: str | None
    top_digest: Digest  # the index digest, or the manifest digest of a single-platform image
    top_media_type: str
    platforms: tuple[StagedPlatform, ...]
    source: str  # tag history: how we learned of it, e.g. "webhook:distribution/gitlab"
    when: datetime  # tag history: when the tag moved
    index_platforms: dict[str, Digest] = field(default_factory=dict)  # all in the index, if any

    def records(self, published: datetime, paths: dict[Digest, str]) -> list[DigestRecord]:
        """The index records to write: one per platform manifest plus the top-level index."""
        out = [replace(p.record, path=paths[p.digest], published=published)
               for p in self.platforms]
        if self.top_media_type in INDEX_TYPES:
            platforms = {**self.index_platforms, **{p.platform: p.digest for p in self.platforms}}
            out.append(DigestRecord(self.top_digest, self.top_media_type, platforms,
                                    published=published))
        return out

    def check(self) -> None:
        """Refuse, before anything is placed, what the index could not record."""
        if not self.platforms:
            raise PublishError(f"nothing to publish for {self.registry}/{self.repository}")
        for name in [p.platform for p in self.platforms] + list(self.index_platforms):
            if _canonical_platform(name) != name:
                raise PublishError(f"platform {name!r} is not in canonical form (os/arch as "
                                   "lowercase, e.g. linux/amd64): nothing was published")
        if self.top_media_type not in INDEX_TYPES and (
                len(self.platforms) != 1 or self.platforms[0].digest != self.top_digest):
            raise PublishError(f"{self.top_digest.short} is a single manifest: it must be its "
                               "own and only platform image")


@dataclass(frozen=True)
class PublishOutcome:
    top_digest: Digest
    tag: str | None
    tag_moved: bool  # False when the tag already pointed at this digest
    new_images: tuple[Digest, ...]  # trees published now
    reused_images: tuple[Digest, ...]  # trees that were already published
    paths: dict[str, str]  # platform -> path relative to the publish root
    index_path: Path  # the repository's index directory


def _canonical_platform(name: str) -> str | None:
    from ligoenv.oci.errors import InvalidReference
    from ligoenv.oci.platform import Platform

    try:
        return str(Platform.parse(name))
    except InvalidReference:
        return None

