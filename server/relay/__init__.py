"""The relay: authenticated, schema-checked webhook endpoints that feed the queue."""

from .routes import create_relay_app

__all__ = ["create_relay_app"]
