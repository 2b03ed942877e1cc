"""The publish root layout: unpacked images by digest, tag and digest links.

Layout (DESIGN.md): `.images/<xx>/<hex>/`, `<registry>/<repository>:<tag>` and
`<registry>/<repository>@sha256:<hex>` relative symlinks; the index files are placed by
`ligoenv.store.index.paths`; internal: `.chains/<xx>/<hex>/`, one tree per layer chain (OCI ChainID)
that images are cloned from.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from ligoenv.oci.atomicfile import fsync_dir
from ligoenv.oci.digest import Digest
from ligoenv.oci.errors import InvalidReference
from ligoenv.oci.reference import Reference
from ligoenv.store.errors import PublishError

IMAGES_DIR = ".images"
CHAINS_DIR = ".chains"  # one tree per layer chain (OCI ChainID); images are cloned from them


@dataclass(frozen=True)
class PublishRoot:
    """Paths inside one publish root. `include_registry=False` is the OSG layout (no host segment)."""

    root: Path
    include_registry: bool = True

    def relative_image_path(self, digest: Digest) -> str:
        return f"{IMAGES_DIR}/{digest.hex[:2]}/{digest.hex}"

    def image_dir(self, digest: Digest) -> Path:
        return self.root / self.relative_image_path(digest)

    def relative_chain_path(self, chain: Digest) -> str:
        return f"{CHAINS_DIR}/{chain.hex[:2]}/{chain.hex}"

    def chain_dir(self, chain: Digest) -> Path:
        """The unpacked tree of the layer chain `chain` (internal: readers use image paths)."""
        return self.root / self.relative_chain_path(chain)

    def tag_link(self, registry: str, repository: str, tag: str) -> Path:
        check_name(registry, repository, tag)
        return self._names_dir(registry) / f"{repository}:{tag}"

    def digest_link(self, registry: str, repository: str, digest: Digest) -> Path:
        check_name(registry, repository, None)
        return self._names_dir(registry) / f"{repository}@{digest}"

    def link_target(self, link: Path, digest: Digest) -> str:
        """The relative target that makes `link` point at the image of `digest`."""
        return os.path.relpath(self.image_dir(digest), link.parent)

    def point_link(self, link: Path, digest: Digest) -> bool:
        """Make `link` point at the image of `digest` atomically; False when it already did."""
        return replace_symlink(link, self.link_target(link, digest))

    def _names_dir(self, registry: str) -> Path:
        return self.root / registry if self.include_registry else self.root


def replace_symlink(link: Path, target: str) -> bool:
    """Create or atomically replace the symlink `link` -> `target`; False when already so.

    A reader sees either the old link or the new one, never no link: the new link is made
    under a temporary name in the same directory and renamed over the old one.
    """
    if link.is_symlink() and os.readlink(link) == target:
        return False
    if link.exists() and not link.is_symlink():
        raise PublishError(f"cannot replace {link}: it is not a symlink; move it away and retry")
    link.parent.mkdir(parents=True, exist_ok=True)
    temporary = link.parent / f".{link.name}.tmp-{secrets.token_hex(6)}"
    os.symlink(target, temporary)
    try:
        os.replace(temporary, link)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(link.parent)
    return True


def remove_symlink(link: Path) -> bool:
    """Remove the symlink `link` if it is one; False when there was nothing to remove."""
    if not link.is_symlink():
        return False
    link.unlink()
    fsync_dir(link.parent)
    return True


def check_name(registry: str, repository: str, tag: str | None) -> None:
    # Names become paths: only names that parse as a reference may, so that no `..`, empty
    # or absolute component can ever place a link outside the root.
    text = f"{registry}/{repository}" + (f":{tag}" if tag is not None else "")
    try:
        ref: Reference | None = Reference.parse(text)
    except InvalidReference:
        ref = None
    if ref is None or (ref.registry, ref.repository, ref.tag if tag is not None else None) != (
        registry, repository, tag
    ):
        raise PublishError(f"refusing to publish under the invalid name {text!r}")
