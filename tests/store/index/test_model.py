"""The index as values: history queries, the tag-history rule, platforms and paths."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

import pytest

from ligoenv.oci.errors import NotFound, PlatformNotFound
from ligoenv.store.errors import HistoryTooShort
from ligoenv.store.index import RepositoryIndex
from ligoenv.store.index.model import place_event, select_events
from ligoenv.store.times import format_time
from testbed.indexfiles import DAY, REGISTRY, REPOSITORY, T0, digest, manifest, multi, sample


def test_current_history_and_at() -> None:
    index = sample()
    assert index.current("nightly") == digest("c") and index.current("nope") is None
    assert [(e.digest, e.since, e.until, e.event) for e in index.history("nightly")] == [
        (digest("a"), T0, T0 + DAY, "push"), (digest("b"), T0 + DAY, T0 + 2 * DAY, "push"),
        (None, T0 + 2 * DAY, T0 + 3 * DAY, "untag"), (digest("c"), T0 + 3 * DAY, None, "push")]
    assert index.at("nightly", T0) == digest("a")
    assert index.at("nightly", T0 + DAY - timedelta(seconds=1)) == digest("a")
    assert index.at("nightly", T0 + DAY) == digest("b")
    assert index.at("nightly", T0 + 30 * DAY) == digest("c")
    assert index.at("nightly", datetime(2026, 3, 2, 14, 0, tzinfo=timezone(timedelta(hours=2)))) \
        == digest("b")  # 12:00 UTC
    assert index.at("nightly", datetime(2026, 3, 2, 12, 0)) == digest("b")  # naive is UTC


def test_at_errors() -> None:
    index = sample()
    with pytest.raises(HistoryTooShort) as caught:
        index.at("nightly", T0 - DAY)
    assert str(caught.value) == (f"history of {REGISTRY}/{REPOSITORY}:nightly starts at "
                                 "2026-03-01T12:00:00Z, after 2026-02-28T12:00:00Z")
    with pytest.raises(NotFound, match="did not exist at 2026-03-03T13:00:00Z"):
        index.at("nightly", T0 + 2 * DAY + timedelta(hours=1))
    with pytest.raises(NotFound, match="tag 'nope'"):
        index.at("nope", T0)


def test_move_tag_is_a_no_op_when_nothing_changes() -> None:
    index = sample()
    before = copy.deepcopy(index)
    assert not index.move_tag("nightly", digest("c"), T0 + 9 * DAY, "cli")
    assert not index.untag("never", T0, "cli")
    assert index == before


def test_events_delivered_out_of_order_keep_one_time_line() -> None:
    index = RepositoryIndex.empty(REGISTRY, REPOSITORY)
    index.move_tag("t", digest("c"), T0 + 2 * DAY, "cli")
    assert index.move_tag("t", digest("b"), T0 + DAY, "cli")  # late: older than c
    assert index.move_tag("t", digest("a"), T0, "cli")  # older than everything known
    assert index.current("t") == digest("c")
    assert [(e.digest, e.since, e.until) for e in index.history("t")] == [
        (digest("a"), T0, T0 + DAY), (digest("b"), T0 + DAY, T0 + 2 * DAY),
        (digest("c"), T0 + 2 * DAY, None)]
    assert not index.move_tag("t", digest("b"), T0 + DAY + timedelta(hours=1), "cli")


def test_platforms_and_paths() -> None:
    index = RepositoryIndex.empty(REGISTRY, REPOSITORY)
    for record in multi("top", {"linux/amd64": "amd", "linux/arm64": "arm", "linux/arm/v7": "v7"}):
        index.record_image(record)
    top = digest("top")
    assert index.platform_digest(top, "linux/arm64/v8") == digest("arm")
    assert index.platform_digest(top, "linux/arm/v7") == digest("v7")
    assert index.path_of(top, "linux/amd64") == f".images/{digest('amd').hex[:2]}/{digest('amd').hex}"
    assert index.path_of(digest("amd")) == index.path_of(top, "linux/amd64")
    assert index.path_of(digest("unknown"), "linux/amd64") is None
    with pytest.raises(PlatformNotFound, match="available: linux/amd64, linux/arm/v7, linux/arm64"):
        index.platform_digest(top, "linux/s390x")
    with pytest.raises(NotFound, match="not in the publish index"):
        index.platform_digest(digest("unknown"), "linux/amd64")


def test_record_image_keeps_the_first_publication() -> None:
    index = RepositoryIndex.empty(REGISTRY, REPOSITORY)
    index.record_image(manifest("a", published=T0))
    index.record_image(manifest("a", published=T0 + DAY))
    assert index.digests[str(digest("a"))].published == T0


def test_format_time() -> None:
    assert format_time(T0) == "2026-03-01T12:00:00Z"
    assert format_time(T0.replace(microsecond=1500)) == "2026-03-01T12:00:00.001500Z"
    assert format_time(datetime(2026, 3, 1, 14, tzinfo=timezone(timedelta(hours=2)))) == \
        "2026-03-01T12:00:00Z"




def test_place_event_is_the_one_rule_for_late_and_repeated_events() -> None:
    events = sample().history("nightly")  # a, b, untag, c
    assert place_event(events, digest("c"), T0 + 9 * DAY) is None  # says what is known
    assert place_event(events, digest("x"), T0 + 9 * DAY) == 4  # a new newest event
    assert place_event(events, digest("a"), T0 + DAY / 2) is None  # a replay, late
    assert place_event(events, digest("x"), T0 + DAY / 2) == 1  # late: never the newest
    assert place_event(events, digest("x"), T0 - DAY) == 0  # older than everything known
    assert place_event([], digest("x"), T0) == 0


def test_select_events_takes_the_newest_in_a_window() -> None:
    events = sample().history("nightly")
    assert [e.since for e in select_events(events, limit=2)] == [T0 + 2 * DAY, T0 + 3 * DAY]
    assert select_events(events, since=T0 + DAY, before=T0 + 2 * DAY) == [events[1]]
    assert sample().history("nightly", limit=1) == [events[-1]]
