"""JSON Schemas for lockfiles, indexes, jobs, server config and webhooks; loaded as the data package `ligoenv.schemafiles`."""
