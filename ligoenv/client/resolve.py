"""Reference -> digest, in a fixed order: lockfile pin, then the publish index, then the registry.

The lockfile and a local index answer without the network and without importing requests;
the registry client is imported only when it is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from ligoenv.oci.digest import Digest
from ligoenv.oci.errors import NotFound, PlatformNotFound, UsageError
from ligoenv.oci.manifest import MANIFEST_TYPES
from ligoenv.oci.platform import Platform
from ligoenv.oci.reference import Reference
from ligoenv.store.errors import PublishIndexError
from ligoenv.store.index.reader import absolute_location
from ligoenv.store.lockfile import Environment, Lockfile, PlatformPin

if TYPE_CHECKING:
    from ligoenv.oci.registry import RegistryClient
    from ligoenv.store.index import RepositoryView
    from ligoenv.store.index.reader import IndexReader
    from ligoenv.store.pins import PinSet


T = TypeVar("T")


@dataclass(frozen=True)
class Resolution:
    """What a reference means: its top digest, per-platform manifests, and who said so."""

    reference: Reference  # registry/repository[:tag]@top-digest, original kept
    media_type: str | None
    platforms: Mapping[str, Digest]  # "linux/amd64" -> manifest digest; empty when not looked up
    source: str  # "lockfile:<path>" | "index:<location>" | "registry" | "reference"
    environment: str | None = None  # the name of the lockfile environment that answered
    configs: Mapping[str, Digest] = field(default_factory=dict)
    paths: tuple[str, ...] = ()
    locked: Environment | None = None  # the entry of `environment` (run checks its pins)

    @property
    def digest(self) -> Digest:
        assert self.reference.digest is not None
        return self.reference.digest

    def pinned(self, platform: Platform | None = None) -> str:
        """`registry/repository@sha256:...` of the top digest, or of `platform`'s manifest."""
        digest = self.digest if platform is None else self.platform_digest(platform)[1]
        return f"{self.reference.name}@{digest}"

    def platform_digest(self, wanted: Platform) -> tuple[str, Digest]:
        """(platform key, manifest digest) for `wanted`; PlatformNotFound lists what exists."""
        for key, digest in sorted(self.platforms.items()):
            if wanted.matches(Platform.parse(key)):
                return key, digest
        if not self.platforms and self.media_type in MANIFEST_TYPES:
            return str(wanted), self.digest  # a single-platform image we did not inspect
        available = ", ".join(sorted(self.platforms)) or "unknown"
        raise PlatformNotFound(
            f"no image for platform {wanted} in {self.reference.name}@{self.digest.short}; "
            f"available: {available}"
        )

    def to_json(self, platform: Platform | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "reference": self.reference.display(), "registry": self.reference.registry,
            "repository": self.reference.repository, "tag": self.reference.tag,
            "digest": str(self.digest), "mediaType": self.media_type, "source": self.source,
            "environment": self.environment,
            "platforms": {key: str(d) for key, d in sorted(self.platforms.items())},
            "resolved": self.pinned(platform),
        }
        if platform is not None:
            key, manifest = self.platform_digest(platform)
            out["platform"], out["manifest"] = key, str(manifest)
        return out


def from_environment(name: str, env: Environment, lockfile: Lockfile) -> Resolution:
    return Resolution(
        env.pinned(), env.media_type, {k: pin.manifest for k, pin in env.platforms.items()},
        f"lockfile:{lockfile.path}", name,
        {k: pin.config for k, pin in env.platforms.items() if pin.config}, env.paths, env,
    )


class Resolver:
    """Answers `resolve(text)`; each source is consulted only when the previous one cannot answer."""

    def __init__(self, *, lockfile: Lockfile | None = None, index: str | None = None,
                 insecure_registries: tuple[str, ...] = (), timeout: float = 10.0,
                 warn: Callable[[str], None] = lambda _: None) -> None:
        self.lockfile = lockfile
        # absolute, as a lockfile records it: it must mean the same from any directory
        self.index_location = absolute_location(index) if index else None
        self.insecure_registries = insecure_registries
        self.timeout = timeout
        self.warn = warn  # one-line notes for the user, e.g. that the index is out of reach
        self._reader: IndexReader | None = None
        self._index_down = False

    def resolve(self, text: str, *, platform: Platform | None = None,
                at: datetime | None = None, use_lockfile: bool = True,
                locked: bool = False) -> Resolution:
        """`locked`: `text` must name an environment of the lockfile (NotFound lists them)."""
        lockfile = self.lockfile if use_lockfile or locked else None
        if locked and lockfile is not None:
            found: tuple[str, Environment] | None = (text, lockfile.environment(text))
        else:
            found = lockfile.find(text) if lockfile is not None else None
        if found is not None and lockfile is not None and at is None:
            return from_environment(*found, lockfile)
        if at is not None:
            # A lockfile environment stands for the tag it locked: --at asks about its past.
            env = found[1] if found else None
            ref = (Reference(env.registry, env.repository, env.tag, None, env.reference) if env
                   else Reference.parse(text))
            return self._from_history(ref, at)
        ref = Reference.parse(text)
        answer = self.from_index(ref)
        if answer is not None and (platform is None or _knows(answer, platform)):
            return answer
        if ref.digest is not None and platform is None:
            return Resolution(ref, None, {}, "reference")
        return self.from_registry(ref, platform)

    @property
    def index(self) -> IndexReader | None:
        if self._reader is None and self.index_location:
            from ligoenv.store.index import open_index_reader

            self._reader = open_index_reader(self.index_location)
        return self._reader

    def repository_index(self, ref: Reference, *, required: bool = False) -> RepositoryView | None:
        """The index of `ref`'s repository (read lazily); None when no index is configured,
        or it was found out of reach and the lookup is not `required` (the history is)."""
        reader = self.index
        if reader is None or (self._index_down and not required):
            return None
        return reader.get(ref.registry, ref.repository)

    def ask_index(self, question: Callable[[], T], otherwise: T) -> T:
        """The index's answer to `question`, or `otherwise` when it is out of reach for now.

        Readers fetch lazily, so it is the question that finds a mirror down.
        """
        try:
            return question()
        except PublishIndexError as error:
            if not error.temporary:
                raise
            self._index_down = True  # once is enough: do not wait for it on every lookup
            self.warn(f"{error.message}: asking the registry instead")
            return otherwise

    def from_index(self, ref: Reference) -> Resolution | None:
        """The index's answer for `ref` (its tag's current digest, or its pinned digest)."""
        repo = self.repository_index(ref)
        if repo is None:
            return None

        def answer() -> Resolution | None:
            assert repo is not None
            digest = ref.digest if ref.digest is not None else repo.current(ref.tag or "latest")
            if digest is None or repo.record(digest) is None:
                return None
            return self._index_resolution(ref, repo, digest)

        return self.ask_index(answer, None)

    def _from_history(self, ref: Reference, when: datetime) -> Resolution:
        if ref.digest is not None or ref.tag is None:
            raise UsageError(f"--at asks what a tag meant; {ref.display()} is pinned by digest")
        if not self.index_location:
            raise UsageError(
                "--at answers from the tag history of a publish index: pass --index LOCATION "
                "or set LIGOENV_INDEX"
            )
        repo = self.repository_index(ref, required=True)
        if repo is None or not repo.has_tag(ref.tag):
            raise NotFound(f"index {self.index_location} has no history for {ref.name}:{ref.tag}")
        return self._index_resolution(ref, repo, repo.at(ref.tag or "latest", when))

    def _index_resolution(self, ref: Reference, repo: RepositoryView, digest: Digest) -> Resolution:
        record = repo.record(digest)
        platforms: dict[str, Digest] = dict(record.platforms) if record is not None else {}
        configs = {}
        for key, manifest in platforms.items():
            platform_record = repo.record(manifest)
            if platform_record is not None and platform_record.config is not None:
                configs[key] = platform_record.config
        return Resolution(
            ref.with_digest(digest), record.media_type if record else None, platforms,
            f"index:{self.index_location}", None, configs, self._paths(ref, digest, platforms),
        )

    def _paths(self, ref: Reference, digest: Digest, platforms: Mapping[str, Digest]) -> tuple[str, ...]:
        reader = self.index
        if reader is None:
            return ()
        paths = []
        for key in sorted(platforms):
            path = reader.image_path(ref.registry, ref.repository, digest, Platform.parse(key))
            if path is not None:
                paths.append(str(path))
        return tuple(paths)

    def client(self, ref: Reference) -> RegistryClient:
        from ligoenv.oci.registry import client_for

        return client_for(ref, insecure_registries=self.insecure_registries, timeout=self.timeout)

    def from_registry(self, ref: Reference, platform: Platform | None = None,
                      *, details: bool = False, configs: bool = False) -> Resolution:
        """Ask the registry. A HEAD answers a plain resolve; platforms need the manifest itself."""
        with self.client(ref) as client:
            if platform is None and not details and not configs:
                return Resolution(ref.with_digest(client.resolve(ref)), None, {}, "registry")
            answer = _inspect(client, ref, configs)
        if platform is not None:
            answer.platform_digest(platform)  # PlatformNotFound now, naming what exists
        return answer

    def pin(self, text: str, now: datetime, platforms: Sequence[Platform] = ()) -> Environment:
        """A lockfile environment for `text`, from the index when it knows, else the registry.

        `platforms` limits what is locked (default: every platform the image has).
        """
        ref = Reference.parse(text)
        answer = self.from_index(ref)
        if answer is None or not answer.platforms or not answer.media_type:
            answer = self.from_registry(ref, configs=True)
        chosen = dict(answer.platform_digest(p) for p in platforms) if platforms else answer.platforms
        pins = {key: PlatformPin(digest, answer.configs.get(key)) for key, digest in chosen.items()}
        hexes = {pin.manifest.hex for pin in pins.values()}
        return Environment(
            reference=text, registry=ref.registry, repository=ref.repository, tag=ref.tag,
            digest=answer.digest, media_type=answer.media_type or "", platforms=pins,
            resolved=now, source=answer.source,
            paths=tuple(p for p in answer.paths if p.rstrip("/").rsplit("/", 1)[-1] in hexes),
        )

    def where_available(self, ref: Reference) -> str:
        """Where the pinned `ref` can still be fetched: "index" or "registry" (saying when the
        publish root collected its tree, if it did); NotFound if nowhere."""
        digest = ref.digest
        assert digest is not None
        repo = self.repository_index(ref)
        record = self.ask_index(lambda: repo.record(digest), None) if repo is not None else None
        if record is not None and record.collected is None:
            return "index"
        from ligoenv.store.times import format_time

        collected = f"collected on {format_time(record.collected)}; " if record and record.collected else ""
        try:
            with self.client(ref) as client:
                client.resolve(ref.with_tag(None))  # a HEAD by digest; NotFound when it is gone
        except NotFound:
            if collected:
                raise NotFound(f"{ref}: {collected}gone from the registry too") from None
            raise
        return f"{collected}still in the registry" if collected else "registry"

    def pins(self) -> PinSet:
        """The pins of the index location (none when it has none, or is out of reach)."""
        from ligoenv.store.pins import PinSet, read_pins

        if not self.index_location or self._index_down:
            return PinSet()
        try:
            return read_pins(str(self.index_location))
        except PublishIndexError as error:
            self.warn(f"pins not read: {error}")
            return PinSet()

    def current(self, ref: Reference) -> Digest | None:
        """What `ref`'s tag points at now (index first); None when the tag no longer exists."""
        bare = Reference(ref.registry, ref.repository, ref.tag or "latest", None, ref.original)
        repo = self.repository_index(bare)
        if repo is not None and self.ask_index(lambda: repo.has_tag(bare.tag or "latest"), False):
            return repo.current(bare.tag or "latest")
        try:
            with self.client(bare) as client:
                return client.resolve(bare)
        except NotFound:
            return None


def _knows(answer: Resolution, platform: Platform) -> bool:
    try:
        answer.platform_digest(platform)
    except PlatformNotFound:
        return False
    return True


def _inspect(client: RegistryClient, ref: Reference, configs: bool) -> Resolution:
    """Platforms (and, when asked, config digests) of what `ref` names, from its manifests."""
    from ligoenv.oci.manifest import ImageIndex, parse_config

    top = client.fetch_manifest(ref)
    pinned = ref.with_digest(top.digest)
    if isinstance(top, ImageIndex):
        platforms = top.runnable_platforms()
        found = {key: _manifest_config(client, pinned, digest)
                 for key, digest in platforms.items()} if configs else {}
        return Resolution(pinned, top.media_type, platforms, "registry", None, found)
    # A single manifest says nothing of its platform: its config does.
    config = parse_config(client.fetch_blob(ref.repository, top.config), top.config.digest)
    key = str(Platform.parse(f"{config.os}/{config.architecture}"))
    return Resolution(pinned, top.media_type, {key: top.digest}, "registry", None,
                      {key: top.config.digest})


def _manifest_config(client: RegistryClient, pinned: Reference, digest: Digest) -> Digest:
    from ligoenv.oci.manifest import platform_manifest

    assert pinned.digest is not None
    found = client.fetch_manifest(pinned.with_digest(digest))
    return platform_manifest(found, pinned.digest, pinned.display()).config.digest
