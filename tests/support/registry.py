"""The throwaway registry of the tests: see ligoenv_server.localregistry."""

from ligoenv_server.localregistry import RegistryProcess, free_port, skopeo_digest, skopeo_push

__all__ = ["RegistryProcess", "free_port", "skopeo_digest", "skopeo_push"]
