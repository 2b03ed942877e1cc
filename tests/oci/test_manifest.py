"""Parsing manifests, indexes and configs, choosing a platform, and layer media types."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ligoenv.oci.digest import Digest
from ligoenv.oci.errors import DigestMismatch, PlatformNotFound, RegistryError
from ligoenv.oci.manifest import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    ImageIndex,
    ImageManifest,
    layer_compression,
    parse_config,
    parse_manifest,
)
from ligoenv.oci.platform import Platform
from testbed.images import build_busybox_image, docker_manifest_bytes, index_bytes
from testbed.ocibuild import LAYER_ZSTD


def parse(raw: bytes, content_type: str = "") -> ImageManifest | ImageIndex:
    return parse_manifest(raw, Digest.of_bytes(raw), content_type)


def descriptor(n: int, **extra: Any) -> dict[str, Any]:
    return {"mediaType": OCI_MANIFEST, "digest": f"sha256:{n:064x}", "size": 100 + n, **extra}


def index_raw(*platforms: dict[str, str], media_type: str | None = OCI_INDEX) -> bytes:
    data: dict[str, Any] = {"schemaVersion": 2,
                            "manifests": [descriptor(i, platform=p) for i, p in enumerate(platforms)]}
    if media_type:
        data["mediaType"] = media_type
    return json.dumps(data).encode()


def test_oci_manifest() -> None:
    image = build_busybox_image("m", media_type=LAYER_ZSTD)
    manifest = parse(image.manifest_bytes())
    assert isinstance(manifest, ImageManifest) and manifest.media_type == OCI_MANIFEST
    assert [layer.digest for layer in manifest.layers] == [layer.digest for layer in image.layers]
    assert manifest.total_size == manifest.config.size + sum(len(layer.blob) for layer in image.layers)
    assert manifest.raw == image.manifest_bytes()


def test_docker_manifest_and_list() -> None:
    image = build_busybox_image("d")
    manifest = parse(docker_manifest_bytes(image))
    assert isinstance(manifest, ImageManifest) and manifest.media_type == DOCKER_MANIFEST
    assert {layer_compression(layer.media_type) for layer in manifest.layers} == {"gzip"}
    listing = parse(index_bytes([image], docker=True))
    assert isinstance(listing, ImageIndex) and listing.media_type == DOCKER_LIST


def test_missing_media_type_is_decided_by_content_type_or_shape() -> None:
    raw = index_raw({"os": "linux", "architecture": "amd64"}, media_type=None)
    assert parse(raw).media_type == OCI_INDEX
    assert parse(raw, f"{DOCKER_LIST}; charset=utf-8").media_type == DOCKER_LIST
    manifest = json.loads(build_busybox_image("x").manifest_bytes())
    del manifest["mediaType"]
    assert parse(json.dumps(manifest).encode()).media_type == OCI_MANIFEST


@pytest.mark.parametrize(("raw", "message"), [
    (b"not json", "not valid JSON"),
    (b"[1, 2]", "not a JSON object"),
    (json.dumps({"schemaVersion": 1, "mediaType": "application/vnd.docker.distribution.manifest.v1+json"})
     .encode(), "schema 1 manifests are not supported"),
    (json.dumps({"mediaType": OCI_INDEX}).encode(), "index without a manifests list"),
    (json.dumps({"mediaType": OCI_MANIFEST, "config": descriptor(1)}).encode(),
     "manifest without a layers list"),
    (json.dumps({"mediaType": OCI_MANIFEST, "config": {"digest": "sha256:x", "size": 1}, "layers": []})
     .encode(), "invalid digest"),
    (json.dumps({"mediaType": OCI_MANIFEST, "config": descriptor(1, size=-1), "layers": []}).encode(),
     "negative size"),
    (json.dumps({"mediaType": OCI_MANIFEST, "config": "nope", "layers": []}).encode(),
     "descriptor is not an object"),
])
def test_malformed_manifests(raw: bytes, message: str) -> None:
    with pytest.raises(Exception, match=message) as caught:
        parse(raw)
    assert isinstance(caught.value, RegistryError) or "invalid digest" in message


def test_platform_selection() -> None:
    index = parse(index_raw({"os": "linux", "architecture": "amd64"},
                            {"os": "linux", "architecture": "arm64", "variant": "v8"},
                            {"os": "linux", "architecture": "arm", "variant": "v7"},
                            {"os": "unknown", "architecture": "unknown"}))
    assert isinstance(index, ImageIndex)
    assert index.select(Platform.parse("linux/amd64")).digest.hex.endswith("0")
    assert index.select(Platform.parse("linux/arm64")).digest.hex.endswith("1")
    assert index.select(Platform.parse("linux/aarch64/v8")).digest.hex.endswith("1")
    assert index.select(Platform.parse("linux/arm/v7")).digest.hex.endswith("2")


def test_runnable_platforms_first_entry_wins_as_in_select() -> None:
    index = parse(index_raw({"os": "linux", "architecture": "amd64"},
                            {"os": "linux", "architecture": "amd64"},
                            {"os": "linux", "architecture": "aarch64", "variant": "v8"},
                            {"os": "unknown", "architecture": "unknown"},
                            {"os": "linux", "architecture": ""}))
    assert isinstance(index, ImageIndex)
    runnable = index.runnable_platforms()
    assert runnable == {"linux/amd64": Digest.parse(f"sha256:{0:064x}"),
                        "linux/arm64": Digest.parse(f"sha256:{2:064x}")}
    assert runnable["linux/amd64"] == index.select(Platform.parse("linux/amd64")).digest


def test_missing_platform_lists_the_available_ones() -> None:
    index = parse(index_raw({"os": "linux", "architecture": "arm64"},
                            {"os": "linux", "architecture": "amd64"},
                            {"os": "unknown", "architecture": "unknown"}))
    assert isinstance(index, ImageIndex)
    with pytest.raises(PlatformNotFound) as caught:
        index.select(Platform.parse("linux/ppc64le"))
    assert str(caught.value) == (f"no image for platform linux/ppc64le in index {index.digest.short}; "
                                 "available: linux/amd64, linux/arm64")


def test_config() -> None:
    image = build_busybox_image("cfg", cmd=("/bin/sh", "-c", "true"))
    raw = image.config_bytes()
    config = parse_config(raw, Digest.of_bytes(raw))
    assert config.diff_ids == tuple(layer.diff_id for layer in image.layers)
    assert (config.os, config.architecture) == ("linux", "amd64")
    assert config.cmd == ("/bin/sh", "-c", "true")
    assert config.env == ("PATH=/usr/local/bin:/usr/bin:/bin",)
    assert config.labels == {"org.opencontainers.image.version": "cfg"}


def test_config_digest_is_checked() -> None:
    raw = build_busybox_image("cfg").config_bytes()
    with pytest.raises(DigestMismatch, match="config sha256:"):
        parse_config(raw + b" ", Digest.of_bytes(raw))


@pytest.mark.parametrize(("media_type", "compression"), [
    ("application/vnd.oci.image.layer.v1.tar", "none"),
    ("application/vnd.oci.image.layer.v1.tar+gzip", "gzip"),
    ("application/vnd.oci.image.layer.v1.tar+zstd", "zstd"),
    ("application/vnd.docker.image.rootfs.diff.tar.gzip", "gzip"),
])
def test_layer_compression(media_type: str, compression: str) -> None:
    assert layer_compression(media_type) == compression


def test_unknown_layer_type() -> None:
    with pytest.raises(RegistryError, match="unsupported layer media type 'application/x-squashfs'"):
        layer_compression("application/x-squashfs")
