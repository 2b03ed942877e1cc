"""Fixtures of the client tests: an isolated user environment, images in the real registry, the CLI."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.clientkit import Cli, Pushed, pushed
from testbed.images import build_busybox_image, build_multiplatform_images, push_image
from testbed.registry import RegistryProcess

CLEARED = ("LIGOENV_INDEX", "LIGOENV_RUNTIME", "LIGOENV_LOCKFILE", "LIGOENV_CACHE",
           "LIGOENV_INSECURE_REGISTRIES", "LIGOENV_CONFIG", "DOCKER_CONFIG", "REGISTRY_AUTH_FILE",
           "APPTAINER_BIND", "SINGULARITY_BIND", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "LIGOENV_SITE_CONFIG")


@pytest.fixture()
def userenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A clean user: empty HOME, no ligoenv settings, its own cache; the working directory is `work`.

    Returns the environment for in-process CLI calls (a copy; changes do not leak).
    """
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(work)
    # Only the real bwrap on PATH: the runtimes this host happens to have must not count. Tests
    # that want stand-ins put them on a PATH of their own (`standin_path`).
    programs = tmp_path / "programs"
    programs.mkdir()
    bwrap = shutil.which("bwrap")
    assert bwrap, "bubblewrap is not installed: run scripts/setup.sh"
    (programs / "bwrap").symlink_to(bwrap)
    # DOCKER_HOST: the user has a Docker engine, so a docker stand-in on PATH counts for `auto`.
    return {"HOME": str(home), "PATH": str(programs), "LIGOENV_CACHE": str(tmp_path / "cache"),
            "LIGOENV_CONFIG": str(home / "ligoenv.toml"), "DOCKER_HOST": "unix:///standin/docker.sock"}


@pytest.fixture()
def cli(userenv: dict[str, str]) -> Cli:
    return Cli(dict(userenv))


@pytest.fixture(scope="session")
def images(registry: RegistryProcess) -> dict[str, Pushed]:
    """Images in the session's registry: `stable` and `old` (single platform), `multi` (amd64+arm64)."""
    found = {}
    for tag, greeting in (("stable", "hello from stable\n"), ("old", "hello from old\n")):
        image = build_busybox_image(tag, {"etc/greeting": greeting},
                                    env=("PATH=/usr/bin:/bin", "GREETING=hi there"))
        digest = push_image(registry.host, "client/busybox", tag, image)
        found[tag] = pushed(registry.host, "client/busybox", tag, digest, [image])
    multi = build_multiplatform_images("multi", {"etc/greeting": "hello from multi\n"})
    digest = push_image(registry.host, "client/multi", "latest", multi)
    found["multi"] = pushed(registry.host, "client/multi", "latest", digest, multi)
    return found


@pytest.fixture()
def stopped_registry(tmp_path: Path) -> Iterator[RegistryProcess]:
    """A registry of this test's own, for stopping it."""
    process = RegistryProcess(tmp_path / "own-registry").start()
    yield process
    process.stop()
