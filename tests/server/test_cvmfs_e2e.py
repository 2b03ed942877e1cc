"""A webhook all the way into a CVMFS repository (the stand-in `cvmfs_server` enforces the
transaction rules; CVMFS itself cannot be installed here), then read back by the client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.images import TAG_FILE, build_busybox_image, push_image
from testbed.indexfiles import read_index
from testbed.stack import Stack, new_stack, wait_for

FAKE = Path(__file__).resolve().parents[2] / "testbed" / "fake_cvmfs_server"
REPO = "containers.ligo.example.org"
LIGOENV = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "ligoenv"


@pytest.fixture()
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    cvmfs_root, state = tmp_path / "cvmfs", tmp_path / "cvmfs-state"
    cvmfs_root.mkdir()
    monkeypatch.setenv("FAKE_CVMFS_ROOT", str(cvmfs_root))  # inherited by ligoenv-server
    monkeypatch.setenv("FAKE_CVMFS_STATE", str(state))
    subprocess.run([str(FAKE), "mkfs", REPO], check=True, capture_output=True)
    publisher = "\n".join([
        'backend = "cvmfs"', f'repository = "{REPO}"', f'root = "{cvmfs_root / REPO}"',
        f'cvmfs_server = "{FAKE}"', 'layout = "osg"'])
    stack = new_stack(tmp_path, publisher=publisher)
    stack.start("serve")
    yield stack
    stack.stop_all(signal.SIGKILL)
    stack.registry.stop()


def test_webhook_to_cvmfs_transaction_and_back(stack: Stack, tmp_path: Path) -> None:
    mount = tmp_path / "cvmfs" / REPO
    digest = push_image(stack.registry.host, "lvk/pycbc", "v2", build_busybox_image("cvmfs"))
    wait_for(lambda: (i := read_index(mount, stack.registry.host, "lvk/pycbc")) is not None
             and i.current("v2") == digest,
             "the image to be published into the repository")
    log = tmp_path / "cvmfs-state" / "log"

    def commands() -> list[list[str]]:
        return [json.loads(line) for line in log.read_text().splitlines()]

    def all_published() -> bool:  # the index is visible inside the transaction, before publish
        done = commands()
        return sum(c[0] == "transaction" for c in done) == sum(c[0] == "publish" for c in done)

    wait_for(all_published, "every transaction to be published")
    # OSG layout: no registry host in the name users see.
    assert (mount / "lvk/pycbc:v2" / TAG_FILE).read_text() == "cvmfs\n"
    done = [c for c in commands() if c[0] in ("transaction", "publish", "abort")]
    assert [c[0] for c in done] == ["transaction", "publish"] * (len(done) // 2)  # never an abort
    # layer chains: the image (two layers) is a template clone of the chain of its lower one
    templates = [c[2] for c in done if c[:2] == ["transaction", "-T"]]
    assert len(templates) == 1 and templates[0].endswith(f"=/.images/{digest.hex[:2]}/{digest.hex}")
    assert "in transaction" not in subprocess.run([str(FAKE), "list"], capture_output=True,
                                                  text=True).stdout

    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LIGOENV_INDEX": str(mount),
           "LIGOENV_CONFIG": str(tmp_path / "none.toml"), "LIGOENV_SITE_CONFIG": ""}
    path = subprocess.run([str(LIGOENV), "path", f"{stack.registry.host}/lvk/pycbc:v2"],
                          capture_output=True, text=True, env=env, check=True).stdout.strip()
    assert os.path.realpath(path) == os.path.realpath(mount / "lvk/pycbc:v2")
