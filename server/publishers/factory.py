"""The one place that builds a publisher from the configuration: the backend named there."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ligoenv.store.errors import ConfigError

from .base import Publisher

if TYPE_CHECKING:
    from ligoenv.oci.platform import Platform

    from ..config import ServerConfig


BACKENDS = ("directory", "cvmfs")


class PublisherSettings(Protocol):
    """The parts of the server config's `[publisher]` section a publisher is built from."""

    @property
    def backend(self) -> str: ...
    @property
    def root(self) -> Path: ...
    @property
    def repository(self) -> str | None: ...
    @property
    def cvmfs_server(self) -> str: ...
    @property
    def gateway(self) -> bool: ...
    @property
    def layout(self) -> str: ...
    @property
    def platforms(self) -> tuple[Platform, ...]: ...
    @property
    def keep_ownership(self) -> bool: ...
    @property
    def chains(self) -> bool: ...


def make_publisher(config: PublisherSettings, *, staging_root: Path | None = None) -> Publisher:
    """The publisher `config.backend` names.

    `staging_root` is where the cvmfs backend unpacks before copying into a transaction (a
    local disk, not the repository); the directory backend stages inside its root.
    """
    include_registry = config.layout != "osg"
    if config.backend == "directory":
        from .directory import DirectoryPublisher

        return DirectoryPublisher(Path(config.root), include_registry=include_registry,
                                  keep_ownership=config.keep_ownership,
                                  chains=config.chains)
    if config.backend == "cvmfs":
        from .cvmfs import CvmfsPublisher

        if not config.repository:
            raise ConfigError("publisher.repository: the cvmfs backend needs the repository name, "
                              "e.g. repository = \"singularity.opensciencegrid.org\"")
        return CvmfsPublisher(
            config.repository, mount=Path(config.root),
            staging_root=staging_root or Path("/var/lib/ligoenv/staging"),
            cvmfs_server=config.cvmfs_server, gateway=config.gateway,
            include_registry=include_registry, keep_ownership=config.keep_ownership,
            chains=config.chains)
    raise ConfigError(f"publisher.backend: unknown backend {config.backend!r}; "
                      f"choose one of {', '.join(BACKENDS)}")


def publisher_from(config: ServerConfig) -> Publisher:
    """The publisher of a server config: its `[publisher]` section, staging in its state directory."""
    return make_publisher(config.publisher, staging_root=config.state_dir / "staging")
