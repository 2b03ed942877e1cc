"""The relay: authenticated, schema-checked webhook endpoints that feed the queue."""
