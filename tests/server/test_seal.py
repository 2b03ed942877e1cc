"""Published trees are sealed: owned by the publisher, no group or other write bits, nothing
outside the tree touched; through the directory publisher and through the worker."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ligoenv_server.config import ServerConfig, load_config
from ligoenv_server.jobs import PublishRequest
from ligoenv_server.pipeline import RequestProcessor
from ligoenv_server.publishers.directory import DirectoryPublisher
from ligoenv_server.publishers.seal import seal_paths, seal_tree
from testbed.images import build_busybox_image, push_image
from testbed.ocibuild import Entry, Layer
from testbed.registry import RegistryProcess, free_port
from testbed.stack import server_config
from testbed.staging import T0, stage

FOREIGN = 4242  # a uid and gid that no local account of the test machine uses
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another user needs root")


def loosen(tree: Path, outside: Path) -> None:
    """What an image may carry: world-writable directories and files, foreign owners, links."""
    (tree / "opt/conda").mkdir(parents=True)
    (tree / "opt/conda").chmod(0o777)
    (tree / "opt/conda/env.sh").write_text("x\n")
    (tree / "opt/conda/env.sh").chmod(0o666)
    (tree / "opt/conda/tool").write_text("#!/bin/sh\n")
    (tree / "opt/conda/tool").chmod(0o775)
    os.link(tree / "opt/conda/env.sh", tree / "opt/env-link.sh")
    (tree / "opt/outside").symlink_to(outside)  # its target must keep its mode and owner
    if os.geteuid() == 0:
        os.chown(tree / "opt/conda", FOREIGN, FOREIGN)
        os.chown(tree / "opt/conda/env.sh", FOREIGN, FOREIGN)
        os.lchown(tree / "opt/outside", FOREIGN, FOREIGN)


def assert_sealed(tree: Path, owner: tuple[int, int] | None) -> None:
    entries = [tree, *tree.rglob("*")]
    assert len(entries) > 10
    for path in entries:
        info = path.lstat()
        if not stat.S_ISLNK(info.st_mode):
            assert info.st_mode & 0o022 == 0, f"{path} is writable by others"
        if owner is not None:
            assert (info.st_uid, info.st_gid) == owner, f"{path} belongs to someone else"


@pytest.fixture()
def outside(tmp_path: Path) -> Path:
    target = tmp_path / "host-file"
    target.write_text("host\n")
    target.chmod(0o666)
    return target


def test_the_directory_publisher_seals_a_tree_before_it_is_visible(tmp_path: Path,
                                                                   outside: Path) -> None:
    pub = DirectoryPublisher(tmp_path / "root", clock=lambda: T0)
    image = stage(pub, "v1")
    tree = image.platforms[0].tree
    assert tree is not None
    loosen(tree, outside)
    pub.publish(image)
    published = pub.layout.image_dir(image.top_digest)
    assert_sealed(published, (os.geteuid(), os.getegid()))
    assert stat.S_IMODE((published / "opt/conda").stat().st_mode) == 0o755
    assert stat.S_IMODE((published / "opt/conda/tool").stat().st_mode) == 0o755
    assert stat.S_IMODE((published / "opt/env-link.sh").stat().st_mode) == 0o644
    assert stat.S_IMODE(outside.stat().st_mode) == 0o666  # the symlink was not followed


@root_only
def test_keep_ownership_keeps_the_image_owners_but_not_their_write_bits(tmp_path: Path,
                                                                        outside: Path) -> None:
    pub = DirectoryPublisher(tmp_path / "root", clock=lambda: T0, keep_ownership=True)
    image = stage(pub, "v1")
    assert image.platforms[0].tree is not None
    loosen(image.platforms[0].tree, outside)
    pub.publish(image)
    published = pub.layout.image_dir(image.top_digest)
    assert_sealed(published, None)
    assert (published / "opt/conda/env.sh").stat().st_uid == FOREIGN


def test_setuid_bits_kept_by_the_unpacker_survive_sealing(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "su").write_text("")
    if os.geteuid() == 0:
        os.chown(tree / "su", FOREIGN, FOREIGN)
    (tree / "su").chmod(0o4777)  # after chown, which clears it
    assert seal_tree(tree) >= 1
    assert stat.S_IMODE((tree / "su").stat().st_mode) == 0o4755
    assert seal_tree(tree) == 0  # sealed trees stay as they are


def test_seal_paths_seals_the_listed_entries_alone_and_never_through_a_symlink(
        tmp_path: Path, outside: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    tree.chmod(0o777)
    loosen(tree, outside)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x").write_text("x\n")
    (elsewhere / "x").chmod(0o666)
    (tree / "opt/away").symlink_to(elsewhere)
    listed = ["opt/conda", "opt/conda/env.sh", "opt/away/x", "opt/outside", "gone/file", "opt/gone"]
    assert seal_paths(tree, listed) >= 3
    assert mode(tree) == 0o755 and mode(tree / "opt/conda") == 0o755
    assert mode(tree / "opt/conda/env.sh") == 0o644
    assert mode(tree / "opt/conda/tool") == 0o775  # not listed: left as it is
    assert mode(elsewhere / "x") == 0o666 and mode(outside) == 0o666  # symlinks not followed
    if os.geteuid() == 0:
        assert (tree / "opt/conda").stat().st_uid == os.geteuid()
        assert (tree / "opt/outside").lstat().st_uid == os.geteuid()  # the link itself
    assert seal_paths(tree, listed) == 0


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_the_worker_publishes_a_sealed_tree(tmp_path: Path, registry: RegistryProcess) -> None:
    config: ServerConfig = load_config(server_config(tmp_path, registry.host, free_port()))
    loose = Layer.from_entries([
        Entry("opt", "dir", mode=0o755), Entry("opt/conda", "dir", mode=0o777, uid=FOREIGN),
        Entry("opt/conda/env.sh", data=b"x\n", mode=0o666, uid=FOREIGN, gid=FOREIGN)])
    image = build_busybox_image("loose", extra_layers=[loose])
    digest = push_image(registry.host, "seal/app", "v1", image)
    publisher = DirectoryPublisher(config.publisher.root)
    RequestProcessor(config, publisher).process(PublishRequest(
        registry=registry.host, repository="seal/app", tag="v1", digest=str(digest),
        source="distribution:local", received_at=T0))
    published = publisher.layout.image_dir(digest)
    assert (published / "opt/conda/env.sh").read_text() == "x\n"
    assert_sealed(published, (os.geteuid(), os.getegid()))


def test_chain_and_image_trees_are_sealed_where_each_layer_wrote(tmp_path: Path,
                                                                 registry: RegistryProcess) -> None:
    config: ServerConfig = load_config(server_config(tmp_path, registry.host, free_port()))
    assert config.publisher.chains
    loose = Layer.from_entries([
        Entry("opt", "dir", mode=0o755), Entry("opt/conda", "dir", mode=0o777, uid=FOREIGN),
        Entry("opt/conda/env.sh", data=b"x\n", mode=0o666, uid=FOREIGN, gid=FOREIGN)])
    top = Layer.from_entries([
        Entry("opt/conda/env.sh", data=b"y\n", mode=0o646, uid=FOREIGN),  # replaced
        Entry("opt/conda/env-too.sh", "hardlink", target="opt/conda/env.sh"),
        Entry("opt/lower-link", "hardlink", target="bin/busybox"),  # a lower layer's inode
        Entry("srv/data", "dir", mode=0o1777, gid=FOREIGN),  # its parent implied
        Entry("srv/data/link", "symlink", target="/opt/conda", uid=FOREIGN)])
    base = build_busybox_image("loose", extra_layers=[loose])
    rebuilt = build_busybox_image("loose", extra_layers=[loose, top])
    publisher = DirectoryPublisher(config.publisher.root)
    processor = RequestProcessor(config, publisher)
    for tag, image in (("v1", base), ("v2", rebuilt)):
        digest = push_image(registry.host, "seal/chains", tag, image)
        processor.process(PublishRequest(registry=registry.host, repository="seal/chains", tag=tag,
                                         digest=str(digest), source="distribution:local",
                                         received_at=T0))
    trees = [*publisher.layout.root.glob(".chains/*/*"), *publisher.layout.root.glob(".images/*/*")]
    assert len(trees) == 3 + 2  # the chains below the top: busybox, tag file, loose; two images
    for tree in trees:
        assert_sealed(tree, (os.geteuid(), os.getegid()))
    published = publisher.layout.image_dir(digest)
    assert mode(published / "opt/conda/env-too.sh") == 0o644 and mode(published / "srv/data") == 0o1755
