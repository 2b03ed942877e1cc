"""complete_tree: the files Apptainer needs, safe against image symlinks, and a real bwrap run."""

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
from ligoenv.sandbox import ENV_SCRIPT, LABELS, RUNSCRIPT, complete_tree
from tests.support.trees import frozen_facts

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


def bwrap(tree: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bwrap", "--ro-bind", str(tree), "/", "--proc", "/proc", "--dev", "/dev",
         "--tmpfs", "/tmp", "--clearenv", *command],
        capture_output=True, text=True, timeout=30, check=False,
    )


def test_files_for_apptainer(tmp_path: Path) -> None:
    tree = busybox_tree(tmp_path / "tree")
    complete_tree(tree, config())

    script = (tree / ENV_SCRIPT).read_text()
    assert script.startswith("#!/bin/sh\n")
    assert "export PATH=/opt/lal/bin:/usr/bin:/bin\n" in script
    assert "bad-name" not in script and "NOEQUALS" not in script
    assert stat.S_IMODE((tree / ENV_SCRIPT).stat().st_mode) == 0o755
    assert stat.S_IMODE((tree / RUNSCRIPT).stat().st_mode) == 0o755
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


def test_bwrap_sees_the_image_env(tmp_path: Path) -> None:
    tree = busybox_tree(tmp_path / "tree")
    complete_tree(tree, config())
    result = bwrap(tree, "/bin/sh", "-c", f". /{ENV_SCRIPT} && env")
    assert result.returncode == 0, result.stderr
    assert "PATH=/opt/lal/bin:/usr/bin:/bin\n" in result.stdout
    assert "LAL_DATA_PATH=/opt/lal/share\n" in result.stdout
    assert f"TRICKY={TRICKY}\n" in result.stdout
    assert "EMPTY=\n" in result.stdout


@pytest.mark.parametrize(("entrypoint", "cmd", "args", "expected"), [
    ((), ("/bin/echo", "default", "cmd"), [], "default cmd"),
    ((), ("/bin/echo", "default"), ["/bin/echo", "a b", "c'd"], "a b c'd"),
    (("/bin/echo", "entry"), ("x y",), [], "entry x y"),
    (("/bin/echo", "entry"), ("x y",), ["over", "ridden"], "entry over ridden"),
    (("/bin/echo", "only"), (), ["$HOME", "*"], "only $HOME *"),
])
def test_runscript_semantics(tmp_path: Path, entrypoint: tuple[str, ...], cmd: tuple[str, ...],
                             args: list[str], expected: str) -> None:
    tree = busybox_tree(tmp_path / "tree")
    complete_tree(tree, config(entrypoint=entrypoint, cmd=cmd))
    result = bwrap(tree, f"/{RUNSCRIPT}", *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected + "\n"


def test_runscript_without_any_command(tmp_path: Path) -> None:
    tree = busybox_tree(tmp_path / "tree")
    complete_tree(tree, config(cmd=()))
    result = bwrap(tree, f"/{RUNSCRIPT}")
    assert result.returncode == 1
    assert "no command given" in result.stderr
    assert bwrap(tree, f"/{RUNSCRIPT}", "/bin/echo", "ok").stdout == "ok\n"


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
