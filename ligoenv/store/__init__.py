"""The shared store: what the server writes and the client reads.

The publish root and its index (tag history, digest records, pins), lockfiles, Apptainer
completion of unpacked trees, provenance, JSON Schemas and bounded JSON, and the errors of these
layers. Imports only the OCI core (`ligoenv.oci`) below it; never the client or the server.
"""
