"""Layer chains on CVMFS: template transactions (`transaction -T /parent=/child`) against the
stand-in cvmfs_server, whose command lines are asserted exactly and which counts the bytes each
transaction writes."""

from __future__ import annotations

import fcntl
import io
import json
import stat
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from ligoenv.oci.digest import Digest
from ligoenv.oci.manifest import layer_compression, parse_config
from ligoenv.oci.unpack import apply_layer
from ligoenv.store.errors import PublishError
from ligoenv_server.publishers.base import ChainStep
from ligoenv_server.publishers.cvmfs import CvmfsPublisher
from ligoenv_server.publishers.staged import StagedImage
from testbed.images import build_busybox_image
from testbed.ocibuild import Entry, Layer
from testbed.staging import stage
from testbed.trees import frozen_facts
from tests.server import test_cvmfs
from tests.server.test_cvmfs import REPO, Cvmfs

A = Digest("sha256", "aa" * 32)
B = Digest("sha256", "bb" * 32)
BIG = bytes(1 << 20)

cvmfs = test_cvmfs.cvmfs  # the stand-in's fixture


def applying(*entries: Entry) -> Callable[[Path], set[str]]:
    """A chain step's fill: the layer of `entries` applied to the chain's tree."""
    layer = Layer.from_entries(entries)

    def fill(tree: Path) -> set[str]:
        changed: set[str] = set()
        apply_layer(io.BytesIO(layer.blob), layer_compression(layer.media_type), tree,
                    changed=changed)
        return changed
    return fill


BASE = applying(Entry("etc", "dir", mode=0o755), Entry("etc/motd", data=b"base\n"),
                Entry("etc/issue", data=b"debian\n", mode=0o644), Entry("big", data=BIG))
REBUILD = applying(Entry("etc/motd", data=b"rebuilt\n"), Entry("etc/issue", data=b"debian\n", mode=0o600))


def written(cvmfs: Cvmfs) -> list[dict[str, object]]:
    path = cvmfs.state / "written"
    return [json.loads(line) for line in path.read_text().splitlines()]


TOP = applying(Entry("etc/top", data=b"top\n"))


def chain_image(pub: CvmfsPublisher, content: str, chain: Digest | None,
                top: Callable[[Path], set[str]] = TOP) -> StagedImage:
    """`content`'s image as the worker hands it over with chains: no tree, the chain below its
    top layer, and that layer."""
    image = stage(pub, content)
    platform = image.platforms[0]
    assert platform.tree is not None
    pub.discard(platform.tree)
    raw = build_busybox_image(content).config_bytes()
    config = parse_config(raw, Digest.of_bytes(raw))
    return replace(image, platforms=(replace(platform, tree=None, chain=chain, top_layer=top,
                                             config=config),))


def test_chains_and_images_are_template_clones(cvmfs: Cvmfs) -> None:
    pub = cvmfs.publisher()
    pub.add_chains(None, [ChainStep(A, BASE)])
    parent = pub.layout.chain_dir(A)
    before = frozen_facts(parent)
    pub.add_chains(A, [ChainStep(B, REBUILD)])
    assert cvmfs.log() == [
        ["list"], ["transaction", REPO], ["publish", REPO],
        ["list"], ["transaction", REPO], ["publish", REPO],  # makes .chains/bb for the template
        ["transaction", "-T", f"/.chains/aa/{A.hex}=/.chains/bb/{B.hex}", REPO], ["publish", REPO]]
    assert frozen_facts(parent) == before  # the stand-in's clone shares inodes: none written through
    child = pub.layout.chain_dir(B)
    assert (child / "etc/motd").read_bytes() == b"rebuilt\n" and (child / "big").samefile(parent / "big")
    assert (child / ".cvmfscatalog").is_file()  # a nested catalog per chain
    # the rebuild's transaction wrote its layer only: a new motd and issue (its mode changed)
    assert written(cvmfs)[-1] == {"path": "", "bytes": len(b"rebuilt\n") + len(b"debian\n"), "files": 2}

    image = chain_image(pub, "v1", B)
    digest = image.top_digest
    outcome = pub.publish(image)
    assert outcome.new_images == (digest,)
    assert cvmfs.log() == [
        ["list"], ["transaction", REPO], ["publish", REPO],
        ["transaction", "-T", f"/.chains/bb/{B.hex}=/.images/{digest.hex[:2]}/{digest.hex}", REPO],
        ["publish", REPO], ["transaction", REPO], ["publish", REPO]]
    tree = cvmfs.mount / outcome.paths["linux/amd64"]
    assert (tree / "etc/motd").read_bytes() == b"rebuilt\n" and (tree / ".singularity.d/runscript").is_file()
    assert (tree / "etc/top").read_bytes() == b"top\n"  # its top layer, in its own tree only
    assert not (child / ".singularity.d").exists() and not (child / "etc/top").exists()
    assert written(cvmfs)[-2]["bytes"] < 64 * 1024  # the Apptainer files, not the image again
    assert not cvmfs.in_transaction()


def test_gateway_leases_for_template_transactions(cvmfs: Cvmfs) -> None:
    pub = cvmfs.publisher(gateway=True)
    pub.add_chains(None, [ChainStep(A, BASE), ChainStep(B, REBUILD)])
    assert cvmfs.log() == [
        ["list"], ["transaction", f"{REPO}/.chains"], ["publish", REPO],
        ["list"], ["transaction", f"{REPO}/.chains/bb"], ["publish", REPO],  # the lock is per chain
        ["transaction", "-T", f"/.chains/aa/{A.hex}=/.chains/bb/{B.hex}", f"{REPO}/.chains/bb/{B.hex}"],
        ["publish", REPO]]
    assert written(cvmfs)[-1] == {"path": f".chains/bb/{B.hex}", "bytes": 15, "files": 2}


def test_a_chain_waits_for_its_layer_holding_neither_the_lock_nor_a_transaction(
        cvmfs: Cvmfs) -> None:
    """A 5 GB layer takes minutes to download: meanwhile the repository's other publications
    must be able to take the node's lock and open their transactions."""
    pub = cvmfs.publisher()
    seen: list[tuple[bool, bool]] = []

    def downloading() -> None:
        with open(pub._lock_path, "a") as lock:  # what another worker on this node would take
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                free = True
            except BlockingIOError:
                free = False
        seen.append((free, cvmfs.in_transaction()))

    pub.add_chains(None, [ChainStep(A, BASE, downloading), ChainStep(B, REBUILD, downloading)])
    assert seen == [(True, False), (True, False)]
    assert pub.has_chain(A) and pub.has_chain(B)


def test_a_failed_layer_aborts_its_chain_and_keeps_the_parent(cvmfs: Cvmfs) -> None:
    pub = cvmfs.publisher()
    pub.add_chains(None, [ChainStep(A, BASE)])
    before = frozen_facts(pub.layout.chain_dir(A))
    cvmfs.log()

    def broken(tree: Path) -> set[str]:
        (tree / "etc/motd").unlink()
        raise OSError("disk full")

    with pytest.raises(PublishError, match="rolled back"):
        pub.add_chains(A, [ChainStep(B, broken)])
    assert cvmfs.log()[-2:] == [
        ["transaction", "-T", f"/.chains/aa/{A.hex}=/.chains/bb/{B.hex}", REPO], ["abort", "-f", REPO]]
    assert not pub.has_chain(B) and frozen_facts(pub.layout.chain_dir(A)) == before
    assert not cvmfs.in_transaction()


def test_the_stand_in_refuses_impossible_templates(cvmfs: Cvmfs) -> None:
    pub = cvmfs.publisher()
    pub.add_chains(None, [ChainStep(A, BASE)])
    source = f"/.chains/aa/{A.hex}"
    refusals = {
        f"/.chains/aa/{'cc' * 32}=/.chains/aa/new": "does not exist",  # missing source
        f"{source}={source}": "already exists",  # existing destination
        f"{source}=/nowhere/new": "parent directory",
    }
    for template, message in refusals.items():
        result = cvmfs.run("transaction", "-T", template, REPO)
        assert result.returncode == 1 and message in result.stderr
    outside = cvmfs.run("transaction", "-T", f"{source}=/.chains/aa/copy", f"{REPO}/.images")
    assert outside.returncode == 1 and "outside the lease" in outside.stderr
    assert not cvmfs.in_transaction()


def test_an_image_without_a_base_chain_is_its_top_layer_in_a_new_directory(cvmfs: Cvmfs) -> None:
    pub = cvmfs.publisher(gateway=True)
    image = chain_image(pub, "one", None, BASE)
    digest = image.top_digest
    pub.publish(image)
    image_dir = f".images/{digest.hex[:2]}/{digest.hex}"
    # a lease on the nearest directory there (no template to clone)
    assert cvmfs.log()[:3] == [["list"], ["transaction", f"{REPO}/.images"], ["publish", REPO]]
    tree = cvmfs.mount / image_dir
    assert (tree / "etc/motd").read_bytes() == b"base\n" and (tree / ".singularity.d/runscript").is_file()
    assert stat.S_IMODE(tree.stat().st_mode) == 0o755 and not (cvmfs.mount / ".chains").exists()
