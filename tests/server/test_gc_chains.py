"""Garbage collection of layer chain trees on a real publish root: a chain goes when no kept
image was built from it, every chain a kept image lists stays (a rebuild starts from them), a
chain younger than a day stays, and removing a chain takes nothing from a published image."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ligoenv.oci.digest import Digest
from ligoenv.oci.manifest import ImageManifest, parse_config
from ligoenv.oci.reference import Reference
from ligoenv.oci.registry import RegistryClient
from ligoenv.store.index import DigestRecord, RepositoryIndex
from ligoenv.store.index.files import LocalFiles
from ligoenv.store.index.reader import load_repository
from ligoenv.store.pins import PinSet
from ligoenv_server.chains import built_from
from ligoenv_server.config import load_config
from ligoenv_server.gcpolicy import CHAIN_GRACE, GcPolicy, plan_gc
from ligoenv_server.gcrun import GarbageCollector
from ligoenv_server.jobs import PublishRequest
from ligoenv_server.pipeline import RequestProcessor
from ligoenv_server.publishers.directory import DirectoryPublisher
from ligoenv_server.publishers.factory import publisher_from
from testbed.images import build_busybox_image, push_image
from testbed.ocibuild import Entry, Layer
from testbed.registry import RegistryProcess, free_port
from testbed.stack import server_config
from testbed.trees import frozen_facts

REPOSITORY = "gcchains/app"
POLICY = GcPolicy(grace=timedelta(days=30), keep_last=1, max_trees=100)
LONG_AGO = datetime(2025, 1, 1, tzinfo=UTC)
APP = Layer.from_entries([Entry("opt/app", data=b"app\n")])


def chains_of(registry: RegistryProcess, digest: Digest) -> list[Digest]:
    with RegistryClient(registry.host, anonymous=True) as client:
        manifest = client.fetch_manifest(Reference(registry.host, REPOSITORY, None, digest))
        assert isinstance(manifest, ImageManifest)
        config = parse_config(client.fetch_blob(REPOSITORY, manifest.config), manifest.config.digest)
    return built_from(config)


def test_chains_no_kept_image_needs_are_collected(tmp_path: Path, registry: RegistryProcess) -> None:
    config = load_config(server_config(tmp_path, registry.host, free_port()))
    publisher = publisher_from(config)
    assert publisher.chains
    processor = RequestProcessor(config, publisher)
    layout = publisher.layout

    def publish(name: str, when: datetime) -> Digest:
        # busybox, a layer of its name, APP on top: two chains, the second its own
        image = build_busybox_image(name, extra_layers=[APP])
        digest = push_image(registry.host, REPOSITORY, "nightly", image)
        processor.process(PublishRequest(registry.host, REPOSITORY, "nightly", str(digest),
                                         "distribution:local", when))
        return digest

    old, new = publish("old", LONG_AGO), publish("new", LONG_AGO + timedelta(days=1))
    old_chains, new_chains = chains_of(registry, old), chains_of(registry, new)
    base = old_chains[0]
    assert new_chains[0] == base and old_chains[-1] != new_chains[-1]  # one base, two tops
    index = load_repository(LocalFiles(layout.root), registry.host, REPOSITORY)
    assert index is not None
    assert index.digests[str(new)].chains == tuple(new_chains)  # the record lists every chain
    new_tree = layout.image_dir(new)
    before = frozen_facts(new_tree)
    base_inode = os.stat(layout.chain_dir(base)).st_ino

    # An hour from now the old image goes, but its top chain is too young to be collected.
    soon = datetime.now(UTC) + timedelta(hours=1)
    report = GarbageCollector(publisher, POLICY, clock=lambda: soon).run()
    assert report.removed == [layout.relative_image_path(old)]
    assert layout.chain_dir(old_chains[-1]).is_dir()

    # Once it is older than CHAIN_GRACE, the chain only the old image was built from goes too.
    later = datetime.now(UTC) + CHAIN_GRACE + timedelta(hours=1)
    report = GarbageCollector(publisher, POLICY, clock=lambda: later).run()
    assert report.removed == [layout.relative_chain_path(old_chains[-1])]
    assert not layout.chain_dir(old_chains[-1]).exists()
    assert all(layout.chain_dir(chain).is_dir() for chain in new_chains)  # the kept image's
    assert frozen_facts(new_tree) == before and report.incomplete == []

    # A rebuild still starts from the base chain that stayed.
    newest = publish("newest", LONG_AGO + timedelta(days=2))
    assert chains_of(registry, newest)[0] == base
    assert os.stat(layout.chain_dir(base)).st_ino == base_inode


def record(name: bytes, chains: tuple[Digest, ...], *, listed: bool = True) -> DigestRecord:
    digest = Digest.of_bytes(name)
    return DigestRecord(digest=digest, media_type="application/vnd.oci.image.manifest.v1+json",
                        platforms={"linux/amd64": digest}, platform="linux/amd64",
                        path=f".images/{digest.hex[:2]}/{digest.hex}", published=LONG_AGO,
                        chain=chains[-1], chains=chains if listed else ())


def test_a_record_without_its_chain_list_keeps_its_top_chain_only() -> None:
    """Records written before images listed their chains name only the top one."""
    base, top, other = (Digest.of_bytes(b) for b in (b"base", b"top", b"other"))
    kept = record(b"kept", (base, top), listed=False)
    index = RepositoryIndex("r.example", "lab/app", {}, {str(kept.digest): kept})
    ages = {f".chains/{c.hex[:2]}/{c.hex}": LONG_AGO for c in (base, top, other)}
    plan = plan_gc([index], PinSet(), POLICY, LONG_AGO + timedelta(days=1), chains_on_disk=ages)
    assert [v.collect for v in plan.verdicts] == [False]
    assert sorted(plan.trees) == sorted(f".chains/{c.hex[:2]}/{c.hex}" for c in (base, other))


def test_trees_are_never_found_through_a_symlink(tmp_path: Path) -> None:
    """A prefix directory that is a symlink (or a tree that is one) leads out of the root: gc
    must not take what it points at for an orphan and move it into its trash."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    hex_name = "cd" * 32
    (outside / hex_name).mkdir(parents=True)
    (outside / hex_name / "precious").write_text("not ours\n")
    for area in (".images", ".chains"):
        (root / area).mkdir(parents=True)
        (root / area / "cd").symlink_to(outside)
        (root / area / "ef").mkdir()
        (root / area / "ef" / ("ef" * 32)).symlink_to(outside / hex_name)
    publisher = DirectoryPublisher(root, chains=True)
    later = datetime.now(UTC) + CHAIN_GRACE + timedelta(days=1)
    report = GarbageCollector(publisher, POLICY, clock=lambda: later).run()
    assert report.removed == [] and report.plan.trees == []
    assert (outside / hex_name / "precious").read_text() == "not ours\n"
