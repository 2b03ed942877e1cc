"""A registry client for a registry of the server's configuration, with its credentials.

The one place the server's roles (the pipeline, sync, readiness checks) get their clients from.
"""

from __future__ import annotations

from typing import Any

from ligoenv.oci.registry import RegistryClient

from .config import RegistryConfig


def registry_client(registry: RegistryConfig, **options: Any) -> RegistryClient:
    """A client for a configured registry, with its configured credentials if any; `options`
    go to RegistryClient (timeout, retries)."""
    from ligoenv.oci.credentials import Credentials

    credentials = None
    if registry.username and registry.password is not None:
        credentials = Credentials(registry.username, registry.password.reveal(), "server config")
    return RegistryClient(registry.host, insecure=registry.insecure, credentials=credentials,
                          **options)
