"""Layer chains: publish the layers below an image's top one as chain trees (by OCI ChainID),
only those missing; the image's own tree is a clone of the highest of them with its top layer
applied.

Chain n is chain n-1's tree with layer n applied; equal ChainIDs mean equal trees, so chains are
shared by every image, tag and repository built on the same layers. An image's whole stack is
made a chain only once another image builds on it (then it is a chain below that one's top): a
nightly rebuild that changes its top layer makes one new tree, its image, and applies that
layer alone.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

from ligoenv.oci.cache import CorruptCacheEntry, LayerCache
from ligoenv.oci.digest import Digest, chain_ids
from ligoenv.oci.manifest import Descriptor, ImageConfig, ImageManifest, layer_compression
from ligoenv.oci.pull import Downloads
from ligoenv.oci.registry import RegistryClient
from ligoenv.oci.unpack import UnpackOptions, apply_layer
from ligoenv.store.errors import PublishError

from .publishers.base import ChainStep, Publisher
from .publishers.staged import Fill

log = logging.getLogger(__name__)


def built_from(config: ImageConfig) -> list[Digest]:
    """The layer chains an image's tree is built from, bottom to top: all its layers but the
    top one (none for an image of one layer, whose tree starts empty). Its index record lists
    them (`chains`; the last is its `chain`), and garbage collection keeps them while it stays."""
    return chain_ids(config.diff_ids)[:-1]


@dataclass(frozen=True)
class ChainedImage:
    """An image whose chains are published: its tree is `base`'s (empty when None) with `top`
    applied."""

    base: Digest | None
    top: Fill  # the image's top layer
    layers: _Layers

    @property
    def written(self) -> int:
        """Bytes written by the chains made for it, and by its top layer once applied."""
        return self.layers.written


def build_chains(publisher: Publisher, client: RegistryClient, repository: str,
                 manifest: ImageManifest, config: ImageConfig, cache: LayerCache,
                 options: UnpackOptions) -> ChainedImage:
    """Publish the chains below `manifest`'s top layer that are missing, downloading only their
    layers and the top one; each chain's layer is applied as soon as it has arrived, while the
    later ones download. A cached layer found corrupt is downloaded once more."""
    chains = built_from(config)
    for attempt in (1, 2):
        start = _first_missing(publisher, chains)
        log.info("unpacking", extra={"manifest": str(manifest.digest),
                                     "layers": len(manifest.layers) - start, "reused_chains": start})
        try:
            with Downloads(client, repository, manifest.layers[start:], cache) as downloads:
                layers = _Layers(cache, options, downloads)
                steps = [ChainStep(chains[i], layers.fill(manifest.layers[i], config.diff_ids[i]),
                                   functools.partial(downloads.wait, manifest.layers[i]))
                         for i in range(start, len(chains))]
                if steps:
                    publisher.add_chains(chains[start - 1] if start else None, steps)
            break
        except CorruptCacheEntry as corrupt:
            if attempt == 2:
                raise
            log.warning("%s: downloading it again", corrupt)
    top = _retried_if_corrupt(layers.fill(manifest.layers[-1], config.diff_ids[-1]))
    return ChainedImage(chains[-1] if chains else None, top, layers)


def _retried_if_corrupt(fill: Fill) -> Fill:
    """`fill`, failing the job for a retry if its cached layer is found corrupt (the cache has
    dropped it: the retry downloads it again). The publisher applies it to the image's tree,
    half-written by then: only a new tree may be tried again."""
    def apply(tree: Path) -> set[str]:
        try:
            return fill(tree)
        except CorruptCacheEntry as corrupt:
            raise PublishError(f"{corrupt}: publishing again", temporary=True) from None
    return apply


def _first_missing(publisher: Publisher, chains: list[Digest]) -> int:
    """The index of the lowest chain to build: one above the highest chain published."""
    for depth in range(len(chains), 0, -1):
        if publisher.has_chain(chains[depth - 1]):
            return depth
    return 0


class _Layers:
    """Applies cached layers, counting what they expand to against the image's cap (the chains
    found published were capped when they were built)."""

    def __init__(self, cache: LayerCache, options: UnpackOptions, downloads: Downloads) -> None:
        self.cache = cache
        self.options = options
        self.downloads = downloads
        self.expanded = 0
        self.written = 0

    def fill(self, layer: Descriptor, diff_id: Digest) -> Fill:
        def apply(tree: Path) -> set[str]:
            changed: set[str] = set()
            # Read as it downloads, or from the cache through the digest check: a changed cached
            # blob must say so (and leave the cache) instead of being blamed on the image as a
            # bad archive.
            with self.downloads.open(layer) as blob:
                report = apply_layer(blob, layer_compression(layer.media_type), tree, self.options,
                                     diff_id, expanded_before=self.expanded,
                                     compressed_size=layer.size, changed=changed)
            self.expanded += report.expanded_bytes
            self.written += report.bytes_written
            return changed
        return apply
