"""Publishing by layer chain, against the real registry and umoci: each chain and image tree is
the image's unpacked root (plus completion), a rebuild applies only its new layers, and what was
published before is left exactly as it was."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ligoenv.oci.cache import LayerCache
from ligoenv.oci.digest import Digest, chain_ids
from ligoenv.oci.manifest import parse_config
from ligoenv.store.completion import complete_tree
from ligoenv.store.errors import PublishError
from ligoenv_server.config import ServerConfig, load_config
from ligoenv_server.jobs import PublishRequest
from ligoenv_server.pipeline import RequestProcessor
from ligoenv_server.publishers.base import Publisher
from ligoenv_server.publishers.directory import DirectoryPublisher
from ligoenv_server.publishers.seal import seal_tree
from testbed.images import push_image
from testbed.indexfiles import read_index
from testbed.ocibuild import Entry, Image, Layer
from testbed.registry import RegistryProcess, free_port
from testbed.stack import server_config
from testbed.trees import frozen_facts
from tests.oci.test_unpack_conformance import MIDDLE, T, describe, rewritten_image, umoci_tree
from tests.server import test_cvmfs
from tests.server.test_cvmfs import Cvmfs

pytestmark = pytest.mark.skipif(shutil.which("umoci") is None, reason="needs umoci")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

cvmfs = test_cvmfs.cvmfs  # the stand-in's fixture


@pytest.fixture()
def config(tmp_path: Path, registry: RegistryProcess) -> ServerConfig:
    return load_config(server_config(tmp_path, registry.host, free_port()))


class Publishing:
    """Pushes images to the real registry and publishes them through the worker's processor."""

    def __init__(self, config: ServerConfig, registry: RegistryProcess,
                 publisher: Publisher | None = None) -> None:
        self.config, self.registry = config, registry
        self.publisher = publisher or DirectoryPublisher(config.publisher.root,
                                                         chains=config.publisher.chains)
        self.processor = RequestProcessor(config, self.publisher)
        self.root = self.publisher.layout.root

    def publish(self, repository: str, tag: str, image: Image) -> dict[str, Any]:
        digest = push_image(self.registry.host, repository, tag, image)
        request = PublishRequest(registry=self.registry.host, repository=repository, tag=tag,
                                 digest=str(digest), source="distribution:local", received_at=NOW)
        return self.processor.process(request)

    def tree(self, result: dict[str, Any]) -> Path:
        return self.root / result["paths"]["linux/amd64"]

    def chains(self) -> list[Path]:
        return sorted(self.root.glob(".chains/*/*"))

    def chain_facts(self, chain: Digest) -> dict[str, Any]:
        """The chain's tree as `describe` sees it, without CVMFS's nested catalog mark."""
        facts = describe(self.chain(chain), False)
        facts.pop(".cvmfscatalog", None)
        return facts

    def chain(self, chain: Digest) -> Path:
        return self.publisher.layout.chain_dir(chain)

    def recorded_chain(self, repository: str, result: dict[str, Any]) -> Digest | None:
        index = read_index(self.root, self.registry.host, repository)  # schemas checked
        assert index is not None
        record = index.record(Digest.parse(result["digest"]))
        assert record is not None
        return record.chain


def image_of(layers: list[Layer], cmd: tuple[str, ...] = ("/bin/sh",)) -> Image:
    return Image(layers=layers, cmd=cmd)


def sealed(tree: Path) -> Path:
    """`tree` as a publisher leaves it: owned by the publisher, no group or other write bits."""
    seal_tree(tree)
    return tree


def umoci_facts(workdir: Path, layers: list[Layer]) -> dict[str, Any]:
    return describe(sealed(umoci_tree(workdir, layers)), False)


def same_image_tree(tree: Path, workdir: Path, image: Image) -> bool:
    """True when `tree` is umoci's unpack of `image`, completed like ours: the same facts, but
    for the times of the files completion made (then, not at publication)."""
    rootfs = umoci_tree(workdir, list(image.layers))
    unpacked = set(describe(rootfs, False))
    config = image.config_bytes()
    complete_tree(rootfs, parse_config(config, Digest.of_bytes(config)))
    expected, ours = describe(sealed(rootfs), False), describe(tree, False)
    for facts in (expected, ours):
        for name in [n for n in facts if n.startswith(".ligoenv") or n == ".singularity.d/labels.json"]:
            del facts[name]  # provenance: where and when this tree was published
        for name in set(facts) - unpacked:
            if name != "hardlink groups":
                facts[name] = facts[name][:3]
    return ours == expected


@pytest.fixture(params=["directory", "cvmfs"])
def lab(request: pytest.FixtureRequest, tmp_path: Path, config: ServerConfig,
        registry: RegistryProcess) -> Publishing:
    """Publishing through the directory publisher, or the CVMFS one on the stand-in."""
    if request.param == "directory":
        return Publishing(config, registry)
    cvmfs: Cvmfs = request.getfixturevalue("cvmfs")
    return Publishing(config, registry, cvmfs.publisher(gateway=True))


def test_rebuilds_apply_only_their_new_layers_and_leave_the_parents_alone(
        tmp_path: Path, lab: Publishing) -> None:
    *lower, rewrite = rewritten_image()
    first = image_of(lower)
    one = lab.publish("chains/app", "v1", first)
    ids = chain_ids([layer.diff_id for layer in lower])
    # the layers below the top one: the image's tree is the last of them with its top layer
    assert lab.chains() == sorted(lab.chain(chain) for chain in ids[:-1])
    assert lab.recorded_chain("chains/app", one) == ids[-2]
    assert same_image_tree(lab.tree(one), tmp_path / "first", first)
    before = {path: frozen_facts(path) for path in [lab.tree(one), *lab.chains()]}

    rebuilt = image_of([*lower, rewrite])  # deletes, replaces, re-types, chmods, hard-links
    two = lab.publish("chains/app", "v2", rebuilt)
    assert two["unpacked"] == [two["digest"]]
    # one new chain: the first image's whole stack, now that an image builds on it
    assert lab.chains() == sorted([*list(before)[1:], lab.chain(ids[-1])])
    assert lab.recorded_chain("chains/app", two) == ids[-1]
    assert {path: frozen_facts(path) for path in before} == before  # byte- and metadata-identical

    assert same_image_tree(lab.tree(two), tmp_path / "i", rebuilt)
    for depth, chain in enumerate(ids, 1):
        assert lab.chain_facts(chain) == umoci_facts(tmp_path / f"p{depth}", list(lower[:depth]))


def test_a_changed_middle_layer_reuses_the_chains_below_it(
        tmp_path: Path, config: ServerConfig, registry: RegistryProcess) -> None:
    lab = Publishing(config, registry)
    base, middle, top = rewritten_image()[:3]
    lab.publish("chains/mid", "v1", image_of([base, middle, top]))
    assert len(lab.chains()) == 2
    changed = Layer.from_entries([*MIDDLE, Entry("etc/motd", data=b"rebuilt\n", mtime=T)])
    image = image_of([base, changed, top])
    result = lab.publish("chains/mid", "v2", image)
    assert len(lab.chains()) == 3  # the base chain is shared; one new one above it
    assert same_image_tree(lab.tree(result), tmp_path, image)

    # another image on the same layers (another config) makes no chain at all
    same_layers = lab.publish("chains/other", "v1", image_of([base, changed, top], cmd=("/bin/ls",)))
    assert same_layers["unpacked"] == [same_layers["digest"]] and len(lab.chains()) == 3
    assert lab.recorded_chain("chains/other", same_layers) == lab.recorded_chain("chains/mid", result)


def test_an_image_of_one_layer_is_unpacked_into_an_empty_tree(
        tmp_path: Path, lab: Publishing) -> None:
    image = image_of(rewritten_image()[:1])
    result = lab.publish("chains/single", "v1", image)
    assert lab.chains() == [] and lab.recorded_chain("chains/single", result) is None
    assert same_image_tree(lab.tree(result), tmp_path, image)


def test_without_chains_images_are_unpacked_whole(config: ServerConfig,
                                                   registry: RegistryProcess) -> None:
    whole = replace(config, publisher=replace(config.publisher, chains=False))
    lab = Publishing(whole, registry)
    result = lab.publish("chains/off", "v1", image_of(rewritten_image()))
    assert lab.chains() == [] and (lab.tree(result) / "opt/bash-too").is_file()
    assert lab.recorded_chain("chains/off", result) is None


def test_a_corrupt_cached_top_layer_fails_the_job_for_a_retry(
        tmp_path: Path, config: ServerConfig, registry: RegistryProcess) -> None:
    lab = Publishing(config, registry)
    layers = rewritten_image()[:2]
    lab.publish("chains/corrupt", "v1", image_of(layers))
    cached = LayerCache(config.worker.cache_dir).path_for(layers[-1].digest)
    cached.write_bytes(bytes(cached.stat().st_size))  # same size, other bytes
    other = image_of(layers, cmd=("/bin/ls",))  # the same layers: only the top one to apply
    with pytest.raises(PublishError, match="publishing again") as caught:
        lab.publish("chains/corrupt", "v2", other)
    assert caught.value.temporary and not cached.exists()
    assert [p for p in lab.root.glob(".ligoenv/staging/*") if p.suffix != ".lock"] == []
    retried = lab.publish("chains/corrupt", "v2", other)  # downloads it again
    assert same_image_tree(lab.tree(retried), tmp_path, other)
