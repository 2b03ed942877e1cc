"""Harbor webhooks (default format): PUSH_ARTIFACT publishes each tagged resource, DELETE_ARTIFACT
untags it. `resource_url` names a host from the payload and is never used."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..config import EndpointConfig
from ..jobs import Action
from .common import Ignored, Parsed, event_time, publish_request

_ACTIONS = {"PUSH_ARTIFACT": Action.PUBLISH, "DELETE_ARTIFACT": Action.UNTAG}


def parse(body: dict[str, Any], endpoint: EndpointConfig, now: datetime) -> list[Parsed]:
    action = _ACTIONS.get(body["type"])
    if action is None:
        return [Ignored(f"Harbor event {body['type']} is not a push or a delete")]
    repository = body["event_data"]["repository"]["repo_full_name"]
    when = event_time(body.get("occur_at"))
    return [_resource(i, resource, repository, action, endpoint, now, when)
            for i, resource in enumerate(body["event_data"]["resources"])]


def _resource(i: int, resource: dict[str, Any], repository: str, action: Action,
              endpoint: EndpointConfig, now: datetime, when: datetime | None) -> Parsed:
    tag = resource.get("tag") or ""
    # Harbor puts the digest in `tag` when an artifact was pushed by digest only.
    if not tag or tag.startswith(("sha256:", "sha512:")):
        return Ignored(f"{repository}: artifact {resource.get('digest', '?')} has no tag")
    return publish_request(endpoint, repository, tag, resource.get("digest"), now,
                           where=f"event_data.resources[{i}]", action=action, event_time=when)
