"""Small real images for tests: busybox-based, multi-platform, Docker schema 2, and built with umoci.

`push_image()` pushes with our own RegistryClient; `push_umoci_image()` builds a layout with
umoci and pushes it with skopeo, an independent implementation of both halves.
"""

from __future__ import annotations

import functools
import io
import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ligoenv.oci.credentials import Credentials
from ligoenv.oci.digest import Digest
from ligoenv.oci.manifest import (
    DOCKER_CONFIG,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    ImageConfig,
    parse_config,
)
from ligoenv.oci.platform import DEFAULT_PLATFORM, Platform
from ligoenv.oci.reference import Reference
from ligoenv.oci.registry import RegistryClient
from ligoenv.oci.unpack import apply_layer
from testbed.ocibuild import LAYER_GZIP, LAYER_ZSTD, Entry, Image, Layer, canonical_json
from testbed.registry import skopeo_digest, skopeo_push

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "ls", "cat", "echo", "env", "true", "false", "id", "pwd", "test", "mkdir", "rm",
           "sleep", "uname", "wc", "head", "grep", "sed", "stat", "readlink")
TAG_FILE = "etc/ligoenv-image-tag"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
ARM64 = Platform("linux", "arm64")
Files = Mapping[str, bytes | str]


@functools.cache
def busybox_layer(media_type: str = LAYER_GZIP) -> Layer:
    """The shared base layer: /bin/busybox, applet symlinks to it, and the usual top directories."""
    entries = [Entry(name, "dir", mode=0o755) for name in ("bin", "etc", "usr", "usr/bin", "var")]
    entries.append(Entry("tmp", "dir", mode=0o1777))
    entries.append(Entry("bin/busybox", data=BUSYBOX.read_bytes(), mode=0o755))
    entries += [Entry(f"bin/{applet}", "symlink", target="busybox") for applet in APPLETS]
    return Layer.from_entries(entries, media_type)


def files_layer(files: Files, media_type: str = LAYER_GZIP) -> Layer:
    """A layer holding `files` (path -> content), with their parent directories."""
    entries: list[Entry] = []
    seen: set[str] = set()
    for path in sorted(files):
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent not in seen:
                seen.add(parent)
                entries.append(Entry(parent, "dir", mode=0o755))
        content = files[path]
        data = content.encode() if isinstance(content, str) else content
        entries.append(Entry("/".join(parts), data=data, mode=0o644))
    return Layer.from_entries(entries, media_type)


def build_busybox_image(tag: str = "latest", files: Files | None = None, *,
                        platform: Platform = DEFAULT_PLATFORM, media_type: str = LAYER_GZIP,
                        extra_layers: Sequence[Layer] = (), cmd: Sequence[str] = ("/bin/sh",),
                        env: Sequence[str] = ("PATH=/usr/local/bin:/usr/bin:/bin",),
                        entrypoint: Sequence[str] = (), working_dir: str = "") -> Image:
    """busybox base layer, then a layer with /etc/ligoenv-image-tag (= tag) and `files`, then extras.

    Images for different tags share the base layer but differ in digest.
    """
    top = files_layer({TAG_FILE: tag + "\n", **(files or {})}, media_type)
    return Image(layers=[busybox_layer(media_type), top, *extra_layers], platform=platform,
                 env=tuple(env), cmd=tuple(cmd), entrypoint=tuple(entrypoint),
                 working_dir=working_dir, labels={"org.opencontainers.image.version": tag})


def unpack_image(image: Image, target: Path) -> ImageConfig:
    """Unpack `image`'s layers into `target` with the real unpacker; its parsed config."""
    for layer in image.layers:
        compression = {LAYER_GZIP: "gzip", LAYER_ZSTD: "zstd"}.get(layer.media_type, "none")
        apply_layer(io.BytesIO(layer.blob), compression, target, expected_diff_id=layer.diff_id)
    raw = image.config_bytes()
    return parse_config(raw, Digest.of_bytes(raw))


def build_multiplatform_images(tag: str = "latest", files: Files | None = None) -> list[Image]:
    """The same files for linux/amd64 and linux/arm64 (busybox is amd64 in both: only tests read it)."""
    return [build_busybox_image(tag, files, platform=p) for p in (DEFAULT_PLATFORM, ARM64)]


def docker_manifest_bytes(image: Image) -> bytes:
    """`image` as a Docker schema 2 manifest (gzip layers only)."""
    config = image.config_bytes()
    layers = []
    for layer in image.layers:
        if layer.media_type != LAYER_GZIP:
            raise ValueError("a Docker schema 2 image needs gzip layers")
        layers.append({**layer.descriptor(), "mediaType": DOCKER_LAYER_GZIP})
    return canonical_json({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "digest": str(Digest.of_bytes(config)), "size": len(config)},
        "layers": layers,
    })


def index_bytes(images: Sequence[Image], docker: bool = False) -> bytes:
    """An OCI index (or Docker manifest list) over `images`."""
    entries = []
    for image in images:
        raw = docker_manifest_bytes(image) if docker else image.manifest_bytes()
        platform = {"os": image.platform.os, "architecture": image.platform.architecture}
        if image.platform.variant:
            platform["variant"] = image.platform.variant
        entries.append({"mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
                        "digest": str(Digest.of_bytes(raw)), "size": len(raw), "platform": platform})
    return canonical_json({"schemaVersion": 2, "mediaType": DOCKER_LIST if docker else OCI_INDEX,
                           "manifests": entries})


def push_image(registry_host: str, repository: str, tag: str,
               image_or_layout: Image | Sequence[Image] | Path, *, docker: bool = False,
               credentials: Credentials | None = None) -> Digest:
    """Push an Image, a list of Images (as an index) or an OCI layout's `tag`; returns the tag's digest.

    `docker=True` pushes Docker schema 2 manifests (and a manifest list) instead of OCI ones.
    """
    with RegistryClient(registry_host, credentials=credentials, anonymous=credentials is None) as client:
        if isinstance(image_or_layout, Path):
            return _push_layout(client, repository, tag, image_or_layout)
        if isinstance(image_or_layout, Image):
            return _push_one(client, repository, tag, image_or_layout, docker)
        for image in image_or_layout:
            _push_one(client, repository, None, image, docker)
        raw = index_bytes(image_or_layout, docker)
        return client.push_manifest(repository, tag, raw, DOCKER_LIST if docker else OCI_INDEX)


def _push_one(client: RegistryClient, repository: str, tag: str | None, image: Image,
              docker: bool) -> Digest:
    for layer in image.layers:
        client.push_blob(repository, layer.blob)
    client.push_blob(repository, image.config_bytes())
    raw = docker_manifest_bytes(image) if docker else image.manifest_bytes()
    reference = tag or str(Digest.of_bytes(raw))
    return client.push_manifest(repository, reference, raw, DOCKER_MANIFEST if docker else OCI_MANIFEST)


def _push_layout(client: RegistryClient, repository: str, tag: str, layout: Path) -> Digest:
    entries = json.loads((layout / "index.json").read_text())["manifests"]
    named = [e for e in entries if e.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
    if not named and len(entries) == 1:
        named = entries
    if not named:
        raise ValueError(f"no manifest tagged {tag!r} in {layout}")
    return _push_layout_manifest(client, repository, tag, layout, named[0])


def _push_layout_manifest(client: RegistryClient, repository: str, reference: str | None,
                          layout: Path, descriptor: dict[str, Any]) -> Digest:
    raw = _layout_blob(layout, descriptor["digest"]).read_bytes()
    manifest = json.loads(raw)
    media_type = manifest.get("mediaType") or descriptor["mediaType"]
    for child in manifest.get("manifests", []):
        _push_layout_manifest(client, repository, None, layout, child)
    for blob in [manifest.get("config"), *manifest.get("layers", [])]:
        if blob:
            client.push_blob(repository, _layout_blob(layout, blob["digest"]), Digest.parse(blob["digest"]))
    return client.push_manifest(repository, reference or descriptor["digest"], raw, media_type)


def _layout_blob(layout: Path, digest: str) -> Path:
    algorithm, hexpart = digest.split(":", 1)
    return layout / "blobs" / algorithm / hexpart


def build_umoci_layout(workdir: Path, tag: str, files: Files, *, method: str = "repack") -> Path:
    """An OCI layout made by umoci: busybox as /bin/busybox and /bin/sh, plus `files`. Returns it.

    `repack` (umoci unpack, edit the rootfs, umoci repack) makes valid layers. `insert` uses
    `umoci insert`, which in umoci < 0.4.8 (Debian 12 ships 0.4.7) writes layers without the tar
    footer and the last file's padding (umoci issue #436): such layers exist in the wild.
    """
    layout, image = workdir / "umoci-layout", f"{workdir / 'umoci-layout'}:{tag}"
    _umoci("init", "--layout", str(layout))
    _umoci("new", "--image", image)
    if method == "repack":
        bundle = workdir / "umoci-bundle"
        _umoci("unpack", "--rootless", "--image", image, str(bundle))
        _write_tree(bundle / "rootfs", files)
        _umoci("repack", "--image", image, str(bundle))
    elif method == "insert":
        source = workdir / "umoci-src"
        _write_tree(source, files)
        _umoci("insert", "--rootless", "--image", image, str(source / "bin"), "/bin")
        for top in sorted(p.name for p in source.iterdir() if p.name != "bin"):
            _umoci("insert", "--rootless", "--image", image, str(source / top), f"/{top}")
    else:
        raise ValueError(f"unknown umoci method {method!r}: expected repack or insert")
    _umoci("config", "--image", image, "--os", "linux", "--architecture", "amd64",
           "--config.cmd", "/bin/sh")
    return layout


def _write_tree(root: Path, files: Files) -> None:
    (root / "bin").mkdir(parents=True, exist_ok=True)
    (root / "bin" / "busybox").write_bytes(BUSYBOX.read_bytes())
    (root / "bin" / "busybox").chmod(0o755)
    (root / "bin" / "sh").symlink_to("busybox")
    for path, content in files.items():
        dest = root / path.strip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(content.encode() if isinstance(content, str) else content)


def push_umoci_image(registry_host: str, repository: str, tag: str, workdir: Path,
                     files: Files, *, method: str = "repack") -> Digest:
    """Build with umoci, push with `skopeo copy`; returns the digest the registry serves."""
    layout = build_umoci_layout(workdir, tag, files, method=method)
    skopeo_push(layout, tag, f"{registry_host}/{repository}:{tag}")
    return Digest.parse(skopeo_digest(f"{registry_host}/{repository}:{tag}"))


def _umoci(*args: str) -> None:
    subprocess.run(["umoci", *args], check=True, capture_output=True)


def push_nested_index(registry_host: str, repository: str, tag: str) -> tuple[Digest, Digest]:
    """An index whose linux/amd64 entry is itself an index (which the spec allows, and we refuse).

    Returns (outer, inner) digests; `tag` names the outer one.
    """
    inner = push_image(registry_host, repository, f"{tag}-inner", [build_busybox_image(tag)])
    with RegistryClient(registry_host, anonymous=True) as client:
        inner_raw = client.fetch_manifest(Reference(registry_host, repository, None, inner)).raw
        outer = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_INDEX, "digest": str(inner), "size": len(inner_raw),
             "platform": {"os": "linux", "architecture": "amd64"}}]})
        return client.push_manifest(repository, tag, outer, OCI_INDEX), inner
