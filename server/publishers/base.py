"""What a publisher does for the worker: the abstract Publisher, and the lock it shares with GC.

The worker unpacks each platform image into `staging_dir()`, completes it, then calls
`publish()`, which makes the images, the index update and the tag move visible, or nothing.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ligoenv.oci.atomicfile import fsync_dir
from ligoenv.oci.digest import Digest
from ligoenv.store.errors import PublishError
from ligoenv.store.index import paths
from ligoenv.store.index.reader import StoredRepository
from ligoenv.store.index.writer import IndexWriter
from ligoenv.store.publishroot import PublishRoot

from .metadata import foreign_tag_owner
from .staged import Fill, PublishOutcome, StagedImage
from .staging import StagingArea

if TYPE_CHECKING:
    pass

TRASH_DIR = ".ligoenv/trash"  # trees garbage collection took out, deleted after the run
TREES_LOCK = ".ligoenv/locks/trees.lock"


def _at_hand() -> None:
    pass


class ChainStep(NamedTuple):
    """A chain to add: its ChainID and how to fill its tree. `arrived` returns once the layer
    `fill` applies is at hand (downloaded), for a publisher that must not wait while it holds
    a lock or a transaction; `fill` waits for it as well."""

    chain: Digest
    fill: Fill
    arrived: Callable[[], None] = _at_hand


class Publisher(abc.ABC):
    """Puts unpacked images, their index entries and tag links into a publish root."""

    name: str
    layout: PublishRoot
    staging: StagingArea  # on the file system the images are moved from
    keep_ownership: bool = False  # seal_tree: keep the image's file owners (root-run sites)
    chains: bool = False  # images are clones of layer chain trees (`add_chains`)

    def staging_dir(self) -> Path:
        """A new empty directory to unpack into (locked while this process lives)."""
        return self.staging.new()

    def discard(self, staging: Path) -> None:
        """Remove a staging directory the worker will not publish (e.g. the pull failed)."""
        self.staging.discard(staging)

    def has_image(self, digest: Digest) -> bool:
        """True when the image of manifest `digest` is published: skip unpacking it again."""
        return self.layout.image_dir(digest).is_dir()

    def check(self, image: StagedImage) -> None:
        """What publish() checks before it places anything."""
        image.check()
        if image.tag:
            owner = foreign_tag_owner(self.layout, image.registry, image.repository, image.tag)
            if owner is not None:
                raise PublishError(
                    f"{image.repository}:{image.tag} is published from {owner}: in the osg layout, "
                    f"links do not name the registry, so {image.registry} may not replace it "
                    "(publish each repository from one registry only)")

    def has_chain(self, chain: Digest) -> bool:
        """True when the tree of layer chain `chain` (an OCI ChainID) is published."""
        return self.layout.chain_dir(chain).is_dir()

    def add_chains(self, parent: Digest | None, steps: list[ChainStep]) -> None:
        """Publish a chain tree per step, each a clone of the one before (the first of
        `parent`'s tree, or empty) filled by its step. Each appears whole or not at all."""
        raise PublishError(f"the {self.name} publisher does not publish layer chains")

    @abc.abstractmethod
    def publish(self, image: StagedImage) -> PublishOutcome:
        """Publish the images, update the index, move the tag. Consumes the staged trees."""

    @abc.abstractmethod
    def untag(self, registry: str, repository: str, tag: str, when: datetime,
              source: str) -> bool:
        """Record that the tag was deleted upstream and remove its link; images are kept."""

    @abc.abstractmethod
    def exclusive(self) -> AbstractContextManager[None]:
        """While no other publisher writes to the root: for converting its index. Refuses
        (PublishError) when one is at work, rather than waiting for it."""

    def read_index(self, registry: str, repository: str) -> StoredRepository:
        return IndexWriter(self.layout.root).stored(registry, repository)

    def index_dir(self, registry: str, repository: str) -> Path:
        """The repository's index directory (what a CVMFS lease for its index covers)."""
        return self.layout.root / paths.repository_dir(registry, repository)

    # -- root-wide changes: garbage collection and pins --------------------------------------

    def hold_publishes(self) -> contextlib.AbstractContextManager[None]:
        """Hold off every publish and untag meanwhile (they wait), so that a tree a publish is
        reusing is never collected under it."""
        return tree_lock(self.layout.root, exclusive=True)

    def root_change(self) -> contextlib.AbstractContextManager[None]:
        """Changes made inside are published together; a directory shows each as it is made
        (garbage collection orders its steps so that every moment is consistent)."""
        return contextlib.nullcontext()

    def remove_tree(self, relative: str) -> None:
        """Take the tree at `relative` out of the root at once: renamed into the trash, which
        `empty_trash()` deletes (an interrupted delete never shows a partial tree)."""
        source = self.layout.root / relative
        if not source.is_dir():
            return
        trash = self.layout.root / TRASH_DIR
        trash.mkdir(parents=True, exist_ok=True)
        os.rename(source, trash / f"{source.name}-{secrets.token_hex(4)}")
        fsync_dir(source.parent)
        fsync_dir(trash)

    def empty_trash(self) -> None:
        from ligoenv.oci.pull import remove_tree  # opens up directories an image made read-only

        trash = self.layout.root / TRASH_DIR
        for entry in sorted(trash.iterdir()) if trash.is_dir() else []:
            remove_tree(entry)


@contextlib.contextmanager
def tree_lock(root: Path, *, exclusive: bool) -> Iterator[None]:
    """Publishes and untags hold this lock shared; garbage collection holds it exclusive."""
    path = root / TREES_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


