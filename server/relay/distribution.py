"""Distribution notifications (CNCF registry, GitLab container registry): `{"events": [...]}`.

One push sends an event per blob and per manifest; only a tagged manifest or index push is a
publish request. Deleting a manifest sends a delete event per tag that pointed at it: the tag
is untagged (recorded in its history, the published image kept), as for Harbor. `target.url`
and `request.host` name hosts from the payload and are never used.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ligoenv.oci.errors import InvalidReference
from ligoenv.oci.manifest import ALL_MANIFEST_TYPES

from ..config import EndpointConfig
from ..jobs import Action
from .common import Ignored, Parsed, event_time, publish_request


def parse(body: dict[str, Any], endpoint: EndpointConfig, now: datetime) -> list[Parsed]:
    # Events in one envelope are unrelated: each is judged on its own.
    return [_event(i, event, endpoint, now) for i, event in enumerate(body["events"])]


def _event(i: int, event: dict[str, Any], endpoint: EndpointConfig, now: datetime) -> Parsed:
    target = event["target"]
    label = f"event {event.get('id', i)} ({target['repository']})"
    if event["action"] == "delete" and target.get("tag"):
        return publish_request(endpoint, target["repository"], target["tag"], None, now,
                               where=f"events[{i}].target", action=Action.UNTAG)
    if event["action"] != "push":
        return Ignored(f"{label}: action {event['action']!r} is not a push or a tag delete")
    media_type = target.get("mediaType", "")
    if media_type not in ALL_MANIFEST_TYPES:
        return Ignored(f"{label}: {media_type or 'untyped'} push is not an image manifest or index")
    if not target.get("tag"):
        return Ignored(f"{label}: manifest pushed by digest, without a tag")
    if "digest" not in target:
        raise InvalidReference(f"events[{i}].target.digest: a tagged manifest push needs a digest")
    return publish_request(endpoint, target["repository"], target["tag"], target["digest"], now,
                           where=f"events[{i}].target", event_time=event_time(event.get("timestamp")))
