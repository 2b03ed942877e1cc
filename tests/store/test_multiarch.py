"""Per-platform tag links (.multiarch/<os>-<arch>/...), written by the real directory publisher:
one per published platform, `uname -m` aliases, moved and removed with the tag."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from ligoenv.store import multiarch
from ligoenv.store.publishroot import PublishRoot
from ligoenv_server.publishers.directory import DirectoryPublisher
from testbed.images import TAG_FILE
from testbed.staging import REGISTRY, REPOSITORY, T0, stage

HOUR = timedelta(hours=1)


def link(root: Path, directory: str, tag: str = "nightly") -> Path:
    return root / ".multiarch" / directory / REGISTRY / f"{REPOSITORY}:{tag}"


def content(path: Path) -> str:
    return (path / TAG_FILE).read_text().strip()


@pytest.mark.parametrize(("platform", "name", "alias"), [
    ("linux/amd64", "linux-amd64", "linux-x86_64"),
    ("linux/arm64/v8", "linux-arm64", "linux-aarch64"),
    ("linux/arm/v7", "linux-arm-v7", None),
    ("linux/ppc64le", "linux-ppc64le", None),
])
def test_directory_names(platform: str, name: str, alias: str | None) -> None:
    assert (multiarch.dir_name(platform), multiarch.alias_name(platform)) == (name, alias)


def test_each_published_platform_gets_a_link_and_its_uname_alias(tmp_path: Path) -> None:
    pub = DirectoryPublisher(tmp_path)
    pub.publish(stage(pub, "v1", platforms=("linux/amd64", "linux/arm64")))
    for name in ("linux-amd64", "linux-x86_64", "linux-arm64", "linux-aarch64"):
        assert content(link(tmp_path, name)) == "v1"
        assert not os.path.isabs(os.readlink(link(tmp_path, name)))
    assert os.readlink(tmp_path / ".multiarch/linux-x86_64") == "linux-amd64"
    assert os.readlink(tmp_path / ".multiarch/linux-aarch64") == "linux-arm64"
    # The tag link (written last) and the amd64 link name the same tree.
    tag_link = tmp_path / REGISTRY / f"{REPOSITORY}:nightly"
    assert link(tmp_path, "linux-amd64").resolve() == tag_link.resolve()


def test_a_tag_move_moves_them_and_drops_a_platform_the_new_image_lacks(tmp_path: Path) -> None:
    pub = DirectoryPublisher(tmp_path)
    pub.publish(stage(pub, "v1", platforms=("linux/amd64", "linux/arm64")))
    pub.publish(stage(pub, "v2", when=T0 + HOUR))  # amd64 only
    assert content(link(tmp_path, "linux-x86_64")) == "v2"
    assert not link(tmp_path, "linux-arm64").is_symlink()
    # Another tag's links are left alone.
    pub.publish(stage(pub, "v1", tag="stable", platforms=("linux/amd64", "linux/arm64"),
                      when=T0 + 2 * HOUR))
    pub.publish(stage(pub, "v3", when=T0 + 3 * HOUR))
    assert content(link(tmp_path, "linux-aarch64", "stable")) == "v1"


def test_a_late_event_moves_nothing_and_an_untag_removes_them(tmp_path: Path) -> None:
    pub = DirectoryPublisher(tmp_path)
    pub.publish(stage(pub, "new", when=T0 + HOUR))
    pub.publish(stage(pub, "old", when=T0))  # older than what the tag holds: history only
    assert content(link(tmp_path, "linux-amd64")) == "new"
    assert pub.untag(REGISTRY, REPOSITORY, "nightly", T0 + 2 * HOUR, "cli")
    assert not link(tmp_path, "linux-amd64").is_symlink()
    assert not link(tmp_path, "linux-x86_64").is_symlink()


def test_the_osg_layout_has_no_registry_segment(tmp_path: Path) -> None:
    pub = DirectoryPublisher(tmp_path, include_registry=False)
    pub.publish(stage(pub, "osg"))
    assert content(tmp_path / ".multiarch/linux-x86_64" / f"{REPOSITORY}:nightly") == "osg"
    layout = PublishRoot(tmp_path, include_registry=False)
    assert multiarch.platform_link(layout, REGISTRY, REPOSITORY, "nightly", "linux-amd64") == \
        tmp_path / ".multiarch/linux-amd64" / f"{REPOSITORY}:nightly"
