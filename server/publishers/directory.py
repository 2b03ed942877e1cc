"""Publish into a plain directory: stage, sync, rename into place, then index and tag link.

The order makes every crash safe: a tree appears in `.images/` (or a layer chain's in
`.chains/`) only by an atomic rename of a complete, synced tree; the index names a tree only
after it is in place; the tag link moves last. Concurrent workers serialise their index updates
with a lock per repository. Chain and image trees are hard-link (or reflink) clones of the chain
below them, so a published tree is never modified afterwards.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ligoenv.oci.atomicfile import fsync_dir
from ligoenv.oci.digest import Digest
from ligoenv.store.completion import complete_tree, completion_paths
from ligoenv.store.errors import PublishError
from ligoenv.store.index import paths
from ligoenv.store.publishroot import PublishRoot

from .base import ChainStep, Publisher, tree_lock
from .clone import clone_method, clone_tree
from .metadata import plan_publish, plan_untag
from .seal import seal_paths, seal_tree
from .staged import PublishOutcome, StagedImage, StagedPlatform
from .staging import StagingArea

Step = Callable[[str], None]


class DirectoryPublisher(Publisher):
    """`root` is the publish root; staging lives in `root/.ligoenv/staging` (same file system).

    `on_step` is called after each durable step ("synced", "images", "digest-links", "index",
    "tag-link"), for progress logs and for tests that simulate a crash between steps.
    """

    name = "directory"

    def __init__(self, root: Path, *, include_registry: bool = True, chains: bool = True,
                 stale_after: timedelta = timedelta(0),
                 clock: Callable[[], datetime] | None = None, on_step: Step | None = None,
                 keep_ownership: bool = False) -> None:
        self.layout = PublishRoot(root, include_registry)
        self.keep_ownership = keep_ownership
        self.chains = chains
        self._clock = clock or (lambda: datetime.now(UTC))
        self._on_step = on_step or (lambda step: None)
        self.staging = StagingArea(root / ".ligoenv" / "staging", stale_after, self._clock)
        self.staging.clean()  # trees left by a worker that crashed before publishing
        self._clone_method = clone_method(self.staging.root) if chains else ""
        # Held shared while this publisher lives, so that `exclusive()` (index migrate) can
        # tell that a worker is publishing to this root.
        lock = root / paths.PUBLISHERS_LOCK
        lock.parent.mkdir(parents=True, exist_ok=True)
        self._presence = open(lock, "a")  # noqa: SIM115 (closed with the publisher)
        fcntl.flock(self._presence.fileno(), fcntl.LOCK_SH)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        lock = self.layout.root / paths.PUBLISHERS_LOCK
        try:
            fcntl.flock(self._presence.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PublishError(f"a worker is publishing to {self.layout.root} (it holds {lock}): "
                               "stop the workers, then run this again") from None
        try:
            yield
        finally:
            fcntl.flock(self._presence.fileno(), fcntl.LOCK_SH)

    def add_chains(self, parent: Digest | None, steps: list[ChainStep]) -> None:
        """Each chain's tree is staged as a clone of the one before and filled; all are synced
        once, then renamed into `.chains/` bottom up, so a chain is never there without its
        parent."""
        with tree_lock(self.layout.root, exclusive=False):  # garbage collection waits
            self._add_chains(parent, steps)

    def _add_chains(self, parent: Digest | None, steps: list[ChainStep]) -> None:
        staged: list[tuple[Digest, Path]] = []
        source = self.layout.chain_dir(parent) if parent is not None else None
        try:
            for chain, fill, _arrived in steps:  # the clone is made while the layer downloads
                tree = self.staging_dir() / "tree"
                staged.append((chain, tree))
                self._clone_or_empty(source, tree)
                # sealed before anything clones it; the clone of a sealed tree needs sealing
                # only where its layer wrote (never a shared inode)
                seal_paths(tree, fill(tree), keep_ownership=self.keep_ownership)
                source = tree
            _syncfs(self.layout.root)
            self._on_step("chains-synced")
            for chain, tree in staged:
                # False: another worker published the same chain first (equal ChainIDs, equal trees)
                _rename(tree, self.layout.chain_dir(chain))
        finally:
            for _chain, tree in staged:
                self.discard(tree.parent)

    def publish(self, image: StagedImage) -> PublishOutcome:
        with tree_lock(self.layout.root, exclusive=False):  # garbage collection waits
            return self._publish(image)

    def _publish(self, image: StagedImage) -> PublishOutcome:
        cloned: list[Path] = []
        try:
            self.check(image)
            image = self._clone_images(image, cloned)
            new, reused = self._place_images(image)
            with self._repository_lock(image.registry, image.repository):
                plan = plan_publish(self.layout, image, self._clock())
                plan.write_digest_links()
                self._on_step("digest-links")
                plan.write_index()
                self._on_step("index")
                plan.write_platform_links()
                plan.write_tag_link()
                self._on_step("tag-link")
        finally:
            for platform in image.platforms:
                if platform.tree is not None:
                    self.discard(platform.tree)  # what was not renamed into place
            for staging in cloned:
                self.discard(staging)
        return PublishOutcome(
            image.top_digest, image.tag, plan.tag_moved, tuple(new), tuple(reused),
            {p.platform: self.layout.relative_image_path(p.digest) for p in image.platforms},
            plan.index_path)

    def untag(self, registry: str, repository: str, tag: str, when: datetime,
              source: str) -> bool:
        with tree_lock(self.layout.root, exclusive=False), \
                self._repository_lock(registry, repository):
            plan = plan_untag(self.layout, registry, repository, tag, when, source)
            plan.write_index()
            plan.write_platform_links()
            plan.write_tag_link()
        return plan.index_changed

    def _clone_images(self, image: StagedImage, cloned: list[Path]) -> StagedImage:
        """Stage the tree of each new platform image built by layer chain."""
        platforms = []
        for platform in image.platforms:
            if platform.tree is None and platform.top_layer is not None \
                    and not self.has_image(platform.digest):
                platform = self._clone_image(platform, cloned)
            platforms.append(platform)
        return replace(image, platforms=tuple(platforms))

    def _clone_image(self, platform: StagedPlatform, cloned: list[Path]) -> StagedPlatform:
        """A clone of the image's base chain (or an empty tree) with its top layer applied,
        completed and sealed."""
        assert platform.top_layer is not None and platform.config is not None
        if platform.chain is not None and not self.has_chain(platform.chain):
            raise PublishError(f"layer chain {platform.chain.short} of image {platform.digest.short} "
                               "is not published", temporary=True)
        staging = self.staging_dir()
        cloned.append(staging)
        tree = staging / "tree"
        self._clone_or_empty(self.layout.chain_dir(platform.chain) if platform.chain else None, tree)
        # both write new inodes only: the chain stays as it is
        changed = platform.top_layer(tree)
        made = complete_tree(tree, platform.config, bind_points=platform.bind_points,
                             provenance=platform.provenance)
        changed |= completion_paths(platform.config, platform.bind_points)
        # the rest is the sealed chain's
        seal_paths(tree, changed, keep_ownership=self.keep_ownership)
        return replace(platform, tree=tree, record=replace(platform.record, bind_points=made),
                       sealed=True)

    def _clone_or_empty(self, source: Path | None, tree: Path) -> None:
        if source is None:
            tree.mkdir(mode=0o755)
            os.chmod(tree, 0o755)  # noqa: S103  (the root directory of a public tree)
        else:
            clone_tree(source, tree, self._clone_method)

    def _place_images(self, image: StagedImage) -> tuple[list[Digest], list[Digest]]:
        """Rename each new tree into `.images/`; returns (new, already published) digests."""
        staged = [p for p in image.platforms if p.tree is not None and not self.has_image(p.digest)]
        for platform in staged:
            assert platform.tree is not None
            if not platform.sealed:
                seal_tree(platform.tree, keep_ownership=self.keep_ownership)
        if staged:
            # Once per publish: the unpacker wrote without fsync, so that a tree is durable
            # before the rename that makes it visible.
            _syncfs(self.layout.root)
        self._on_step("synced")
        new, reused = [], []
        for platform in image.platforms:
            target = self.layout.image_dir(platform.digest)
            if platform in staged and platform.tree is not None and _rename(platform.tree, target):
                new.append(platform.digest)
            elif target.is_dir():
                reused.append(platform.digest)
            else:
                raise PublishError(f"image {platform.digest.short} is neither staged nor published",
                                   temporary=True)
        self._on_step("images")
        return new, reused

    @contextmanager
    def _repository_lock(self, registry: str, repository: str) -> Iterator[None]:
        lock_path = self.layout.root / paths.lock_file(registry, repository)
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held briefly: read-modify-write of one index
            yield
        finally:
            os.close(fd)


def _rename(tree: Path, target: Path) -> bool:
    """Move `tree` to `target` atomically; False when another worker published it first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tree, target)
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise
    fsync_dir(target.parent)
    return True


def _syncfs(path: Path) -> None:
    """Flush the file system holding `path` (syncfs(2)); all file systems where unavailable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            os.sync()
    except (AttributeError, OSError):
        os.sync()
    finally:
        os.close(fd)
