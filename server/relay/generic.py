"""Generic publish requests from CI pipelines: `{"image": "host/repo:tag", "digest": "sha256:..."}`,
signed with HMAC-SHA256. The image's host must be the endpoint's registry: the relay never lets a
payload choose where the worker pulls from."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ligoenv.oci.errors import InvalidReference, UsageError
from ligoenv.oci.reference import Reference

from ..config import EndpointConfig
from .common import Parsed, publish_request


def parse(body: dict[str, Any], endpoint: EndpointConfig, now: datetime) -> list[Parsed]:
    try:
        reference = Reference.parse_exact(body["image"])
    except InvalidReference as error:
        raise InvalidReference(f"image: {error}") from None
    if reference.registry != endpoint.registry_host:
        raise UsageError(f"image: registry {reference.registry} is not {endpoint.registry_host}, "
                         f"the registry of endpoint {endpoint.name}")
    pinned = str(reference.digest) if reference.digest else None
    digest = body.get("digest", pinned)
    if pinned is not None and digest != pinned:
        raise UsageError(f"digest: {digest} differs from the digest in image ({pinned})")
    return [publish_request(endpoint, reference.repository, reference.tag, digest, now, where="image")]
