"""The researcher's story across both sides: the server publishes, the client locks and runs,
the tag moves, and the paper's lockfile still runs the first digest."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from ligoenv.oci.digest import Digest
from ligoenv.oci.registry import RegistryClient
from ligoenv.store.index.writer import convert
from ligoenv.store.times import format_time
from testbed.images import build_busybox_image, push_image
from testbed.indexfiles import read_index
from testbed.stack import Stack, new_stack, wait_for

LIGOENV = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "ligoenv"
REPOSITORY = "lvk/lalsuite"


@pytest.fixture()
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = new_stack(tmp_path)
    stack.start("serve")
    yield stack
    stack.stop_all()
    stack.registry.stop()


def ligoenv(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(stack.workdir / "home"),
           "LIGOENV_INDEX": str(stack.root), "LIGOENV_CACHE": str(stack.workdir / "cache"),
           "LIGOENV_CONFIG": str(stack.workdir / "none.toml"), "LIGOENV_SITE_CONFIG": ""}
    return subprocess.run([str(LIGOENV), *args], capture_output=True, text=True, env=env,
                          cwd=stack.workdir, timeout=120, check=False)


def publish(stack: Stack, tag_content: str) -> Digest:
    digest = push_image(stack.registry.host, REPOSITORY, "nightly", build_busybox_image(tag_content))
    wait_for(lambda: (index := stack.index(REPOSITORY)) is not None
             and index.current("nightly") == digest, f"{tag_content} to be published")
    return digest


def test_lock_run_move_the_tag_and_reproduce(stack: Stack) -> None:
    ref = f"{stack.registry.host}/{REPOSITORY}:nightly"
    first = publish(stack, "monday")
    locked = ligoenv(stack, "lock", "--name", f"lal={ref}", "-o", "paper.lock")
    assert locked.returncode == 0, locked.stderr
    lock = json.loads((stack.workdir / "paper.lock").read_text())
    assert lock["environments"]["lal"]["digest"] == str(first)

    run = ligoenv(stack, "run", "--runtime", "bwrap", ref, "--", "cat", "/etc/ligoenv-image-tag")
    assert (run.returncode, run.stdout) == (0, "monday\n"), run.stderr
    assert ligoenv(stack, "run", "--runtime", "bwrap", ref, "--", "sh", "-c", "exit 7").returncode == 7

    second = publish(stack, "tuesday")
    assert second != first
    pinned = ligoenv(stack, "run", "--runtime", "bwrap", "--lock", "paper.lock", "lal", "--",
                     "cat", "/etc/ligoenv-image-tag")
    assert pinned.stdout == "monday\n", pinned.stderr
    now = ligoenv(stack, "run", "--runtime", "bwrap", ref, "--", "cat", "/etc/ligoenv-image-tag")
    assert now.stdout == "tuesday\n"

    index = stack.index(REPOSITORY)
    assert index is not None
    moved_at = index.history("nightly")[1].since
    before = format_time(moved_at - timedelta(milliseconds=1))
    at = ligoenv(stack, "resolve", ref, "--at", before)
    assert at.stdout.strip() == f"{stack.registry.host}/{REPOSITORY}@{first}", at.stderr
    too_early = ligoenv(stack, "resolve", ref, "--at", "2020-01-01")
    assert too_early.returncode != 0 and "history" in too_early.stderr

    verified = ligoenv(stack, "verify", "paper.lock")
    assert verified.returncode == 0, verified.stderr
    assert f"moved to {second}" in verified.stdout + verified.stderr

    # The pinned digest disappears from the registry and from the index: verify must say so.
    with RegistryClient(stack.registry.host, anonymous=True) as client:
        client.delete_manifest(REPOSITORY, first)
    edited = read_index(stack.root, stack.registry.host, REPOSITORY)
    assert edited is not None
    del edited.digests[str(first)]
    edited.tags["nightly"] = [e for e in edited.tags["nightly"] if e.digest != first]
    shutil.rmtree(stack.root / ".ligoenv/index/_v2" / stack.registry.host / REPOSITORY)
    convert(stack.root, edited).apply()
    gone = ligoenv(stack, "verify", "paper.lock")
    assert gone.returncode != 0
    assert str(first) in gone.stderr and gone.stderr.count("\n") == 1


def test_htcondor_path_is_the_published_tree(stack: Stack) -> None:
    ref = f"{stack.registry.host}/{REPOSITORY}:nightly"
    digest = publish(stack, "condor")
    path = ligoenv(stack, "path", ref).stdout.strip()
    assert os.path.isdir(path) and Path(path).name == digest.hex
    assert (Path(path) / ".singularity.d" / "runscript").is_file()
