"""Whether a webhook event may still move its tag: the registry says what the tag means now.

Events arrive late, twice, or out of order (queue retries, a registry replaying its backlog). One
rule decides for pushes and untags alike: a stale or replayed event never moves a tag back.
"""

from __future__ import annotations

import logging

from ligoenv.oci.digest import Digest
from ligoenv.oci.errors import NotFound
from ligoenv.oci.reference import Reference
from ligoenv.oci.registry import RegistryClient
from ligoenv.store.index import RepositoryView

from .jobs import PublishRequest

log = logging.getLogger(__name__)


def registry_tag(client: RegistryClient, request: PublishRequest) -> Digest | None:
    """The digest the registry's tag `request.tag` points at now; None when it has no such tag."""
    assert request.tag is not None
    try:
        return client.resolve(Reference(request.registry, request.repository, request.tag))
    except NotFound:
        return None


def may_move_tag(request: PublishRequest, event: Digest | None, now: Digest | None,
                 index: RepositoryView | None) -> bool:
    """Whether the event that says "tag -> `event`" (None: the tag was deleted) may move the tag,
    the registry's tag being `now` (None: gone).

    An untag never removes a tag the registry still has. A push whose tag has moved on since is
    stale once the index holds that newer state: it is placed in history, the tag stays.
    """
    assert request.tag is not None
    if now == event:
        return True
    if event is None:
        log.warning("stale untag: %s:%s still exists upstream (%s); not untagged",
                    request.repository, request.tag, now)
        return False
    history = index.history(request.tag, limit=1) if index else []
    if history and history[-1].digest == now and history[-1].since <= request.received_at:
        log.warning("stale event: %s:%s now points at %s; publishing %s without moving the tag",
                    request.repository, request.tag, now, event)
        return False
    return True
