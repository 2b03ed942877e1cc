"""Docker Hub's webhook callback: which URLs are Docker Hub's own, and telling it how publishing went.

The relay keeps a payload's `callback_url` only when it passes `is_docker_hub_callback`; the
worker checks it again before posting the outcome (defence in depth: a URL from a payload is
never fetched otherwise).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from .jobs import PublishRequest

CALLBACK_HOST = "registry.hub.docker.com"
log = logging.getLogger(__name__)


def is_docker_hub_callback(url: str) -> bool:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (parts.scheme == "https" and parts.hostname == CALLBACK_HOST and port is None
            and parts.username is None and parts.password is None
            and parts.netloc == CALLBACK_HOST)


def docker_hub_callback(request: PublishRequest, state: str, description: str) -> None:
    """Tell Docker Hub how publishing went, at a callback URL the relay validated."""
    if not request.callback_url:
        return
    if not is_docker_hub_callback(request.callback_url):  # checked again: defence in depth
        return
    import requests

    body = {"state": state, "description": description[:255], "context": "ligoenv"}
    try:
        requests.post(request.callback_url, json=body, timeout=10, allow_redirects=False)
    except requests.RequestException as error:
        log.warning("Docker Hub callback failed: %s", type(error).__name__)
