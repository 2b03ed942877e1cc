"""`ligoenv archive`: a lockfile's environments as one OCI image layout tarball that a paper can cite.

The tarball holds every locked environment's manifests, configs and layers (each checked
against its digest while written), the lockfile itself, a CITATION.cff naming each environment
by digest and a README on running it. The same lockfile always gives the same bytes, so the
archive's own checksum can be cited beside the lockfile.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ligoenv.client.archive_records import ArchiveRecords
from ligoenv.oci.cache import LayerCache
from ligoenv.oci.digest import Digest
from ligoenv.oci.errors import ArchiveError, PlatformNotFound
from ligoenv.oci.layouttar import (
    INDEX_FILE,
    BlobEntry,
    BlobOpener,
    verified_bytes,
    write_layout_tar,
)
from ligoenv.oci.manifest import (
    OCI_INDEX,
    Descriptor,
    ImageIndex,
    ImageManifest,
    parse_manifest,
    platform_manifest,
)
from ligoenv.oci.platform import Platform
from ligoenv.oci.reference import Reference
from ligoenv.oci.registry import RegistryClient
from ligoenv.store.lockfile import Environment, Lockfile

REF_NAME = "org.opencontainers.image.ref.name"
REFERENCE_ANNOTATION = "org.ligoenv.reference"
LOCKFILE_NAME = "ligoenv.lock"
ClientFor = Callable[[Reference], RegistryClient]
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ArchivedEnvironment:
    name: str
    environment: Environment
    platforms: tuple[str, ...]  # the platforms whose images are in the archive


@dataclass(frozen=True)
class ArchiveSummary:
    path: Path
    sha256: str
    size: int
    environments: tuple[ArchivedEnvironment, ...]
    blobs: int


def archive_lockfile(lockfile: Lockfile, out: Path, *, cache: LayerCache, client_for: ClientFor,
                     platforms: Sequence[Platform] = (), records: ArchiveRecords | None = None,
                     progress: Progress | None = None) -> ArchiveSummary:
    """Write `out`; blobs come from the layer cache when it has them, else from their registry."""
    if not lockfile.environments:
        raise ArchiveError(f"{lockfile.where} has no environments to archive")
    with _Sources(cache, client_for) as sources:
        chosen = [_choose(name, env, platforms) for name, env in sorted(lockfile.environments.items())]
        blobs: dict[Digest, BlobEntry] = {}
        index_entries = [_collect(sources, archived, blobs) for archived in chosen]
        files = {
            INDEX_FILE: _json_bytes({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index_entries}),
            LOCKFILE_NAME: lockfile.dumps().encode(),
            "CITATION.cff": citation(lockfile, chosen).encode(),
            "README.md": readme(chosen).encode(),
        }
        total = sum(entry.size for entry in blobs.values())
        done = [0]

        def advance(count: int) -> None:  # called under the writer's lock
            done[0] += count
            if progress is not None:
                progress(done[0], total)

        checksum = write_layout_tar(out, files, blobs, mtime=int(lockfile.created.timestamp()),
                                    progress=advance)
    summary = ArchiveSummary(out, str(checksum), out.stat().st_size, tuple(chosen), len(blobs))
    if records is not None:
        for archived in chosen:
            records.remember(archived.environment.digest, out, summary.sha256, "written",
                             archived.platforms)
    return summary


def _choose(name: str, env: Environment, wanted: Sequence[Platform]) -> ArchivedEnvironment:
    keys = sorted(env.platforms)
    if wanted:
        keys = [key for key in keys if any(p.matches(Platform.parse(key)) for p in wanted)]
        if not keys:
            raise PlatformNotFound(f"environment {name} is locked for {', '.join(sorted(env.platforms))}, "
                                   f"none of {', '.join(str(p) for p in wanted)}")
    return ArchivedEnvironment(name, env, tuple(keys))


def _collect(sources: _Sources, archived: ArchivedEnvironment,
             blobs: dict[Digest, BlobEntry]) -> dict[str, object]:
    """Add the environment's blobs to `blobs`; return its entry for index.json."""
    env = archived.environment
    ref = env.pinned()
    top = sources.manifest(ref, env.digest)
    sources.add_bytes(blobs, top.digest, top.raw)
    for key in archived.platforms:
        manifest = top if isinstance(top, ImageManifest) else _platform_manifest(sources, ref, top, key, env)
        if manifest is not top:
            sources.add_bytes(blobs, manifest.digest, manifest.raw)
        for descriptor in (manifest.config, *manifest.layers):
            sources.add_blob(blobs, ref, descriptor)
    return {"mediaType": top.media_type, "digest": str(top.digest), "size": len(top.raw),
            "annotations": {REF_NAME: archived.name, REFERENCE_ANNOTATION: env.canonical}}


def _platform_manifest(sources: _Sources, ref: Reference, top: ImageIndex, key: str,
                       env: Environment) -> ImageManifest:
    pinned = env.platforms[key].manifest
    listed = top.runnable_platforms().get(key)
    if listed != pinned:
        raise ArchiveError(f"{env.canonical}: the lockfile pins {key} to {pinned.short}, which is not "
                           f"the index's entry for {key}: re-lock it")
    return platform_manifest(sources.manifest(ref, pinned), env.digest, ref.display())


class _Sources:
    """Where blobs come from: the layer cache first (offline, after a restore), else the registry."""

    def __init__(self, cache: LayerCache, client_for: ClientFor) -> None:
        self.cache = cache
        self.client_for = client_for
        self._clients: dict[str, RegistryClient] = {}

    def __enter__(self) -> _Sources:
        return self

    def __exit__(self, *_: object) -> None:
        for client in self._clients.values():
            client.close()

    def client(self, ref: Reference) -> RegistryClient:
        if ref.registry not in self._clients:
            self._clients[ref.registry] = self.client_for(ref)
        return self._clients[ref.registry]

    def manifest(self, ref: Reference, digest: Digest) -> ImageManifest | ImageIndex:
        cached = self.cache.path_for(digest)
        if cached.is_file():
            raw = cached.read_bytes()
            if Digest.of_bytes(raw, digest.algorithm) == digest:
                return parse_manifest(raw, digest)
        return self.client(ref).fetch_manifest(ref.with_digest(digest))

    def add_bytes(self, blobs: dict[Digest, BlobEntry], digest: Digest, raw: bytes) -> None:
        blobs[digest] = BlobEntry(digest, len(raw), functools.partial(verified_bytes, digest, raw))

    def add_blob(self, blobs: dict[Digest, BlobEntry], ref: Reference, descriptor: Descriptor) -> None:
        if descriptor.digest in blobs:
            return
        opener: BlobOpener
        if self.cache.has(descriptor):
            opener = functools.partial(self.cache.open, descriptor)
        else:
            opener = functools.partial(self.client(ref).open_blob, ref.repository, descriptor)
        blobs[descriptor.digest] = BlobEntry(descriptor.digest, descriptor.size, opener)


def citation(lockfile: Lockfile, chosen: Sequence[ArchivedEnvironment]) -> str:
    """CITATION.cff (format 1.2.0) naming each environment by digest; strings JSON-quoted (valid YAML)."""
    q = json.dumps
    repositories = sorted({f"{a.environment.registry}/{a.environment.repository}" for a in chosen})
    lines = [
        "cff-version: 1.2.0",
        f"message: {q('Please cite these container environments by their digests.')}",
        f"title: {q('Container environments: ' + ', '.join(a.name for a in chosen))}",
        "type: software",
        f"date-released: {q(lockfile.created.date().isoformat())}",
        "authors:",
        *(f"  - name: {q('Maintainers of ' + repository)}" for repository in repositories),
        "identifiers:",
    ]
    for archived in chosen:
        env = archived.environment
        lines += [
            "  - type: other",
            f"    value: {q(env.canonical)}",
            f"    description: {q(_describe(archived))}",
        ]
    lines.append(f"keywords: {q(['container image', 'reproducibility', 'ligoenv'])}")
    return "\n".join(lines) + "\n"


def _describe(archived: ArchivedEnvironment) -> str:
    env = archived.environment
    tag = f"tag {env.tag}, " if env.tag else ""
    return (f"environment {archived.name} ({tag}resolved {_date(env.resolved)}); "
            f"platforms in this archive: {', '.join(archived.platforms)}")


def readme(chosen: Sequence[ArchivedEnvironment]) -> str:
    first = chosen[0].name
    listing = "\n".join(f"- `{a.name}`: `{a.environment.canonical}` ({', '.join(a.platforms)})"
                        for a in chosen)
    return f"""# Archived container environments

This file is an OCI image layout in one tar file, written by ligoenv from `{LOCKFILE_NAME}`.
Every blob is stored under its digest, so the environments below are the exact bits that were
locked. Each is listed in `index.json` under its environment name:

{listing}

## Run with ligoenv

    ligoenv restore THIS.tar                    # verify every blob, load into the local cache
    ligoenv run --lock {LOCKFILE_NAME} {first} -- CMD  # no registry needed
    ligoenv restore THIS.tar --to REGISTRY/PREFIX    # or host them again under the same digests

## Without ligoenv

    skopeo copy oci-archive:THIS.tar:{first} docker://REGISTRY/REPOSITORY:TAG
    apptainer build {first}.sif oci-archive:THIS.tar:{first}
    podman load -i THIS.tar

The manifest digests stay the same wherever the images are copied; compare them with the
`digest` fields of `{LOCKFILE_NAME}`.
"""


def _json_bytes(data: object) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def _date(when: datetime) -> str:
    return when.date().isoformat()
