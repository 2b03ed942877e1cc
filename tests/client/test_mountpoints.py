"""Mount points inside an image tree: walked without following the image's symlinks, made only inside."""

from __future__ import annotations

from pathlib import Path

import pytest

from ligoenv.client.runtimes.base import Bind
from ligoenv.client.runtimes.mountpoints import MountPoint, check_binds, inspect, make
from ligoenv.oci.errors import UsageError


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """home/ (a directory), link -> /etc, up -> ../.. (climbing out), file (a regular file)."""
    root = tmp_path / "tree"
    (root / "home").mkdir(parents=True)
    (root / "link").symlink_to("/etc")
    (root / "home" / "up").symlink_to("../..")
    (root / "file").write_text("")
    return root


@pytest.mark.parametrize(("destination", "point"), [
    ("/home", MountPoint("/home")),
    ("/home/alice/work", MountPoint("/home/alice/work", missing="/home/alice")),
    ("/link", MountPoint("/link", symlink="/link")),
    ("/link/sub", MountPoint("/link/sub", symlink="/link")),
    ("/home/up/escaped", MountPoint("/home/up/escaped", symlink="/home/up")),
    ("/file/sub", MountPoint("/file/sub", blocked="/file")),
    ("/home/../../escaped", MountPoint("/home/../../escaped", blocked="/home/..")),
    ("/tmp/x", MountPoint("/tmp/x", missing="/tmp")),
])
def test_a_destination_is_walked_without_following_symlinks(tree: Path, destination: str,
                                                            point: MountPoint) -> None:
    assert inspect(tree, destination) == point


def test_below_a_fresh_mount_nothing_of_the_image_is_reached(tree: Path) -> None:
    (tree / "tmp").symlink_to("/oldroot/etc")
    assert inspect(tree, "/tmp/x", fresh=("/tmp",)).present
    assert inspect(tree, "/tmp/x").symlink == "/tmp"


def test_missing_directories_are_made_inside_the_tree_only(tree: Path, tmp_path: Path) -> None:
    assert make(tree, inspect(tree, "/home/alice/work"))
    assert (tree / "home/alice/work").is_dir()
    for destination in ("/link/sub", "/home/up/escaped", "/file/sub", "/home/../../escaped"):
        assert not make(tree, inspect(tree, destination))
    # A symlink put in the way after the walk is refused, not followed.
    point = inspect(tree, "/data/sub")
    (tree / "data").symlink_to(tmp_path)
    assert not make(tree, point)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree"]
    assert not Path("/etc/sub").exists()


def test_a_bind_crossing_an_image_symlink_is_refused(tree: Path) -> None:
    points = check_binds(tree, [Bind("/data", "/home/alice")])
    assert points == [MountPoint("/home/alice", missing="/home/alice")]
    with pytest.raises(UsageError, match=r"^cannot bind /data to /link/sub: /link is a symbolic link in "
                                         r"the image, and a mount point must not cross one \(bind to "
                                         r"the directory it names\)$"):
        check_binds(tree, [Bind("/data", "/home"), Bind("/data", "/link/sub")])
    with pytest.raises(UsageError, match=r"^cannot bind /data to /file/sub: /file is not a directory in "
                                         r"the image$"):
        check_binds(tree, [Bind("/data", "/file/sub")])
