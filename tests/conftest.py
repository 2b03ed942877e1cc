"""Shared fixtures: a real Distribution registry per session, scripted HTTP stubs, image helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.httpstub import Silent, Stub
from testbed.registry import RegistryProcess


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """The real `docker-registry` on a free loopback port, for the whole session."""
    process = RegistryProcess(tmp_path_factory.mktemp("registry")).start()
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def no_site_config(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's site config file is looked for under an empty directory, never in /etc."""
    import ligoenv.client.settings

    empty = tmp_path_factory.getbasetemp() / "no-site-config"
    monkeypatch.setattr(ligoenv.client.settings, "SITE_CONFIG", empty / "etc" / "config.toml")
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(empty / "xdg"))
    monkeypatch.delenv("LIGOENV_SITE_CONFIG", raising=False)


@pytest.fixture()
def layout_dir(tmp_path: Path) -> Path:
    return tmp_path / "layout"


@pytest.fixture()
def silent() -> Iterator[Silent]:
    server = Silent()
    yield server
    server.stop()


@pytest.fixture()
def stub() -> Iterator[Stub]:
    server = Stub()
    yield server
    server.stop()
