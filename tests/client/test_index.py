"""The digest manifest index: history queries, updates, JSON, atomic files and readers."""

from __future__ import annotations

import functools
import http.server
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from ligoenv.errors import HistoryTooShort, NotFound, PlatformNotFound, PublishIndexError
from ligoenv.index import (
    DigestRecord,
    RepositoryIndex,
    TagEvent,
    dumps_index,
    format_time,
    load_index,
    open_index_reader,
    save_index,
)
from ligoenv.indexreader import HttpIndexReader
from ligoenv.oci.digest import Digest
from ligoenv.oci.manifest import OCI_INDEX, OCI_MANIFEST
from ligoenv.publishroot import PublishRoot
from tests.support.httpstub import Reply, Stub
from tests.support.registry import free_port

REGISTRY, REPOSITORY = "127.0.0.1:5000", "lvk/lalsuite"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def digest(name: str) -> Digest:
    return Digest.of_bytes(name.encode())


def manifest(name: str, platform: str = "linux/amd64", published: datetime = T0) -> DigestRecord:
    d = digest(name)
    return DigestRecord(d, OCI_MANIFEST, {platform: d}, platform, digest(name + "/config"),
                        (digest(name + "/layer"),), 1234, PublishRoot(Path("/")).relative_image_path(d),
                        published)


def multi(name: str, platforms: dict[str, str], published: datetime = T0) -> list[DigestRecord]:
    records = [manifest(child, platform, published) for platform, child in platforms.items()]
    top = DigestRecord(digest(name), OCI_INDEX, {r.platform or "": r.digest for r in records},
                       published=published)
    return [*records, top]


def sample() -> RepositoryIndex:
    """nightly: a (day 0) -> b (day 1) -> untagged (day 2) -> c (day 3); stable: a."""
    index = RepositoryIndex.empty(REGISTRY, REPOSITORY)
    for name in "abc":
        index.record_image(manifest(name))
    index.move_tag("nightly", digest("a"), T0, "webhook:distribution/gitlab")
    index.move_tag("nightly", digest("b"), T0 + DAY, "webhook:distribution/gitlab")
    index.untag("nightly", T0 + 2 * DAY, "webhook:harbor/lab")
    index.move_tag("nightly", digest("c"), T0 + 3 * DAY, "cli")
    index.move_tag("stable", digest("a"), T0, "cli")
    return index


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
    before = dumps_index(index)
    assert not index.move_tag("nightly", digest("c"), T0 + 9 * DAY, "cli")
    assert not index.untag("never", T0, "cli")
    assert dumps_index(index) == before


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


def test_prune_drops_long_untagged_digests_and_logs_them() -> None:
    index = sample()
    for record in multi("old-index", {"linux/amd64": "old-amd"}):
        index.record_image(record)
    index.move_tag("old", digest("old-index"), T0, "cli")
    index.untag("old", T0 + DAY, "cli")
    index.move_tag("stable", digest("c"), T0 + 3 * DAY, "cli")  # a: last tagged on day 3
    messages: list[str] = []
    dropped = index.prune(keep_untagged_days=30, now=T0 + 20 * DAY, log=messages.append)
    assert dropped == [] and messages == []
    dropped = index.prune(keep_untagged_days=30, now=T0 + 34 * DAY, log=messages.append)
    assert sorted(dropped) == sorted([digest("a"), digest("b"), digest("old-index"),
                                      digest("old-amd")])
    assert str(digest("c")) in index.digests
    assert len(messages) == 4 and all("untagged for more than 30 days" in m for m in messages)
    assert index.history("nightly")[0].digest == digest("a")  # history is never dropped


def test_json_round_trip_is_stable(tmp_path: Path) -> None:
    index = sample()
    for record in multi("top", {"linux/amd64": "amd", "linux/arm64": "arm"}):
        index.record_image(record)
    text = dumps_index(index)
    assert text.endswith("}\n") and text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    again = RepositoryIndex.from_json(json.loads(text))
    assert again == index and dumps_index(again) == text
    assert json.loads(text)["tags"]["nightly"]["current"] == str(digest("c"))


def test_format_time() -> None:
    assert format_time(T0) == "2026-03-01T12:00:00Z"
    assert format_time(T0.replace(microsecond=1500)) == "2026-03-01T12:00:00.001500Z"
    assert format_time(datetime(2026, 3, 1, 14, tzinfo=timezone(timedelta(hours=2)))) == \
        "2026-03-01T12:00:00Z"


def test_the_documented_format_is_valid() -> None:
    top, m1, m2 = digest("top"), digest("m1"), digest("m2")
    document = {
        "schemaVersion": 1, "registry": REGISTRY, "repository": REPOSITORY,
        "updated": "2026-03-01T12:00:00Z",
        "tags": {"nightly": {"current": str(top), "history": [
            {"digest": str(top), "from": "2026-03-01T12:00:00Z", "until": None,
             "source": "webhook:distribution/gitlab", "event": "push"}]}},
        "digests": {
            str(top): {"mediaType": OCI_INDEX, "published": "2026-03-01T12:00:00Z",
                       "platforms": {"linux/amd64": str(m1), "linux/arm64": str(m2)}},
            str(m1): {"mediaType": OCI_MANIFEST, "platform": "linux/amd64",
                      "platforms": {"linux/amd64": str(m1)}, "config": str(digest("c")),
                      "layers": [str(digest("l"))], "size": 1234,
                      "path": f".images/{m1.hex[:2]}/{m1.hex}", "published": "2026-03-01T12:00:00Z"}},
    }
    index = RepositoryIndex.from_json(document)
    assert index.platform_digest(top, "linux/arm64") == m2 and index.current("nightly") == top


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda d: d.pop("tags"), "tags"),
    (lambda d: d["tags"]["nightly"]["history"][0].update({"from": "yesterday"}),
     "tags.nightly.history[0].from"),
    (lambda d: d["tags"]["nightly"]["history"][0].update({"digest": "sha256:xyz"}),
     "tags.nightly.history[0].digest"),
    (lambda d: next(iter(d["digests"].values())).update({"size": "big"}), ".size"),
    (lambda d: d.update({"schemaVersion": 2}), "schemaVersion"),
])
@pytest.mark.parametrize("validate", [True, False])
def test_invalid_documents_name_the_field(mutate: object, field: str, validate: bool) -> None:
    document = sample().to_json()
    mutate(document)  # type: ignore[operator]
    with pytest.raises(PublishIndexError) as caught:
        RepositoryIndex.from_json(document, validate=validate, what="index.json")
    message = str(caught.value)
    assert message.startswith("index.json: ") and field in message and "\n" not in message


def test_save_and_load(tmp_path: Path) -> None:
    path = tmp_path / "index" / "lvk" / "lalsuite.json"
    assert load_index(path) is None
    save_index(path, sample())
    save_index(path, sample())  # replaces
    assert load_index(path, validate=True) == sample()
    assert sorted(p.name for p in path.parent.iterdir()) == ["lalsuite.json"]  # no temp files
    path.write_text("{ not json")
    with pytest.raises(PublishIndexError, match="not valid JSON"):
        load_index(path)


def test_save_refuses_an_invalid_index(tmp_path: Path) -> None:
    index = sample()
    index.tags["nightly"].append(TagEvent(digest("x"), T0, None, "", "push"))  # empty source
    with pytest.raises(PublishIndexError, match="refusing to write"):
        save_index(tmp_path / "i.json", index)
    assert not (tmp_path / "i.json").exists()


def published_root(tmp_path: Path) -> Path:
    root = PublishRoot(tmp_path / "root")
    index = sample()
    save_index(root.index_path(REGISTRY, REPOSITORY), index)
    root.image_dir(digest("c")).mkdir(parents=True)
    return root.root


def test_local_reader(tmp_path: Path) -> None:
    root = published_root(tmp_path)
    reader = open_index_reader(str(root))
    index = reader.get(REGISTRY, REPOSITORY)
    assert index is not None and index.current("nightly") == digest("c")
    assert reader.get(REGISTRY, "lvk/other") is None
    assert reader.image_path(REGISTRY, REPOSITORY, digest("c"), "linux/amd64") == \
        root / ".images" / digest("c").hex[:2] / digest("c").hex
    assert reader.image_path(REGISTRY, REPOSITORY, digest("a"), "linux/amd64") is None  # no tree
    assert open_index_reader(f"file://{root}").get(REGISTRY, REPOSITORY) == index
    assert open_index_reader(tmp_path / "missing").get(REGISTRY, REPOSITORY) is None
    assert reader.get(REGISTRY, REPOSITORY, validate=True) == index  # for `ligoenv verify`


def test_local_reader_never_follows_a_path_out_of_the_root(tmp_path: Path) -> None:
    root = published_root(tmp_path)
    path = PublishRoot(root).index_path(REGISTRY, REPOSITORY)
    data = json.loads(path.read_text())
    data["digests"][str(digest("c"))]["path"] = "../../etc"
    path.write_text(json.dumps(data))
    assert open_index_reader(root).image_path(REGISTRY, REPOSITORY, digest("c"), "linux/amd64") is None


def test_local_reads_import_neither_requests_nor_jsonschema(tmp_path: Path) -> None:
    root = published_root(tmp_path)
    code = (
        "import sys\n"
        "from ligoenv.index import open_index_reader\n"
        f"reader = open_index_reader({str(root)!r})\n"
        f"index = reader.get({REGISTRY!r}, {REPOSITORY!r})\n"
        "assert index.current('nightly') is not None\n"
        "reader.image_path(index.registry, index.repository, index.current('nightly'), 'linux/amd64')\n"
        "print(sorted(m for m in ('requests', 'jsonschema', 'oras') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=30, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"


class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        if "broken" in self.path:
            self.send_error(503)
            return
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def mirror(tmp_path: Path) -> Iterator[str]:
    """A real HTTP server serving a publish root, like a mirror would."""
    root = published_root(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()),
                                             functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join()


def test_http_reader(mirror: str) -> None:
    reader = open_index_reader(mirror)
    index = reader.get(REGISTRY, REPOSITORY)
    assert index is not None and index == sample()
    assert reader.get(REGISTRY, REPOSITORY, validate=True) == index
    assert reader.get(REGISTRY, "lvk/other") is None
    assert reader.image_path(REGISTRY, REPOSITORY, digest("c"), "linux/amd64") is None
    with pytest.raises(PublishIndexError, match="HTTP 503") as caught:
        reader.get(REGISTRY, "lvk/broken")
    assert caught.value.temporary


def test_http_reader_unreachable() -> None:
    reader = open_index_reader(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(PublishIndexError, match="unreachable") as caught:
        reader.get(REGISTRY, REPOSITORY)
    assert caught.value.temporary


def test_http_reader_reads_at_most_its_cap(mirror: str) -> None:
    reader = HttpIndexReader(mirror, max_bytes=1000)
    with pytest.raises(PublishIndexError, match="is larger than 1000 bytes: not an index") as caught:
        reader.get(REGISTRY, REPOSITORY)
    assert not caught.value.temporary
    assert HttpIndexReader(mirror).get(REGISTRY, REPOSITORY) == sample()


def test_an_index_answers_only_for_its_own_repository(mirror: str, tmp_path: Path) -> None:
    root = PublishRoot(tmp_path / "root")  # the mirror serves it
    copy = root.index_path(REGISTRY, "lvk/copy")
    copy.write_text(root.index_path(REGISTRY, REPOSITORY).read_text())
    expected = f"describes {REGISTRY}/{REPOSITORY}, not {REGISTRY}/lvk/copy"
    for location in (mirror, str(root.root)):
        with pytest.raises(PublishIndexError, match=re.escape(expected)):
            open_index_reader(location).get(REGISTRY, "lvk/copy")


INDEX_PATH = f"/.ligoenv/index/{REGISTRY}/{REPOSITORY}.json"


def test_a_trickling_mirror_is_unreachable_at_its_deadline(stub: Stub) -> None:
    # Headers at once, then one byte every 50 ms: each read is quick, the whole never comes.
    stub.on("GET", INDEX_PATH, Reply(200, {}, b"{" + b" " * 10_000, trickle=0.05))
    reader = HttpIndexReader(f"http://{stub.host}", deadline=0.3)
    with pytest.raises(PublishIndexError, match=r"^index mirror http://\S+ is unreachable \(no whole "
                                                r"answer after \d+\.\d s\)$") as caught:
        reader.get(REGISTRY, REPOSITORY)
    assert caught.value.temporary
    assert stub.hung_up.wait(10)  # the connection is closed, not left trickling


@pytest.mark.parametrize(("body", "reason"), [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"schemaVersion": ' + b"1" * 5000 + b"}", "Exceeds the limit"),
    (b'{"schemaVersion": 1,', "Expecting property name"),
])
def test_a_mirror_serving_bad_json_is_an_index_error(stub: Stub, body: bytes, reason: str) -> None:
    stub.on("GET", INDEX_PATH, Reply(200, {}, body))
    with pytest.raises(PublishIndexError, match=rf"{INDEX_PATH}: not valid JSON \({reason}") as caught:
        HttpIndexReader(f"http://{stub.host}").get(REGISTRY, REPOSITORY)
    assert not caught.value.temporary
