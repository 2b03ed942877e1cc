"""Is an image published yet? The check behind `ligoenv wait` and the read API's `/v1/status`.

Published means: the index names the digest (and, for a tag, as the tag's current digest), the
platform's tree is there, and the tag's link already resolves to that tree. Publishers write
the link last, so a tree found this way is complete.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ligoenv.oci.digest import Digest
from ligoenv.oci.platform import Platform
from ligoenv.oci.reference import Reference
from ligoenv.store.index import RepositoryView
from ligoenv.store.publishroot import PublishRoot


@dataclass(frozen=True)
class Publication:
    published: bool
    path: str | None  # the platform's tree, relative to the publish root, once indexed
    current: Digest | None  # what the tag points at in the index now (None without a tag)


def publication(layout: PublishRoot, index: RepositoryView | None, ref: Reference,
                platform: Platform | None = None) -> Publication:
    """Where `ref` (pinned to a digest) stands in the publish root `layout`."""
    assert ref.digest is not None
    current = index.current(ref.tag) if index is not None and ref.tag else None
    indexed = index is not None and index.record(ref.digest) is not None
    if index is None or not indexed or (ref.tag is not None and current != ref.digest):
        return Publication(False, None, current)
    relative = index.path_of(ref.digest, platform)
    if relative is None or not _is_tree(layout, relative):
        return Publication(False, relative, current)
    if ref.tag is not None and not _tag_link_reaches(layout, ref, relative):
        return Publication(False, relative, current)
    return Publication(True, relative, current)


def _is_tree(layout: PublishRoot, relative: str) -> bool:
    if not relative.startswith(".images/") or ".." in relative.split("/"):
        return False
    return (layout.root / relative).is_dir()


def _tag_link_reaches(layout: PublishRoot, ref: Reference, relative: str) -> bool:
    """The tag link resolves to the tree; both layouts are tried, as a client cannot know which."""
    assert ref.tag is not None
    tree = os.path.realpath(layout.root / relative)
    for names in (PublishRoot(layout.root, True), PublishRoot(layout.root, False)):
        link = names.tag_link(ref.registry, ref.repository, ref.tag)
        if os.path.realpath(link) == tree:
            return True
    return False
