"""What a publisher does for the worker, and the factory that builds one from the config.

The worker unpacks each platform image into `staging_dir()`, completes it, then calls
`publish()`, which makes the images, the index update and the tag move visible, or nothing.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ligoenv.oci.atomicfile import fsync_dir
from ligoenv.oci.digest import Digest
from ligoenv.oci.manifest import INDEX_TYPES
from ligoenv.store.apptainer import BIND_POINTS
from ligoenv.store.errors import ConfigError, PublishError
from ligoenv.store.index import DigestRecord, RepositoryView, paths
from ligoenv.store.index.reader import StoredRepository
from ligoenv.store.index.writer import IndexChange, IndexWriter
from ligoenv.store.multiarch import PlatformLinks, plan_platform_links
from ligoenv.store.publishroot import PublishRoot, remove_symlink, replace_symlink

if TYPE_CHECKING:
    from ligoenv.oci.manifest import ImageConfig
    from ligoenv.oci.platform import Platform
    from ligoenv.store.provenance import Provenance

BACKENDS = ("directory", "cvmfs")
TRASH_DIR = ".ligoenv/trash"  # trees garbage collection took out, deleted after the run
TREES_LOCK = ".ligoenv/locks/trees.lock"
Fill = Callable[[Path], None]  # applies one layer to a chain's tree
ChainStep = tuple[Digest, Fill]  # a chain to add: its ChainID and how to fill its tree


@dataclass(frozen=True)
class StagedPlatform:
    """One platform's image: its manifest digest, its record and where it was unpacked."""

    platform: str  # "linux/amd64"
    digest: Digest  # the manifest digest: the image directory's name
    record: DigestRecord  # e.g. ligoenv.store.index.manifest_record(manifest, platform)
    tree: Path | None  # a completed tree in staging_dir(); None when has_image(digest) said so
    # or when the image is to be cloned from the published layer chain `chain` and completed
    # for `config` (publishers with `chains`)
    chain: Digest | None = None
    config: ImageConfig | None = None
    bind_points: tuple[str, ...] = BIND_POINTS  # what completing a clone of `chain` makes
    provenance: Provenance | None = None  # where the tree came from, written by completion


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


def _canonical_platform(name: str) -> str | None:
    from ligoenv.oci.errors import InvalidReference
    from ligoenv.oci.platform import Platform

    try:
        return str(Platform.parse(name))
    except InvalidReference:
        return None


class PublisherSettings(Protocol):
    """The parts of the server config's `[publisher]` section a publisher is built from."""

    @property
    def backend(self) -> str: ...
    @property
    def root(self) -> Path: ...
    @property
    def repository(self) -> str | None: ...
    @property
    def cvmfs_server(self) -> str: ...
    @property
    def gateway(self) -> bool: ...
    @property
    def layout(self) -> str: ...
    @property
    def platforms(self) -> tuple[Platform, ...]: ...
    @property
    def keep_ownership(self) -> bool: ...
    @property
    def chains(self) -> bool: ...


def make_publisher(config: PublisherSettings, *, staging_root: Path | None = None) -> Publisher:
    """The publisher `config.backend` names.

    `staging_root` is where the cvmfs backend unpacks before copying into a transaction (a
    local disk, not the repository); the directory backend stages inside its root.
    """
    include_registry = config.layout != "osg"
    if config.backend == "directory":
        from .directory import DirectoryPublisher

        return DirectoryPublisher(Path(config.root), include_registry=include_registry,
                                  keep_ownership=config.keep_ownership,
                                  chains=config.chains)
    if config.backend == "cvmfs":
        from .cvmfs import CvmfsPublisher

        if not config.repository:
            raise ConfigError("publisher.repository: the cvmfs backend needs the repository name, "
                              "e.g. repository = \"singularity.opensciencegrid.org\"")
        return CvmfsPublisher(
            config.repository, mount=Path(config.root),
            staging_root=staging_root or Path("/var/lib/ligoenv/staging"),
            cvmfs_server=config.cvmfs_server, gateway=config.gateway,
            include_registry=include_registry, keep_ownership=config.keep_ownership,
            chains=config.chains)
    raise ConfigError(f"publisher.backend: unknown backend {config.backend!r}; "
                      f"choose one of {', '.join(BACKENDS)}")


class StagingArea:
    """Directories the worker unpacks into. Each has a lock file, taken *before* the directory
    is made and held while it is in use, so a directory whose lock is free belongs to a worker
    that died: cleaning removes it at once, and never one a live worker is still filling."""

    def __init__(self, root: Path, stale_after: timedelta = timedelta(0),
                 clock: Callable[[], datetime] | None = None) -> None:
        self.root = root
        self.stale_after = stale_after  # extra grace before cleaning; the lock alone is enough
        self._clock = clock or (lambda: datetime.now(UTC))
        self._locks: dict[Path, int] = {}
        root.mkdir(parents=True, exist_ok=True)

    def new(self) -> Path:
        fd, lock_name = tempfile.mkstemp(dir=self.root, prefix="stage-", suffix=".lock")
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = Path(lock_name[: -len(".lock")])
        path.mkdir(mode=0o755)
        os.chmod(path, 0o755)  # noqa: S103  (it becomes the root directory of a public image)
        self._locks[path] = fd
        return path

    def discard(self, path: Path) -> None:
        if os.path.lexists(path):
            shutil.rmtree(path, ignore_errors=True)
        fd = self._locks.pop(path, None)
        self._lock_path(path).unlink(missing_ok=True)
        if fd is not None:
            os.close(fd)

    def clean(self, now: datetime | None = None) -> list[Path]:
        """Remove staging directories no live worker holds (older than `stale_after`)."""
        cutoff = (now or self._clock()).timestamp() - self.stale_after.total_seconds()
        removed = []
        for path in sorted(self.root.glob("stage-*")):
            if path.suffix == ".lock" or path in self._locks or path.lstat().st_mtime > cutoff:
                continue
            try:
                fd = os.open(self._lock_path(path), os.O_RDWR | os.O_CREAT, 0o600)
            except FileNotFoundError:
                continue  # removed by another cleaner meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live worker in another process holds it
            finally:
                os.close(fd)
            self.discard(path)
            removed.append(path)
        return removed

    @staticmethod
    def _lock_path(path: Path) -> Path:
        return path.with_name(path.name + ".lock")
