"""Publish into a CernVM-FS repository: every change between `cvmfs_server transaction` and
`publish`, and `abort -f` on any failure, so clients never see a partial image.

With layer chains (the default), each chain's tree is made in the repository by a template
transaction (`transaction -T /<parent chain>=/<chain>`, which clones the parent's catalog
entries without touching file data) followed by that chain's layer alone, and an image's tree
likewise from the chain below its top layer plus that layer and the Apptainer files: a rebuild
writes only its new layers into the repository. Without chains (for gateway publishers whose
CVMFS release cannot open template transactions through the gateway), images are unpacked on
local disk and copied in whole.
Either way there is one transaction per subpath with a gateway (so several publisher nodes can
work at once), or for the whole repository without; the index and the links follow in their own
short transaction(s).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ligoenv.oci.digest import Digest
from ligoenv.oci.errors import LigoenvError
from ligoenv.store.completion import complete_tree, completion_paths
from ligoenv.store.errors import ConfigError, PublishError
from ligoenv.store.multiarch import MULTIARCH_DIR
from ligoenv.store.publishroot import PublishRoot

from .base import ChainStep, Publisher
from .metadata import MetadataPlan, plan_publish, plan_untag
from .seal import seal_paths, seal_tree
from .staged import PublishOutcome, StagedImage, StagedPlatform
from .staging import StagingArea

log = logging.getLogger(__name__)


class CvmfsPublisher(Publisher):
    """Publishes to the repository `repository`, mounted (writable in transactions) at `mount`.

    On one node, transactions on the repository are serialised by a lock in `staging_root`;
    so a transaction found open while we hold that lock was left by a crash, and is aborted
    first. (This assumes nothing but ligoenv opens transactions on the repository from this
    node.)
    """

    name = "cvmfs"

    def __init__(self, repository: str, *, mount: Path, staging_root: Path,
                 cvmfs_server: str = "cvmfs_server", gateway: bool = False,
                 include_registry: bool = True, keep_ownership: bool = False,
                 chains: bool = True,
                 clock: Callable[[], datetime] | None = None,
                 timeout: float = 600.0, publish_timeout: float = 4 * 3600.0,
                 stale_after: timedelta = timedelta(0)) -> None:
        self.repository = repository
        self.layout = PublishRoot(mount, include_registry)
        self.gateway = gateway
        self.keep_ownership = keep_ownership
        self.chains = chains
        self.cvmfs_server = cvmfs_server
        self.timeout = timeout
        self.publish_timeout = publish_timeout
        self._clock = clock or (lambda: datetime.now(UTC))
        self.staging = StagingArea(staging_root, stale_after, self._clock)
        self.staging.clean()
        self._lock_path = staging_root / f".cvmfs-{repository}.lock"

    def publish(self, image: StagedImage) -> PublishOutcome:
        try:
            self.check(image)
            with self._node_lock():
                self._recover()
                image, new = self._place_images(image)
                plan = self._publish_metadata(image)
        finally:
            for platform in image.platforms:
                if platform.tree is not None:
                    self.discard(platform.tree)
        return PublishOutcome(
            image.top_digest, image.tag, plan.tag_moved, tuple(p.digest for p in new),
            tuple(p.digest for p in image.platforms if p not in new),
            {p.platform: self.layout.relative_image_path(p.digest) for p in image.platforms},
            plan.index_path)

    def add_chains(self, parent: Digest | None, steps: list[ChainStep]) -> None:
        """One transaction per chain: a template clone of its parent (or an empty directory),
        then its layer, then `.cvmfscatalog` (a nested catalog per chain, as DUCC makes)."""
        for chain, fill, arrived in steps:
            # Its layer downloads before the node's lock is taken: the repository's other
            # publications go on meanwhile instead of waiting behind an idle transaction.
            arrived()
            with self._node_lock():
                self._recover()
                tree = self.layout.chain_dir(chain)
                if not self.has_chain(chain):
                    source = self.layout.chain_dir(parent) if parent is not None else None
                    with self._template_transaction(source, tree):
                        if source is None:
                            _empty_tree(tree)
                        changed = fill(tree)
                        _nested_catalog(tree)
                        # sealed before anything clones it; a template clone of a sealed
                        # chain needs sealing only where its layer wrote
                        seal_paths(tree, {*changed, ".cvmfscatalog"},
                                   keep_ownership=self.keep_ownership)
            parent = chain

    def untag(self, registry: str, repository: str, tag: str, when: datetime,
              source: str) -> bool:
        def plan() -> MetadataPlan:
            return plan_untag(self.layout, registry, repository, tag, when, source)

        with self._node_lock():
            self._recover()
            if plan().empty:
                return False
            index_dir = self.index_dir(registry, repository)
            link_dir = self.layout.tag_link(registry, repository, tag).parent
            with self._transaction(None if not self.gateway else self._lease(index_dir)):
                changed = plan()
                changed.write_index()
                if not self.gateway:
                    changed.write_platform_links()
                    changed.write_tag_link()
            if self.gateway:
                self._write_platform_links(plan)
            if self.gateway and plan().remove_tag_link is not None:
                with self._transaction(self._lease(link_dir)):
                    plan().write_tag_link()
        return changed.index_changed

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """One transaction on the whole repository, taken only if no publisher on this node
        holds the node lock; with a gateway, opening it fails while another node holds a lease."""
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise PublishError(f"a worker is publishing to /cvmfs/{self.repository} (it holds "
                                   f"{self._lock_path}): stop the workers, then run this again") from None
            self._recover()
            with self._transaction(None):
                yield
        finally:
            os.close(fd)

    # -- root-wide changes ---------------------------------------------------------------

    @contextmanager
    def hold_publishes(self) -> Iterator[None]:
        """Every transaction of this node waits: the node lock (a crashed one is aborted)."""
        with self._node_lock():
            self._recover()
            yield

    def root_change(self) -> contextlib.AbstractContextManager[None]:
        """One transaction over the whole repository (with a gateway too): all or nothing."""
        return self._transaction(None)

    def remove_tree(self, relative: str) -> None:
        # inside root_change(): clients see the tree until the transaction is published
        from ligoenv.oci.pull import remove_tree  # opens up directories an image made read-only

        remove_tree(self.layout.root / relative)

    def empty_trash(self) -> None:
        """Nothing to do: removals happen inside the transaction."""

    # -- steps ---------------------------------------------------------------------------

    def _place_images(self, image: StagedImage) -> tuple[StagedImage, list[StagedPlatform]]:
        """Copy each new staged tree into the repository, clone each new image of a chain;
        returns the image (clones' records carry the bind points made) and the platforms
        published now."""
        copied = [p for p in image.platforms if p.tree is not None and not self.has_image(p.digest)]
        cloned = [p for p in image.platforms
                  if p.tree is None and p.top_layer is not None and not self.has_image(p.digest)]
        if copied and not self.gateway:
            with self._transaction(None):
                for platform in copied:
                    self._copy_in(platform)
        for platform in copied if self.gateway else []:
            with self._transaction(self._lease(self.layout.image_dir(platform.digest))):
                self._copy_in(platform)
        made = {p.digest: self._clone_in(p) for p in cloned}
        new = [p for p in image.platforms if p in copied or p in cloned]
        platforms = tuple(replace(p, record=replace(p.record, bind_points=made[p.digest]))
                          if p.digest in made else p for p in image.platforms)
        image = replace(image, platforms=platforms)
        return image, [p for p in image.platforms if p.digest in {n.digest for n in new}]

    def _clone_in(self, platform: StagedPlatform) -> tuple[str, ...]:
        """The image as a template clone of its base chain (or an empty directory) with its top
        layer applied, completed; returns the bind points made."""
        assert platform.top_layer is not None and platform.config is not None
        source = self.layout.chain_dir(platform.chain) if platform.chain is not None else None
        if platform.chain is not None and not self.has_chain(platform.chain):
            # e.g. rolled back with a crashed transaction
            raise PublishError(f"layer chain {platform.chain.short} of image "
                               f"{platform.digest.short} is not in /cvmfs/{self.repository}: "
                               "publish again to unpack it", temporary=True)
        tree = self.layout.image_dir(platform.digest)
        with self._template_transaction(source, tree):
            if source is None:
                _empty_tree(tree)
            # new files only: the chain's stay as they are
            changed = platform.top_layer(tree)
            made = complete_tree(tree, platform.config, bind_points=platform.bind_points,
                                 provenance=platform.provenance)
            changed |= completion_paths(platform.config, platform.bind_points)
            # the rest is the sealed chain's
            seal_paths(tree, changed, keep_ownership=self.keep_ownership)
        return made

    def _publish_metadata(self, image: StagedImage) -> MetadataPlan:
        """Index, digest links and tag link; planned again inside each transaction, since
        another node may have published in between."""
        def plan() -> MetadataPlan:
            self._require_images(image)
            return plan_publish(self.layout, image, self._clock())

        first = plan()
        if first.empty:
            return first
        if not self.gateway:
            with self._transaction(None):
                current = plan()
                current.write_digest_links()
                current.write_index()
                current.write_platform_links()
                current.write_tag_link()
            return current
        if first.index_changed:
            with self._transaction(self._lease(first.index_path)):
                first = plan()
                first.write_index()
        self._write_platform_links(plan)
        if plan().links:
            link_dir = self.layout.digest_link(image.registry, image.repository,
                                               image.top_digest).parent
            with self._transaction(self._lease(link_dir)):
                links = plan()
                links.write_digest_links()
                links.write_tag_link()
        return first

    def _write_platform_links(self, plan: Callable[[], MetadataPlan]) -> None:
        """With a gateway, the .multiarch links have a lease of their own (one transaction
        cannot hold two): they follow the index, and come before the tag link."""
        if not plan().platform_links.empty:
            with self._transaction(self._lease(self.layout.root / MULTIARCH_DIR)):
                plan().write_platform_links()

    def _require_images(self, image: StagedImage) -> None:
        # An image found at first may have been a partial tree of a crashed transaction,
        # rolled back since: never let the index name a tree that is not there.
        missing = [p.digest.short for p in image.platforms if not self.has_image(p.digest)]
        if missing:
            raise PublishError(f"image(s) {', '.join(missing)} not in /cvmfs/{self.repository}: "
                               "publish again to unpack them", temporary=True)

    def _copy_in(self, platform: StagedPlatform) -> None:
        assert platform.tree is not None
        target = self.layout.image_dir(platform.digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        seal_tree(platform.tree, keep_ownership=self.keep_ownership)  # cp -a copies owners, modes
        # cp -a keeps hard links, modes, times and special files, which copytree does not.
        self._run(["cp", "-a", "--no-target-directory", str(platform.tree), str(target)],
                  self.publish_timeout)

    # -- transactions --------------------------------------------------------------------

    def _lease(self, path: Path) -> str | None:
        """The subpath to lease for writing `path`: its highest missing ancestor (a lease
        cannot create its own parents), or None for the whole repository."""
        relative = path.relative_to(self.layout.root)
        for depth in range(1, len(relative.parts) + 1):
            candidate = Path(*relative.parts[:depth])
            if not os.path.lexists(self.layout.root / candidate):
                return str(candidate)
        return str(relative) if relative.parts else None

    @contextmanager
    def _template_transaction(self, source: Path | None, target: Path) -> Iterator[None]:
        """A transaction that may write `target` (absent), opened with `target` a clone of
        `source` if any; a template needs the target's parent directory, made first if missing."""
        if source is not None and not target.parent.is_dir():
            with self._transaction(self._lease(target.parent) if self.gateway else None):
                target.parent.mkdir(parents=True, exist_ok=True)
        template = None
        if source is not None:
            template = (f"/{source.relative_to(self.layout.root)}="
                        f"/{target.relative_to(self.layout.root)}")
        with self._transaction(self._lease(target) if self.gateway else None, template):
            yield

    @contextmanager
    def _transaction(self, subpath: str | None, template: str | None = None) -> Iterator[None]:
        target = f"{self.repository}/{subpath}" if subpath else self.repository
        self._open(target, template)
        try:
            yield
            self._cvmfs("publish", self.repository, timeout=self.publish_timeout)
        except BaseException as error:
            self._abort()
            if isinstance(error, LigoenvError) or not isinstance(error, Exception):
                raise
            raise PublishError(f"publishing to {self.repository} failed and was rolled back: "
                               f"{error}", temporary=True) from error

    def _open(self, target: str, template: str | None = None) -> None:
        options = ["-T", template] if template else []
        result = self._cvmfs("transaction", *options, target, check=False)
        if result.returncode != 0:
            command = " ".join(["transaction", *options, target])
            raise PublishError(f"cvmfs_server {command} failed: {_last_line(result)}",
                               temporary=True)

    def _recover(self) -> None:
        """Abort a transaction a crashed publisher left open on this node: until then the
        mount shows its unpublished changes, and no new transaction can start."""
        if self._in_transaction():
            log.warning("aborting a transaction on %s left open by a crashed publisher",
                        self.repository)
            self._cvmfs("abort", "-f", self.repository)

    def _in_transaction(self) -> bool:
        listing = self._cvmfs("list", check=False).stdout
        return any(line.startswith(f"{self.repository} (") and "in transaction" in line
                   for line in listing.splitlines())

    def _abort(self) -> None:
        try:
            self._cvmfs("abort", "-f", self.repository)
        except LigoenvError as error:  # the original failure matters more
            log.error("could not abort the transaction on %s: %s", self.repository, error)

    def _cvmfs(self, *args: str, check: bool = True,
               timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        return self._run([self.cvmfs_server, *args], timeout or self.timeout, check)

    def _run(self, argv: list[str], timeout: float,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                    check=False)
        except FileNotFoundError:
            raise ConfigError(f"{argv[0]} not found: install it on this publisher node or set "
                              "publisher.cvmfs_server") from None
        except subprocess.TimeoutExpired:
            raise PublishError(f"{_describe(argv)} did not finish within {timeout:g} s",
                               temporary=True) from None
        if check and result.returncode != 0:
            raise PublishError(f"{_describe(argv)} failed: {_last_line(result)}", temporary=True)
        return result

    @contextmanager
    def _node_lock(self) -> Iterator[None]:
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _nested_catalog(tree: Path) -> None:
    """Mark `tree` as a nested catalog, unless its parent chain's mark came with the clone."""
    try:
        fd = os.open(tree / ".cvmfscatalog", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        return
    os.fchmod(fd, 0o644)
    os.close(fd)


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = (result.stderr or result.stdout or "").strip().splitlines()
    return lines[-1] if lines else f"exit status {result.returncode}"


def _describe(argv: list[str]) -> str:
    return " ".join([os.path.basename(argv[0]), *argv[1:3]])


def _empty_tree(tree: Path) -> None:
    tree.mkdir(mode=0o755, parents=True)
    os.chmod(tree, 0o755)  # noqa: S103 (the root of a public tree)
