"""The shared OCI core: references, digests, manifests, the registry client, blobs and unpacking.

The core never imports the CLI (`ligoenv.cli`) or the server (`ligoenv_server`).
"""
