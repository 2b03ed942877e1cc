"""What every webhook parser shares: the Ignored outcome, building checked publish requests, allowlists."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase

from ligoenv.oci.digest import Digest
from ligoenv.oci.errors import InvalidReference
from ligoenv.oci.reference import Reference

from ..config import EndpointConfig
from ..jobs import Action, PublishRequest


@dataclass(frozen=True)
class Ignored:
    """An event acknowledged but not queued, with the reason the sender gets back."""

    reason: str

    def to_json(self) -> dict[str, str]:
        return {"reason": self.reason}


Parsed = PublishRequest | Ignored


def publish_request(endpoint: EndpointConfig, repository: str, tag: str | None, digest: str | None,
                    now: datetime, *, where: str, action: Action = Action.PUBLISH,
                    callback_url: str | None = None,
                    event_time: datetime | None = None) -> PublishRequest:
    """A request for `repository` on the endpoint's own registry, whatever host the payload names.

    Raises InvalidReference naming `where` (the payload field) when a name or digest is malformed.
    """
    text = f"{endpoint.registry_host}/{repository}" + (f":{tag}" if tag else "")
    try:
        reference = Reference.parse_exact(text)
        checked_digest = str(Digest.parse(digest)) if digest is not None else None
    except InvalidReference as error:
        raise InvalidReference(f"{where}: {error}") from None
    # Each name must come back from the parser exactly as the payload spelled it.
    if reference.repository != repository:
        # e.g. "ubuntu" on Docker Hub would silently become "library/ubuntu": callers normalise.
        raise InvalidReference(f"{where}: repository {repository!r} is not in canonical form "
                               f"(expected {reference.repository!r})")
    if tag and reference.tag != tag:
        raise InvalidReference(f"{where}: tag {tag!r} is not a valid tag")
    # The endpoint's platforms travel with the request: workers need not share this config.
    return PublishRequest(registry=reference.registry, repository=repository, tag=tag,
                          digest=checked_digest, source=endpoint.source, received_at=now,
                          action=action, callback_url=callback_url,
                          platforms=tuple(str(p) for p in endpoint.platforms or ()),
                          event_time=event_time)


def event_time(value: object) -> datetime | None:
    """A sender's event time (RFC 3339 text, or Unix seconds), or None when it gives none we can
    read: it only feeds the latency metric, so it never makes a delivery fail."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    # Go writes nanoseconds; Python reads at most microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip())
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def allowed(endpoint: EndpointConfig, request: PublishRequest) -> bool:
    """True when a glob of the endpoint matches: `lvk/*` matches any tag, `lvk/x:nightly` one tag."""
    if not endpoint.allow:
        return True
    named = f"{request.repository}:{request.tag or ''}"
    return any(fnmatchcase(named if ":" in pattern else request.repository, pattern)
               for pattern in endpoint.allow)


def not_allowed(endpoint: EndpointConfig, request: PublishRequest) -> Ignored:
    name = request.repository + (f":{request.tag}" if request.tag else "")
    return Ignored(f"repository {name} not in allowlist of endpoint {endpoint.name}")
