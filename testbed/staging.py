"""Stage images for publisher tests the way the worker does: real manifests, completed trees."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from ligoenv.oci.digest import Digest
from ligoenv.oci.manifest import OCI_INDEX, OCI_MANIFEST, ImageManifest, parse_config, parse_manifest
from ligoenv.oci.platform import Platform
from ligoenv.store.completion import complete_tree
from ligoenv.store.index import manifest_record
from ligoenv_server.publishers.base import Publisher
from ligoenv_server.publishers.staged import StagedImage, StagedPlatform
from testbed.images import TAG_FILE, build_busybox_image
from testbed.ocibuild import Image, canonical_json

REGISTRY = "127.0.0.1:5000"
REPOSITORY = "lvk/lalsuite"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def manifest_of(image: Image) -> ImageManifest:
    raw = image.manifest_bytes()
    manifest = parse_manifest(raw, Digest.of_bytes(raw))
    assert isinstance(manifest, ImageManifest)
    return manifest


def unpack_like_worker(publisher: Publisher, image: Image, content: str) -> Path:
    """A staging tree as the unpacker would leave it (busybox + the tag file), completed."""
    tree: Path = publisher.staging_dir()
    (tree / "bin").mkdir()
    shutil.copy2("/bin/busybox", tree / "bin" / "busybox")
    (tree / "bin" / "sh").symlink_to("busybox")
    (tree / TAG_FILE).parent.mkdir(parents=True)
    (tree / TAG_FILE).write_text(content + "\n")
    config = image.config_bytes()
    complete_tree(tree, parse_config(config, Digest.of_bytes(config)))
    return tree


def stage(publisher: Publisher, content: str, *, tag: str | None = "nightly",
          platforms: tuple[str, ...] = ("linux/amd64",), when: datetime = T0,
          source: str = "webhook:distribution/test", repository: str = REPOSITORY,
          extra_index_platforms: tuple[str, ...] = ()) -> StagedImage:
    """Stage the image `content` names (its digest depends on it) for each platform.

    Several platforms make an OCI index; a platform whose image is already published is
    passed without a tree, like the worker does after `has_image()`.
    """
    staged = []
    for name in platforms:
        image = build_busybox_image(content, platform=Platform.parse(name))
        manifest = manifest_of(image)
        tree = None if publisher.has_image(manifest.digest) else unpack_like_worker(
            publisher, image, content)
        staged.append(StagedPlatform(name, manifest.digest, manifest_record(manifest, name), tree))
    if len(platforms) == 1 and not extra_index_platforms:
        top, media_type = staged[0].digest, OCI_MANIFEST
    else:
        top, media_type = Digest.of_bytes(canonical_json({"index": content, "p": platforms})), OCI_INDEX
    extra = {name: Digest.of_bytes(f"{content}/{name}".encode()) for name in extra_index_platforms}
    return StagedImage(REGISTRY, repository, tag, top, media_type, tuple(staged), source, when,
                       index_platforms=extra)


def tree_files(tree: Path) -> list[str]:
    return sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
