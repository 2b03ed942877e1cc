"""Build small images and write them as OCI image layouts.

Used by the demo, the benchmarks and the tests to make real images without a container
engine: layers are tar archives made with `tarfile`, compressed, and stored by digest.
`skopeo copy oci:DIR:TAG docker://...` or our registry client then pushes them.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ligoenv.oci.digest import Digest
from ligoenv.oci.manifest import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST
from ligoenv.oci.platform import DEFAULT_PLATFORM, Platform

LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
FIXED_MTIME = 1_700_000_000


@dataclass
class Entry:
    """One tar member: a file, directory, symlink, hardlink or device in a layer."""

    path: str
    kind: str = "file"  # file | dir | symlink | hardlink | chardev | blockdev | fifo
    data: bytes = b""
    mode: int = 0o644
    target: str = ""  # link target for symlink/hardlink
    uid: int = 0
    gid: int = 0
    mtime: int = FIXED_MTIME

    def tarinfo(self) -> tarfile.TarInfo:
        info = tarfile.TarInfo(self.path)
        info.mode = self.mode
        info.uid, info.gid, info.mtime = self.uid, self.gid, self.mtime
        kinds = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                 "hardlink": tarfile.LNKTYPE, "chardev": tarfile.CHRTYPE,
                 "blockdev": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}
        info.type = kinds[self.kind]
        if self.kind == "file":
            info.size = len(self.data)
        if self.kind in ("symlink", "hardlink"):
            info.linkname = self.target
        return info


def tar_bytes(entries: Iterable[Entry]) -> bytes:
    """An uncompressed tar archive of `entries`, in order, as bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = entry.tarinfo()
            tar.addfile(info, io.BytesIO(entry.data) if entry.kind == "file" else None)
    return buffer.getvalue()


def compress(tar: bytes, media_type: str) -> bytes:
    if media_type == LAYER_GZIP:
        return gzip.compress(tar, compresslevel=6, mtime=0)
    if media_type == LAYER_ZSTD:
        import zstandard

        return zstandard.ZstdCompressor().compress(tar)
    return tar


@dataclass
class Layer:
    """A layer blob: compressed bytes, their digest, and the digest of the uncompressed tar."""

    blob: bytes
    media_type: str
    diff_id: Digest

    @classmethod
    def from_tar(cls, tar: bytes, media_type: str = LAYER_GZIP) -> Layer:
        return cls(compress(tar, media_type), media_type, Digest.of_bytes(tar))

    @classmethod
    def from_entries(cls, entries: Iterable[Entry], media_type: str = LAYER_GZIP) -> Layer:
        return cls.from_tar(tar_bytes(entries), media_type)

    @property
    def digest(self) -> Digest:
        return Digest.of_bytes(self.blob)

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": str(self.digest), "size": len(self.blob)}


@dataclass
class Image:
    """An image to write: layers plus the config fields ligoenv cares about."""

    layers: Sequence[Layer]
    platform: Platform = DEFAULT_PLATFORM
    env: Sequence[str] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    entrypoint: Sequence[str] = ()
    cmd: Sequence[str] = ("/bin/sh",)
    labels: dict[str, str] = field(default_factory=dict)
    working_dir: str = ""

    def config_bytes(self) -> bytes:
        config: dict[str, Any] = {
            "architecture": self.platform.architecture,
            "os": self.platform.os,
            "config": {"Env": list(self.env), "Cmd": list(self.cmd)},
            "rootfs": {"type": "layers", "diff_ids": [str(layer.diff_id) for layer in self.layers]},
            "history": [{"created_by": "testbed.ocibuild"} for _ in self.layers],
        }
        if self.platform.variant:
            config["variant"] = self.platform.variant
        if self.entrypoint:
            config["config"]["Entrypoint"] = list(self.entrypoint)
        if self.labels:
            config["config"]["Labels"] = dict(self.labels)
        if self.working_dir:
            config["config"]["WorkingDir"] = self.working_dir
        return canonical_json(config)

    def manifest_bytes(self) -> bytes:
        config = self.config_bytes()
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": str(Digest.of_bytes(config)),
                       "size": len(config)},
            "layers": [layer.descriptor() for layer in self.layers],
        }
        return canonical_json(manifest)


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


class LayoutWriter:
    """Writes blobs and tagged manifests into an OCI image layout directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self._index_path = root / "index.json"
        if not self._index_path.exists():
            self._write_index([])

    def blob(self, data: bytes) -> Digest:
        digest = Digest.of_bytes(data)
        path = self.root / "blobs" / "sha256" / digest.hex
        if not path.exists():
            path.write_bytes(data)
        return digest

    def add_image(self, image: Image, tag: str | None = None) -> Digest:
        """Write an image's blobs and manifest; tag it in index.json. Returns the manifest digest."""
        for layer in image.layers:
            self.blob(layer.blob)
        self.blob(image.config_bytes())
        manifest = image.manifest_bytes()
        digest = self.blob(manifest)
        self._add_to_index(OCI_MANIFEST, digest, len(manifest), tag, image.platform)
        return digest

    def add_index(self, images: Sequence[Image], tag: str | None = None) -> Digest:
        """Write a multi-platform index of `images`; tag it. Returns the index digest."""
        entries = []
        for image in images:
            for layer in image.layers:
                self.blob(layer.blob)
            self.blob(image.config_bytes())
            manifest = image.manifest_bytes()
            digest = self.blob(manifest)
            platform: dict[str, str] = {"os": image.platform.os,
                                        "architecture": image.platform.architecture}
            if image.platform.variant:
                platform["variant"] = image.platform.variant
            entries.append({"mediaType": OCI_MANIFEST, "digest": str(digest),
                            "size": len(manifest), "platform": platform})
        index = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
        digest = self.blob(index)
        self._add_to_index(OCI_INDEX, digest, len(index), tag, None)
        return digest

    def _add_to_index(self, media_type: str, digest: Digest, size: int, tag: str | None,
                      platform: Platform | None) -> None:
        manifests = json.loads(self._index_path.read_text())["manifests"]
        if tag is not None:
            manifests = [m for m in manifests
                         if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag]
        entry: dict[str, Any] = {"mediaType": media_type, "digest": str(digest), "size": size}
        if tag is not None:
            entry["annotations"] = {"org.opencontainers.image.ref.name": tag}
        if platform is not None:
            entry["platform"] = {"os": platform.os, "architecture": platform.architecture}
        manifests.append(entry)
        self._write_index(manifests)

    def _write_index(self, manifests: list[dict[str, Any]]) -> None:
        self._index_path.write_bytes(
            canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})
        )
