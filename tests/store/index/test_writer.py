"""The version-2 writer: only the files a change needs, bounded in size, in a safe order."""

from __future__ import annotations

import itertools
from datetime import timedelta
from pathlib import Path

import pytest

from ligoenv.oci.digest import Digest
from ligoenv.store.errors import PublishIndexError
from ligoenv.store.index import TagEvent, paths
from ligoenv.store.index.files import LocalFiles
from ligoenv.store.index.reader import StoredRepository
from ligoenv.store.index.writer import IndexChange, IndexWriter, convert
from testbed.indexfiles import (
    DAY,
    REGISTRY,
    REPOSITORY,
    T0,
    digest,
    manifest,
    read_index,
    sample,
    save_v1,
    snapshot,
)

SEGMENT = 4  # events per segment in these tests: boundaries come quickly


@pytest.fixture(autouse=True)
def small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paths, "SEGMENT_EVENTS", SEGMENT)


def push(writer: IndexWriter, tag: str, name: str, when: object, *,
         repository: str = REPOSITORY) -> IndexChange:
    change = writer.plan_publish(REGISTRY, repository, [manifest(name)], tag, digest(name),
                                 when, "webhook:test")  # type: ignore[arg-type]
    change.apply()
    return change


def stored(root: Path, repository: str = REPOSITORY) -> StoredRepository:
    return StoredRepository(LocalFiles(root), REGISTRY, repository)


def test_a_tag_move_writes_its_pointer_and_newest_segment_only(tmp_path: Path) -> None:
    writer = IndexWriter(tmp_path)
    first = push(writer, "nightly", "d0", T0)
    assert [p for p, _ in first.writes] == [
        paths.record_file(REGISTRY, REPOSITORY, digest("d0")),
        paths.segment_file(REGISTRY, REPOSITORY, "nightly", 0),
        paths.pointer_file(REGISTRY, REPOSITORY, "nightly"),
        paths.marker_file(REGISTRY, REPOSITORY)]  # records first, the pointer after its history
    for day in range(1, 2 * SEGMENT + 5):
        change = push(writer, "nightly", f"d{day}", T0 + day * DAY)
        assert len(change.writes) == 3 and change.size < 2 * 1024
    # Moving back to a digest already recorded writes no record at all.
    again = push(writer, "nightly", "d0", T0 + 1000 * DAY)
    events = 2 * SEGMENT + 6
    segments = -(-events // SEGMENT)
    assert [p for p, _ in again.writes] == [
        paths.segment_file(REGISTRY, REPOSITORY, "nightly", segments - 1),
        paths.pointer_file(REGISTRY, REPOSITORY, "nightly")]
    repo = stored(tmp_path)
    pointer = repo.pointer("nightly")
    assert pointer is not None and (pointer.segments, pointer.events) == (segments, events)
    assert repo.current("nightly") == digest("d0") and pointer.first == T0
    index = read_index(tmp_path, REGISTRY, REPOSITORY)  # every file valid against its schema
    assert index is not None and len(index.tags["nightly"]) == 2 * SEGMENT + 6


def test_a_replayed_event_writes_nothing(tmp_path: Path) -> None:
    writer = IndexWriter(tmp_path)
    push(writer, "nightly", "a", T0)
    push(writer, "nightly", "b", T0 + DAY)
    before = snapshot(tmp_path)
    assert not push(writer, "nightly", "b", T0 + DAY).changed
    assert not push(writer, "nightly", "a", T0 + DAY / 2).changed  # late, and known
    assert snapshot(tmp_path) == before


def test_a_late_event_lands_in_its_old_segment_and_never_moves_the_tag(tmp_path: Path) -> None:
    writer = IndexWriter(tmp_path)
    for day in range(SEGMENT * 4):
        push(writer, "nightly", f"d{day}", T0 + day * DAY)
    late = push(writer, "nightly", "late", T0 + 10 * DAY + timedelta(hours=1))
    assert [p for p, _ in late.writes][:2] == [
        paths.record_file(REGISTRY, REPOSITORY, digest("late")),
        paths.segment_file(REGISTRY, REPOSITORY, "nightly", 10 // SEGMENT)]
    assert late.current == digest(f"d{SEGMENT * 4 - 1}")
    repo = stored(tmp_path)
    assert repo.current("nightly") == digest(f"d{SEGMENT * 4 - 1}")
    assert repo.at("nightly", T0 + 10 * DAY + timedelta(hours=2)) == digest("late")
    assert repo.at("nightly", T0 + 11 * DAY) == digest("d11")
    older = push(writer, "nightly", "older", T0 - DAY)  # before everything known
    assert older.current == digest(f"d{SEGMENT * 4 - 1}")
    events = stored(tmp_path).history("nightly")
    assert events[0].digest == digest("older") and events[0].until == T0
    assert [e.since for e in events] == sorted(e.since for e in events)
    assert all(e.until == n.since for e, n in itertools.pairwise(events))


def test_untag(tmp_path: Path) -> None:
    writer = IndexWriter(tmp_path)
    assert not writer.plan_untag(REGISTRY, REPOSITORY, "never", T0, "cli").changed
    push(writer, "v1", "a", T0)
    change = writer.plan_untag(REGISTRY, REPOSITORY, "v1", T0 + DAY, "webhook:harbor/lab")
    change.apply()
    assert change.current is None and stored(tmp_path).has_tag("v1")
    assert [(e.digest, e.event) for e in stored(tmp_path).history("v1")] == [
        (digest("a"), "push"), (None, "untag")]
    late = writer.plan_untag(REGISTRY, REPOSITORY, "v1", T0 - DAY, "cli")  # before it existed
    assert late.current is None


def test_an_invalid_file_is_never_written(tmp_path: Path) -> None:
    change = IndexWriter(tmp_path).plan_publish(REGISTRY, REPOSITORY, [manifest("a")], "v1",
                                                digest("a"), T0, "")  # an empty source
    with pytest.raises(PublishIndexError, match="refusing to write index file"):
        change.apply()
    assert not (tmp_path / ".ligoenv").exists()


def test_the_first_write_to_a_version_1_repository_converts_it(tmp_path: Path) -> None:
    save_v1(tmp_path, sample())
    change = push(IndexWriter(tmp_path), "nightly", "d", T0 + 9 * DAY)
    assert change.writes[-1][0] == paths.marker_file(REGISTRY, REPOSITORY)  # the marker last
    index = read_index(tmp_path, REGISTRY, REPOSITORY)
    expected = sample()
    expected.record_image(manifest("d"))
    expected.move_tag("nightly", digest("d"), T0 + 9 * DAY, "webhook:test")
    assert index is not None and index.tags == expected.tags and index.digests == expected.digests
    assert stored(tmp_path).legacy() is None  # the version-1 file is no longer read


@pytest.mark.parametrize("first", ["lab/app.json/x", "lab/app.lock/x", "lab/app/_x"[:-3] + "/x"])
def test_repository_names_never_collide_with_index_files(tmp_path: Path, first: str) -> None:
    writer = IndexWriter(tmp_path)
    push(writer, "latest", "x", T0, repository=first)
    push(writer, "latest", "app", T0, repository="lab/app")
    push(writer, "latest", "app2", T0 + DAY, repository="lab/app")
    assert stored(tmp_path, first).current("latest") == digest("x")
    assert stored(tmp_path, "lab/app").current("latest") == digest("app2")
    assert stored(tmp_path, "lab/app").tag_names() == ["latest"]


def test_convert_writes_segments_of_bounded_size(tmp_path: Path) -> None:
    index = sample()
    index.tags["many"] = [TagEvent(Digest.of_bytes(str(i).encode()), T0 + i * DAY, None, "cli")
                          for i in range(3 * SEGMENT + 1)]
    change = convert(tmp_path, index)
    segments = [p for p, _ in change.writes if "/_tags/many/history/" in p]
    assert len(segments) == 4
    assert max(len(text) for _, text in change.writes) < 64 * 1024


@pytest.mark.parametrize(("repository", "tag"), [("sync/history", "latest"), ("lab/app", "_digests"),
                                                 ("lab/history/x", "history")])
def test_names_that_look_like_ours_are_written_and_read(tmp_path: Path, repository: str,
                                                        tag: str) -> None:
    push(IndexWriter(tmp_path), tag, "a", T0, repository=repository)
    assert stored(tmp_path, repository).current(tag) == digest("a")
    assert paths.is_immutable(paths.record_file(REGISTRY, repository, digest("a")))
    assert not paths.is_immutable(paths.pointer_file(REGISTRY, repository, tag))
