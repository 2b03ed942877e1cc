"""The OCI core: references, digests, manifests, the registry client, blobs and unpacking.

The bottom layer: it imports nothing of ligoenv outside `ligoenv.oci` (tests/test_layers.py
checks), so that the store, the client and the server can all build on it.
"""
