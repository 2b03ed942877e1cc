"""Index JSON: both versions parse into values, and every bad field is named in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ligoenv.store.errors import PublishIndexError
from ligoenv.store.index import paths
from ligoenv.store.index.codec import IndexParser
from ligoenv.store.index.files import LocalFiles
from ligoenv.store.index.reader import StoredRepository, open_reader
from ligoenv.store.index.writer import IndexWriter, convert
from ligoenv.store.schemas import validate
from testbed.indexfiles import DAY, REGISTRY, REPOSITORY, T0, digest, manifest, sample, v1_json

OLD_ROOT = Path(__file__).resolve().parents[2] / "data" / "index-v1"


def test_a_version_1_document_round_trips() -> None:
    document = v1_json(sample())
    validate(document, "index", PublishIndexError, "index.json")
    again = IndexParser("index.json").index(document)
    assert again.tags == sample().tags and again.digests == sample().digests


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda d: d.pop("tags"), "tags"),
    (lambda d: d["tags"]["nightly"]["history"][0].update({"from": "yesterday"}),
     "tags.nightly.history[0].from"),
    (lambda d: d["tags"]["nightly"]["history"][0].update({"digest": "sha256:xyz"}),
     "tags.nightly.history[0].digest"),
    (lambda d: next(iter(d["digests"].values())).update({"size": "big"}), ".size"),
    (lambda d: d.update({"schemaVersion": 3}), "schemaVersion"),
])
def test_invalid_version_1_documents_name_the_field(mutate: Any, field: str) -> None:
    document = v1_json(sample())
    mutate(document)
    with pytest.raises(PublishIndexError) as caught:
        IndexParser("index.json").index(document)
    message = str(caught.value)
    assert message.startswith("index.json: ") and field in message and "\n" not in message


@pytest.mark.parametrize(("relative", "mutate", "field"), [
    (paths.pointer_file(REGISTRY, REPOSITORY, "nightly"), lambda d: d.update({"segments": 0}),
     "segments"),
    (paths.pointer_file(REGISTRY, REPOSITORY, "nightly"), lambda d: d.update({"tag": "other"}), "tag"),
    (paths.segment_file(REGISTRY, REPOSITORY, "nightly", 0), lambda d: d.update({"events": []}),
     "events"),
    (paths.segment_file(REGISTRY, REPOSITORY, "nightly", 0),
     lambda d: d["events"][0].update({"from": "soon"}), "events[0].from"),
    (paths.record_file(REGISTRY, REPOSITORY, digest("c")), lambda d: d.update({"digest": "x"}),
     "digest"),
    (paths.record_file(REGISTRY, REPOSITORY, digest("c")), lambda d: d.update({"schemaVersion": 1}),
     "schemaVersion"),
])
def test_invalid_version_2_files_name_the_field(tmp_path: Path, relative: str, mutate: Any,
                                                field: str) -> None:
    convert(tmp_path, sample()).apply()
    path = tmp_path / relative
    document = json.loads(path.read_text())
    mutate(document)
    path.write_text(json.dumps(document))
    repo = StoredRepository(LocalFiles(tmp_path), REGISTRY, REPOSITORY)
    with pytest.raises(PublishIndexError) as caught:
        repo.history("nightly")
        repo.record(digest("c"))
    message = str(caught.value)
    assert message.startswith(f"{tmp_path}/{relative}: ") and field in message and "\n" not in message


def test_unknown_record_fields_are_kept(tmp_path: Path) -> None:
    record = manifest("a")
    extended = type(record)(**{**record.__dict__, "extra": {"chainId": str(digest("chain"))}})
    IndexWriter(tmp_path).plan_publish(REGISTRY, REPOSITORY, [extended], "v1", record.digest, T0,
                                       "cli").apply()
    read = open_reader(tmp_path).get(REGISTRY, REPOSITORY).record(record.digest)
    assert read is not None and read.extra == {"chainId": str(digest("chain"))}


def test_a_root_written_before_version_2_is_read_and_converted(tmp_path: Path) -> None:
    shutil.copytree(OLD_ROOT, tmp_path / ".ligoenv" / "index", ignore=shutil.ignore_patterns("*.md"))
    repo = open_reader(tmp_path).get(REGISTRY, REPOSITORY)
    history = repo.history("nightly")
    assert len(history) == 4 and repo.current("old") is None and repo.has_tag("old")
    top = repo.current("v1")
    assert top is not None and sorted(repo.record(top).platforms) == [  # type: ignore[union-attr]
        "linux/amd64", "linux/arm64"]
    assert open_reader(tmp_path).get(REGISTRY, "lab/app.json/x").current("latest") is not None
    IndexWriter(tmp_path).plan_publish(REGISTRY, REPOSITORY, [manifest("n")], "nightly",
                                       digest("n"), T0 + 9 * DAY, "cli").apply()
    again = open_reader(tmp_path).get(REGISTRY, REPOSITORY)
    assert again.legacy() is None
    assert [(e.digest, e.since) for e in again.history("nightly")[:-1]] == [
        (e.digest, e.since) for e in history]
    assert again.current("nightly") == digest("n") and again.current("v1") == top


def test_a_records_bind_points_are_written_and_read_back(tmp_path: Path) -> None:
    from dataclasses import replace

    record = replace(manifest("a"), bind_points=("/cvmfs", "/gpfs/data"))
    IndexWriter(tmp_path).plan_publish(REGISTRY, REPOSITORY, [record], "v1", record.digest, T0,
                                       "cli").apply()
    path = tmp_path / paths.record_file(REGISTRY, REPOSITORY, record.digest)
    document = json.loads(path.read_text())
    validate(document, "index-record", PublishIndexError, str(path))
    assert document["bind_points"] == ["/cvmfs", "/gpfs/data"]
    read = open_reader(tmp_path).get(REGISTRY, REPOSITORY).record(record.digest)
    assert read is not None and read.bind_points == ("/cvmfs", "/gpfs/data") and read.extra == {}
    assert manifest("b").to_json().get("bind_points") is None  # not recorded: absent, not empty
    document["bind_points"] = ["relative"]
    path.write_text(json.dumps(document))
    with pytest.raises(PublishIndexError, match="bind_points: expected a list of absolute paths"):
        open_reader(tmp_path).get(REGISTRY, REPOSITORY).record(record.digest)
