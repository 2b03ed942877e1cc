"""`ligoenv path` as a subprocess on a publish root the real directory publisher wrote: the
digest-named tree, and with --platform / --for-host the tag's per-platform link."""

from __future__ import annotations

import platform
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from ligoenv_server.publishers.directory import DirectoryPublisher
from testbed.images import TAG_FILE
from testbed.staging import REGISTRY, REPOSITORY, T0, stage

LIGOENV = str(Path(sys.executable).parent / "ligoenv")
REF = f"{REGISTRY}/{REPOSITORY}:nightly"


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    root = tmp_path / "publish"
    pub = DirectoryPublisher(root)
    pub.publish(stage(pub, "monday", platforms=("linux/amd64", "linux/arm64")))
    return root


def ligoenv(env: dict[str, str], root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LIGOENV, "path", "--index", str(root), *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_without_a_platform_it_is_the_digest_named_tree(userenv: dict[str, str], root: Path) -> None:
    done = ligoenv(userenv, root, REF)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).parent.parent == root / ".images"


def test_a_platform_prints_the_link_that_follows_the_tag(userenv: dict[str, str], root: Path) -> None:
    done = ligoenv(userenv, root, REF, "--platform", "linux/arm64")
    link = root / ".multiarch/linux-arm64" / REGISTRY / f"{REPOSITORY}:nightly"
    assert (done.returncode, done.stdout) == (0, f"{link}\n"), done.stderr
    assert (link / TAG_FILE).read_text() == "monday\n"
    pub = DirectoryPublisher(root)
    pub.publish(stage(pub, "tuesday", platforms=("linux/amd64", "linux/arm64"),
                      when=T0 + timedelta(hours=1)))
    assert ligoenv(userenv, root, REF, "--platform", "linux/arm64").stdout == f"{link}\n"
    assert (link / TAG_FILE).read_text() == "tuesday\n"  # the same path, the new image


@pytest.mark.skipif(platform.machine() not in ("x86_64", "aarch64"), reason="an x86_64 or aarch64 host")
def test_for_host_uses_the_uname_spelling(userenv: dict[str, str], root: Path) -> None:
    done = ligoenv(userenv, root, REF, "--for-host")
    expected = root / f".multiarch/linux-{platform.machine()}" / REGISTRY / f"{REPOSITORY}:nightly"
    assert (done.returncode, done.stdout) == (0, f"{expected}\n"), done.stderr


def test_a_digest_reference_keeps_its_tree(userenv: dict[str, str], root: Path) -> None:
    tree = Path(ligoenv(userenv, root, REF, "--platform", "linux/amd64").stdout.strip()).resolve()
    pinned = f"{REGISTRY}/{REPOSITORY}@sha256:{tree.name}"
    done = ligoenv(userenv, root, pinned, "--platform", "linux/amd64")
    assert (done.returncode, Path(done.stdout.strip())) == (0, tree), done.stderr


def test_a_root_without_links_says_how_to_get_them(userenv: dict[str, str], root: Path) -> None:
    (root / ".multiarch/linux-arm64" / REGISTRY / f"{REPOSITORY}:nightly").unlink()
    done = ligoenv(userenv, root, REF, "--platform", "linux/arm64")
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "publish the tag again" in done.stderr


def test_platform_and_for_host_together_are_refused(userenv: dict[str, str], root: Path) -> None:
    done = ligoenv(userenv, root, REF, "--platform", "linux/arm64", "--for-host")
    assert done.returncode != 0 and "not both" in done.stderr
