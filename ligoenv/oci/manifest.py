"""Manifests, indexes and image configs: parsed strictly from the exact bytes a registry served."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ligoenv.oci.digest import Digest
from ligoenv.oci.errors import DigestMismatch, PlatformNotFound, RegistryError, UnsupportedImage
from ligoenv.oci.platform import Platform

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
ALL_MANIFEST_TYPES = MANIFEST_TYPES + INDEX_TYPES
ACCEPT_HEADER = ", ".join(ALL_MANIFEST_TYPES)

_LAYER_COMPRESSION = {
    "application/vnd.oci.image.layer.v1.tar": "none",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "none",
}


def layer_compression(media_type: str) -> str:
    """`none`, `gzip` or `zstd` for a layer media type; RegistryError for anything else."""
    try:
        return _LAYER_COMPRESSION[media_type]
    except KeyError:
        raise RegistryError(f"unsupported layer media type {media_type!r}") from None


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def from_json(cls, data: Any, what: str) -> Descriptor:
        if not isinstance(data, dict):
            raise RegistryError(f"{what}: descriptor is not an object")
        try:
            digest = Digest.parse(str(data["digest"]))
            size = int(data["size"])
            media_type = str(data.get("mediaType", ""))
        except (KeyError, TypeError, ValueError) as error:
            raise RegistryError(f"{what}: malformed descriptor ({error})") from None
        if size < 0:
            raise RegistryError(f"{what}: negative size in descriptor")
        platform = None
        if isinstance(data.get("platform"), dict):
            p = data["platform"]
            platform = Platform(str(p.get("os", "")), str(p.get("architecture", "")),
                                p.get("variant") or None)
        annotations = data.get("annotations") or {}
        return cls(media_type, digest, size, platform, dict(annotations))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest),
                               "size": self.size}
        if self.platform is not None:
            out["platform"] = {"os": self.platform.os, "architecture": self.platform.architecture}
            if self.platform.variant:
                out["platform"]["variant"] = self.platform.variant
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class ImageManifest:
    """One platform's image: a config blob and an ordered list of layer blobs."""

    media_type: str
    digest: Digest
    config: Descriptor
    layers: tuple[Descriptor, ...]
    raw: bytes = field(repr=False, compare=False)

    @property
    def total_size(self) -> int:
        return self.config.size + sum(layer.size for layer in self.layers)


@dataclass(frozen=True)
class ImageIndex:
    """A multi-platform index (OCI index or Docker manifest list)."""

    media_type: str
    digest: Digest
    manifests: tuple[Descriptor, ...]
    raw: bytes = field(repr=False, compare=False)

    def platforms(self) -> list[Platform]:
        return [m.platform for m in self.manifests if m.platform is not None]

    def runnable_platforms(self) -> dict[str, Digest]:
        """`os/arch[/variant]` -> manifest digest; a platform listed twice keeps its first entry,
        as `select()` does. Entries for unknown/unknown are build attestations, not images."""
        out: dict[str, Digest] = {}
        for descriptor in self.manifests:
            platform = descriptor.platform
            if platform is None or "unknown" in (platform.os, platform.architecture):
                continue
            if platform.os and platform.architecture:
                out.setdefault(str(Platform.parse(str(platform))), descriptor.digest)
        return out

    def select(self, wanted: Platform) -> Descriptor:
        """The manifest for `wanted`; PlatformNotFound names the platforms that exist."""
        for descriptor in self.manifests:
            if descriptor.platform is not None and wanted.matches(descriptor.platform):
                return descriptor
        available = ", ".join(sorted({str(p) for p in self.platforms() if p.os != "unknown"}))
        raise PlatformNotFound(
            f"no image for platform {wanted} in index {self.digest.short}; "
            f"available: {available or 'none'}"
        )


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image config that ligoenv uses."""

    digest: Digest
    os: str
    architecture: str
    diff_ids: tuple[Digest, ...]
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    labels: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    raw: bytes = field(default=b"", repr=False, compare=False)


def platform_manifest(found: ImageManifest | ImageIndex, index: Digest, name: str) -> ImageManifest:
    """`found`, fetched for an entry of `index`: an image manifest, or UnsupportedImage (for good)."""
    if isinstance(found, ImageIndex):
        raise UnsupportedImage(f"{name}: index {index.short} points at another index "
                               f"({found.digest.short}), which ligoenv does not support")
    return found


def parse_manifest(raw: bytes, digest: Digest, content_type: str = "") -> ImageManifest | ImageIndex:
    """Parse manifest bytes whose digest the caller has already verified."""
    what = f"manifest {digest.short}"
    data = _load_json(raw, what)
    media_type = str(data.get("mediaType") or "")
    content_type = content_type.split(";")[0].strip()
    if not media_type:
        # OCI allows mediaType to be absent; the content type or the shape decides.
        if content_type in ALL_MANIFEST_TYPES:
            media_type = content_type
        else:
            media_type = OCI_INDEX if "manifests" in data else OCI_MANIFEST
    if media_type in INDEX_TYPES:
        manifests = data.get("manifests")
        if not isinstance(manifests, list):
            raise RegistryError(f"{what}: index without a manifests list")
        return ImageIndex(media_type, digest,
                          tuple(Descriptor.from_json(m, what) for m in manifests), raw)
    if media_type in MANIFEST_TYPES:
        layers = data.get("layers")
        if not isinstance(layers, list):
            raise RegistryError(f"{what}: manifest without a layers list")
        config = Descriptor.from_json(data.get("config"), what)
        return ImageManifest(media_type, digest, config,
                             tuple(Descriptor.from_json(layer, what) for layer in layers), raw)
    raise RegistryError(
        f"{what}: unsupported media type {media_type!r} (schema 1 manifests are not supported)"
    )


def parse_config(raw: bytes, digest: Digest) -> ImageConfig:
    """Parse an image config blob whose digest is checked here."""
    digest.verify_bytes(raw, f"config {digest.short}")
    what = f"config {digest.short}"
    data = _load_json(raw, what)
    rootfs = data.get("rootfs") or {}
    try:
        diff_ids = tuple(Digest.parse(str(d)) for d in rootfs.get("diff_ids", []))
    except Exception as error:
        raise DigestMismatch(f"{what}: bad rootfs.diff_ids ({error})") from None
    cfg = data.get("config") or {}
    return ImageConfig(
        digest=digest,
        os=str(data.get("os", "")),
        architecture=str(data.get("architecture", "")),
        diff_ids=diff_ids,
        env=tuple(str(e) for e in cfg.get("Env") or ()),
        entrypoint=tuple(str(e) for e in cfg.get("Entrypoint") or ()),
        cmd=tuple(str(c) for c in cfg.get("Cmd") or ()),
        working_dir=str(cfg.get("WorkingDir") or ""),
        user=str(cfg.get("User") or ""),
        labels={str(k): str(v) for k, v in (cfg.get("Labels") or {}).items()},
        raw=raw,
    )


def _load_json(raw: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RegistryError(f"{what}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise RegistryError(f"{what}: not a JSON object")
    return data
