"""Docker Hub repository webhooks: a repository and a tag, no digest (the worker resolves it).

The only URL kept from the payload is `callback_url`, and only when it is Docker Hub's own
(https://registry.hub.docker.com/...); the relay itself never fetches it.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from ..config import EndpointConfig
from ..hubcallback import CALLBACK_HOST, is_docker_hub_callback
from .common import Parsed, event_time, publish_request

log = logging.getLogger(__name__)


def parse(body: dict[str, Any], endpoint: EndpointConfig, now: datetime) -> list[Parsed]:
    repository = body["repository"]["repo_name"]
    if "/" not in repository:
        repository = f"library/{repository}"  # official images live under library/
    return [publish_request(endpoint, repository, body["push_data"]["tag"], None, now,
                            where="repository.repo_name",
                            callback_url=_callback_url(body.get("callback_url"), endpoint),
                            event_time=event_time(body["push_data"].get("pushed_at")))]


def _callback_url(url: str | None, endpoint: EndpointConfig) -> str | None:
    if url is None or is_docker_hub_callback(url):
        return url
    # Posting our result to an arbitrary host would let a forged payload aim us at anything.
    log.warning("dropped a callback_url that is not https://%s", CALLBACK_HOST,
                extra={"endpoint": endpoint.name})
    return None
