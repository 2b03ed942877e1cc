"""complete_tree: the files Apptainer needs, where it needs them, never written through an image symlink.

The scripts themselves are run in bubblewrap by test_singularityd.py.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from ligoenv.oci.digest import Digest
from ligoenv.oci.manifest import ImageConfig
from ligoenv.store.completion import (
    ENV_SCRIPT,
    LABELS,
    RUNSCRIPT,
    complete_tree,
    completion_paths,
    normal_bind_point,
)
from ligoenv.store.singularityd import ROOT_LINKS
from testbed.trees import frozen_facts
from tests.client.test_provenance import provenance

APPTAINER_SET = (
    ".singularity.d/runscript", ".singularity.d/startscript",
    *(f".singularity.d/actions/{name}" for name in ("exec", "run", "shell", "start", "test")),
    *(f".singularity.d/env/{name}" for name in ("01-base.sh", "90-environment.sh", "99-base.sh",
                                               "99-runtimevars.sh")),
)

TRICKY = "it's a \"value\" with $HOME, `backticks` and\nnew lines"
ENV = (
    "PATH=/opt/lal/bin:/usr/bin:/bin",
    f"TRICKY={TRICKY}",
    "EMPTY=",
    "LAL_DATA_PATH=/opt/lal/share",
    "bad-name=skipped",
    "NOEQUALS",
)


def config(entrypoint: tuple[str, ...] = (), cmd: tuple[str, ...] = ("/bin/sh",),
           env: tuple[str, ...] = ENV) -> ImageConfig:
    return ImageConfig(digest=Digest.of_bytes(b"config"), os="linux", architecture="amd64",
                       diff_ids=(), env=env, entrypoint=entrypoint, cmd=cmd,
                       labels={"org.opencontainers.image.title": "lalsuite", "gw": "yes"})


def busybox_tree(root: Path) -> Path:
    """A runnable tree: static busybox as /bin/sh and a few applets."""
    (root / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    for applet in ("sh", "env", "echo", "cat", "printf"):
        (root / "bin" / applet).symlink_to("busybox")
    return root


def test_files_for_apptainer(tmp_path: Path) -> None:
    tree = busybox_tree(tmp_path / "tree")
    complete_tree(tree, config())

    script = (tree / ENV_SCRIPT).read_text()
    assert script.startswith("#!/bin/sh\n")
    assert "export PATH=/opt/lal/bin:/usr/bin:/bin\n" in script
    assert "bad-name" not in script and "NOEQUALS" not in script
    # what `apptainer build --sandbox` writes, all executable
    for name in (*APPTAINER_SET, ENV_SCRIPT):
        assert stat.S_IMODE((tree / name).stat().st_mode) == 0o755, name
        assert (tree / name).read_text().startswith("#!/bin/sh\n"), name
    assert {os.readlink(tree / name): name for name in ROOT_LINKS} == {
        ".singularity.d/env/90-environment.sh": "environment",
        ".singularity.d/runscript": "singularity",
        ".singularity.d/actions/exec": ".exec", ".singularity.d/actions/run": ".run",
        ".singularity.d/actions/shell": ".shell", ".singularity.d/actions/test": ".test"}
    assert json.loads((tree / LABELS).read_text()) == {
        "gw": "yes", "org.opencontainers.image.title": "lalsuite"}
    for name in ("cvmfs", "srv", "hdfs", "gpfs", "dev", "proc", "sys", "tmp", "var/tmp", "home",
                 ".singularity.d/libs"):
        assert (tree / name).is_dir() and not (tree / name).is_symlink(), name
    assert stat.S_IMODE((tree / "tmp").stat().st_mode) == 0o1777
    assert stat.S_IMODE((tree / "var").stat().st_mode) == 0o755
    assert (tree / "etc/hosts").read_bytes() == b""
    assert (tree / "etc/resolv.conf").read_bytes() == b""
    assert (tree / ".cvmfscatalog").read_bytes() == b""


def test_idempotent(tmp_path: Path) -> None:
    tree = busybox_tree(tmp_path / "tree")
    complete_tree(tree, config())
    before = snapshot(tree)
    complete_tree(tree, config())
    assert snapshot(tree) == before


def snapshot(tree: Path) -> dict[str, tuple[int, int, int, str]]:
    out = {}
    for path in sorted(tree.rglob("*")):
        info = os.lstat(path)
        target = os.readlink(path) if path.is_symlink() else ""
        out[str(path.relative_to(tree))] = (info.st_mode, info.st_ino, info.st_mtime_ns, target)
    return out


def test_image_symlinks_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    tree = busybox_tree(tmp_path / "tree")
    (tree / "var" / "home").mkdir(parents=True)
    (tree / "home").symlink_to("var/home")
    (tree / "srv").symlink_to(str(outside))  # absolute: would escape if followed
    (tree / "etc").mkdir()
    (tree / "etc/resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")
    (tree / ".singularity.d").symlink_to(str(outside))  # hostile: our metadata must not go there
    (tree / ".cvmfscatalog").symlink_to(str(outside / "catalog"))

    complete_tree(tree, config())

    assert os.readlink(tree / "home") == "var/home"
    assert os.readlink(tree / "srv") == str(outside)
    assert os.readlink(tree / "etc/resolv.conf") == "../run/systemd/resolve/stub-resolv.conf"
    assert (tree / ".singularity.d").is_dir() and not (tree / ".singularity.d").is_symlink()
    assert not (tree / ".cvmfscatalog").is_symlink()
    assert list(outside.iterdir()) == []


def test_existing_files_are_kept(tmp_path: Path) -> None:
    tree = busybox_tree(tmp_path / "tree")
    (tree / "etc").mkdir()
    (tree / "etc/hosts").write_text("127.0.0.1 localhost\n")
    complete_tree(tree, config())
    assert (tree / "etc/hosts").read_text() == "127.0.0.1 localhost\n"


def test_image_entries_at_the_root_links_are_kept(tmp_path: Path) -> None:
    tree = busybox_tree(tmp_path / "tree")
    (tree / "environment").mkdir()
    (tree / "singularity").write_text("the image's own\n")
    complete_tree(tree, config())
    assert (tree / "environment").is_dir() and not (tree / "environment").is_symlink()
    assert (tree / "singularity").read_text() == "the image's own\n"


def test_completing_a_hardlink_clone_leaves_the_source_tree_alone(tmp_path: Path) -> None:
    """An image tree is a hard-link clone of a chain tree: completing it writes only new inodes."""
    chain = busybox_tree(tmp_path / "chain")
    (chain / "etc").mkdir()
    (chain / "etc/hosts").write_text("127.0.0.1 image\n")
    (chain / ".singularity.d").mkdir()
    (chain / RUNSCRIPT).write_text("#!/bin/sh\nexec old\n")  # stale metadata, shared inode
    (chain / ".singularity.d/env").symlink_to("/etc")
    before = frozen_facts(chain)
    subprocess.run(["cp", "-al", "--", str(chain), str(tmp_path / "image")], check=True, timeout=30)
    complete_tree(tmp_path / "image", config(cmd=("/bin/echo", "new")))
    assert frozen_facts(chain) == before
    image = tmp_path / "image"
    assert "exec /bin/echo" not in (chain / RUNSCRIPT).read_text()
    assert "/bin/echo new" in (image / RUNSCRIPT).read_text()
    assert (image / "etc/hosts").read_text() == "127.0.0.1 image\n"  # the image's own is kept


def test_site_bind_points_are_made_and_returned(tmp_path: Path) -> None:
    tree = busybox_tree(tmp_path / "tree")
    made = complete_tree(tree, config(), bind_points=("/gpfs/ligo/data", "/project", "/tmp"))
    assert made == ("/gpfs/ligo/data", "/project", "/tmp", "/dev", "/proc", "/sys", "/var/tmp", "/home")
    for point in made:
        assert (tree / point.lstrip("/")).is_dir(), point
    assert stat.S_IMODE((tree / "gpfs/ligo").stat().st_mode) == 0o755
    assert stat.S_IMODE((tree / "var/tmp").stat().st_mode) == 0o1777
    assert not (tree / "cvmfs").exists()  # only what the site asked for, and what runtimes need


def test_an_image_symlink_never_redirects_a_bind_point(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    tree = busybox_tree(tmp_path / "tree")
    (tree / "gpfs").symlink_to(str(outside))  # absolute: outside the tree if followed here
    (tree / "project").symlink_to("../../outside")
    (tree / "data").write_text("a file where a directory would go\n")
    (tree / "scratch").mkdir()
    (tree / "scratch/user").symlink_to("/etc")
    made = complete_tree(tree, config(), bind_points=(
        "/gpfs", "/gpfs/data", "/project/x", "/data/sub", "/scratch/user/lvk", "/ceph"))
    assert made == ("/ceph", "/dev", "/proc", "/sys", "/tmp", "/var/tmp", "/home")
    assert list(outside.iterdir()) == []
    assert os.readlink(tree / "gpfs") == str(outside) and os.readlink(tree / "scratch/user") == "/etc"
    assert (tree / "data").read_text() == "a file where a directory would go\n"


@pytest.mark.parametrize(("given", "expected"), [
    ("/gpfs", "/gpfs"), ("/gpfs/", "/gpfs"), ("//project/./ligo//", "/project/ligo")])
def test_normal_bind_points(given: str, expected: str) -> None:
    assert normal_bind_point(given) == expected


@pytest.mark.parametrize(("given", "reason"), [
    ("gpfs", "is not an absolute path"), ("/a/../b", "climbs out of the image"),
    ("/", "the image's root"), ("/a\x00b", "is not a usable path")])
def test_what_cannot_be_a_bind_point(given: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        normal_bind_point(given)


def test_completion_paths_list_all_that_completion_writes(tmp_path: Path) -> None:
    tree = busybox_tree(tmp_path / "tree")
    before = {str(path.relative_to(tree)) for path in tree.rglob("*")}
    bind_points = ("/cvmfs", "/gpfs/data/deep", "/srv")
    complete_tree(tree, config(), bind_points=bind_points, provenance=provenance())
    written = {str(path.relative_to(tree)) for path in tree.rglob("*")} - before
    assert "gpfs/data/deep" in written and ".ligoenv/provenance.json" in written
    assert written <= completion_paths(config(), bind_points)
