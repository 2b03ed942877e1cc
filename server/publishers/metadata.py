"""The metadata of a publication planned before anything is written: index change, digest links, tag link.

Every publisher writes a plan in the same order (platform links, digest links, index, tag link),
so that a reader never finds a tag pointing at something the index does not know."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ligoenv.store.errors import PublishError
from ligoenv.store.index import RepositoryView, paths
from ligoenv.store.index.writer import IndexChange, IndexWriter
from ligoenv.store.multiarch import PlatformLinks, plan_platform_links
from ligoenv.store.publishroot import PublishRoot, remove_symlink, replace_symlink

from .staged import StagedImage

if TYPE_CHECKING:
    pass


@dataclass
class MetadataPlan:
    """What an index update and tag move will change; empty when the image is already there."""

    index_path: Path  # the repository's index directory
    index: IndexChange
    digest_links: list[tuple[Path, str]]  # only the links that must change
    tag_link: tuple[Path, str] | None
    remove_tag_link: Path | None = None
    # .multiarch/<os>-<arch>/... links of the tag, written with it (just before it).
    platform_links: PlatformLinks = field(default_factory=PlatformLinks)

    @property
    def index_changed(self) -> bool:
        return self.index.changed

    @property
    def tag_moved(self) -> bool:
        return self.index.tag_changed

    @property
    def links(self) -> list[tuple[Path, str]]:
        return self.digest_links + ([self.tag_link] if self.tag_link else [])

    @property
    def empty(self) -> bool:
        return not (self.index_changed or self.links or self.remove_tag_link) and \
            self.platform_links.empty

    def write_platform_links(self) -> None:
        self.platform_links.write()

    def write_digest_links(self) -> None:
        for link, target in self.digest_links:
            replace_symlink(link, target)

    def write_index(self) -> None:
        self.index.apply()

    def write_tag_link(self) -> None:
        if self.tag_link is not None:
            replace_symlink(*self.tag_link)
        if self.remove_tag_link is not None:
            remove_symlink(self.remove_tag_link)


def plan_publish(layout: PublishRoot, image: StagedImage, published: datetime) -> MetadataPlan:
    """Plan the index records, digest links and tag link for `image` against what is there."""
    writer = IndexWriter(layout.root)
    paths_of = {p.digest: layout.relative_image_path(p.digest) for p in image.platforms}
    records = image.records(published, paths_of)
    change = writer.plan_publish(image.registry, image.repository, records, image.tag,
                                 image.top_digest, image.when, image.source)
    default = image.platforms[0].digest
    wanted = [(layout.digest_link(image.registry, image.repository, image.top_digest), default)]
    wanted += [(layout.digest_link(image.registry, image.repository, p.digest), p.digest)
               for p in image.platforms if p.digest != image.top_digest]
    tag_link = None
    platform_links = PlatformLinks()
    if image.tag:
        # The links follow the tag's *current* digest, which a late event may not have changed.
        after = change.view(writer.stored(image.registry, image.repository))
        tag_link = _tag_link(layout, after, image.tag, image.platforms[0].platform)
        platform_links = plan_platform_links(layout, after, image.tag)
    return MetadataPlan(layout.root / paths.repository_dir(image.registry, image.repository),
                        change,
                        _changed([(link, layout.link_target(link, d)) for link, d in wanted]),
                        tag_link if tag_link and _changed([tag_link]) else None,
                        platform_links=platform_links)


def plan_untag(layout: PublishRoot, registry: str, repository: str, tag: str, when: datetime,
               source: str) -> MetadataPlan:
    writer = IndexWriter(layout.root)
    change = writer.plan_untag(registry, repository, tag, when, source)
    link = layout.tag_link(registry, repository, tag)
    # Links are only ours to change if no other registry owns them (osg layout: same names).
    if foreign_tag_owner(layout, registry, repository, tag) is not None:
        return MetadataPlan(layout.root / paths.repository_dir(registry, repository), change, [],
                            None, None, PlatformLinks())
    # The link goes only if the tag is gone now: a late untag must not hide a newer push.
    remove = link if change.current is None and link.is_symlink() else None
    return MetadataPlan(layout.root / paths.repository_dir(registry, repository), change, [],
                        None, remove,
                        plan_platform_links(layout, change.view(writer.stored(registry, repository)),
                                            tag))


def foreign_tag_owner(layout: PublishRoot, registry: str, repository: str,
                      tag: str) -> str | None:
    """In the osg layout, where link names lack the registry: the other registry whose index
    holds `repository:tag` now, which owns the link `repository:tag`. None in the registry layout."""
    if layout.include_registry:
        return None
    reader = IndexWriter(layout.root)
    for other in _index_registries(layout.root):
        if other == registry:
            continue
        try:
            if reader.stored(other, repository).current(tag) is not None:
                return other
        except PublishError:  # not a registry's directory
            continue
    return None


def _index_registries(root: Path) -> list[str]:
    """The registries with an index under `root`, in either version."""
    names: set[str] = set()
    for base in (root / paths.INDEX_DIR, root / paths.V2_DIR):
        if base.is_dir():
            names |= {p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("_")}
    return sorted(names)


def _tag_link(layout: PublishRoot, index: RepositoryView, tag: str,
              platform: str) -> tuple[Path, str] | None:
    """The tag link for the tag's current digest in `index`."""
    current = index.current(tag)
    if current is None:
        return None
    path = index.path_of(current, platform)
    if path is None:
        return None
    link = layout.tag_link(index.registry, index.repository, tag)
    return link, os.path.relpath(layout.root / path, link.parent)


def _changed(links: list[tuple[Path, str]]) -> list[tuple[Path, str]]:
    return [(link, target) for link, target in links
            if not (link.is_symlink() and os.readlink(link) == target)]
