"""ligoenv: reproducible container environments, pinned by digest and run anywhere.

Three layers, imports pointing down: `ligoenv.oci` (the OCI core), `ligoenv.store` (the publish
root and index formats, shared with the server), `ligoenv.client` and `ligoenv.cli` (the client).
"""

from ligoenv.oci.version import __version__

__all__ = ["__version__"]
