"""JSON Schemas for lockfiles, indexes, jobs, server config and webhooks; loaded via importlib.resources."""
