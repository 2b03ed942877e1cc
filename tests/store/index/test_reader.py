"""Readers: a publish root, a static HTTP mirror (a real http.server on loopback) and a
version-1 root, each fetching only the files an answer needs."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from ligoenv.oci.errors import NotFound
from ligoenv.store.errors import HistoryTooShort, PublishIndexError
from ligoenv.store.index import open_index_reader, paths
from ligoenv.store.index.reader import HttpIndexReader
from ligoenv.store.index.writer import IndexWriter, convert
from ligoenv.store.publishroot import PublishRoot
from testbed.httpstub import Reply, Stub
from testbed.indexfiles import DAY, REGISTRY, REPOSITORY, T0, digest, manifest, sample, save_v1
from testbed.registry import free_port

SEGMENT = 4
DAYS = 14  # four segments of history for `daily`


@pytest.fixture(autouse=True)
def small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paths, "SEGMENT_EVENTS", SEGMENT)


def published_root(tmp_path: Path, *, version: int = 2) -> Path:
    """`sample()` published under a root, plus a tag `daily` with DAYS days of history."""
    root = tmp_path / "root"
    index = sample()
    if version == 1:
        save_v1(root, index)
    else:
        convert(root, index).apply()
        writer = IndexWriter(root)
        for day in range(DAYS):
            name = f"daily{day}"
            writer.plan_publish(REGISTRY, REPOSITORY, [manifest(name)], "daily", digest(name),
                                T0 + day * DAY, "webhook:test").apply()
    PublishRoot(root).image_dir(digest("c")).mkdir(parents=True)
    return root


def test_local_reader(tmp_path: Path) -> None:
    root = published_root(tmp_path)
    reader = open_index_reader(str(root))
    index = reader.get(REGISTRY, REPOSITORY)
    assert index.current("nightly") == digest("c") and index.history("nightly") == sample().history("nightly")
    assert reader.get(REGISTRY, "lvk/other").current("nightly") is None
    assert not reader.get(REGISTRY, "lvk/other").exists
    assert reader.image_path(REGISTRY, REPOSITORY, digest("c"), "linux/amd64") == \
        root / ".images" / digest("c").hex[:2] / digest("c").hex
    assert reader.image_path(REGISTRY, REPOSITORY, digest("a"), "linux/amd64") is None  # no tree
    assert open_index_reader(f"file://{root}").get(REGISTRY, REPOSITORY).current("nightly") == digest("c")
    assert open_index_reader(tmp_path / "missing").get(REGISTRY, REPOSITORY).current("x") is None
    assert index.tag_names() == ["daily", "nightly", "stable"]


@pytest.mark.parametrize("version", [1, 2])
def test_at_across_segment_boundaries(tmp_path: Path, version: int) -> None:
    root = published_root(tmp_path, version=version)
    index = open_index_reader(root).get(REGISTRY, REPOSITORY)
    if version == 2:
        pointer = index.pointer("daily")  # type: ignore[attr-defined]
        assert pointer.segments == -(-DAYS // SEGMENT)
        for day in range(DAYS):
            assert index.at("daily", T0 + day * DAY) == digest(f"daily{day}")
        for day in range(1, DAYS):
            just_before = T0 + day * DAY - timedelta(microseconds=1)
            assert index.at("daily", just_before) == digest(f"daily{day - 1}")
        with pytest.raises(HistoryTooShort, match="starts at 2026-03-01T12:00:00Z"):
            index.at("daily", T0 - DAY)
        assert [e.digest for e in index.history("daily", limit=6)] == [
            digest(f"daily{d}") for d in range(DAYS - 6, DAYS)]
        page = index.history("daily", limit=5, before=T0 + 10 * DAY)
        assert [e.digest for e in page] == [digest(f"daily{d}") for d in range(5, 10)]
        assert page[-1].until == T0 + 10 * DAY  # from the next segment
        assert [e.since for e in index.history("daily", since=T0 + (DAYS - 3) * DAY)] == [
            T0 + d * DAY for d in range(DAYS - 3, DAYS)]
    with pytest.raises(NotFound, match="did not exist at"):
        index.at("nightly", T0 + 2 * DAY + timedelta(hours=1))
    with pytest.raises(NotFound, match="tag 'nope'"):
        index.at("nope", T0)
    assert index.at("nightly", T0 + DAY) == digest("b")


def test_local_reader_never_follows_a_path_out_of_the_root(tmp_path: Path) -> None:
    root = published_root(tmp_path)
    path = root / paths.record_file(REGISTRY, REPOSITORY, digest("c"))
    data = json.loads(path.read_text())
    data["path"] = "../../etc"
    path.write_text(json.dumps(data))
    assert open_index_reader(root).image_path(REGISTRY, REPOSITORY, digest("c"), "linux/amd64") is None


def test_a_version_1_root_is_still_read(tmp_path: Path) -> None:
    root = published_root(tmp_path, version=1)
    index = open_index_reader(root).get(REGISTRY, REPOSITORY)
    assert index.current("nightly") == digest("c") and index.record(digest("a")) == manifest("a")
    assert index.tag_names() == ["nightly", "stable"]


def test_local_reads_import_neither_requests_nor_jsonschema(tmp_path: Path) -> None:
    root = published_root(tmp_path)
    code = (
        "import sys\n"
        "from ligoenv.store.index import open_index_reader\n"
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
    """A static mirror: plain files, and a list of the paths asked for."""

    asked: list[str]

    def do_GET(self) -> None:
        self.asked.append(self.path)
        if "broken" in self.path:
            self.send_error(503)
            return
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving(root: Path) -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server serving `root`'s files, like a static mirror; and the paths asked for."""
    asked: list[str] = []
    handler = type("Recording", (Handler,), {"asked": asked})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()),
                                             functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture()
def mirror(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    with serving(published_root(tmp_path)) as served:
        yield served


def test_http_mirror_serves_the_new_layout_and_only_needed_files_are_fetched(
        mirror: tuple[str, list[str]]) -> None:
    url, asked = mirror
    reader = open_index_reader(url)
    index = reader.get(REGISTRY, REPOSITORY)
    assert index.current("daily") == digest(f"daily{DAYS - 1}")
    assert asked == [f"/{paths.pointer_file(REGISTRY, REPOSITORY, 'daily')}"]  # one small file
    asked.clear()
    assert index.at("daily", T0 + 3 * DAY) == digest("daily3")
    assert len(asked) <= 4 and all("/_tags/daily/history/" in p for p in asked)
    assert index.record(digest("daily3")) == manifest("daily3")
    assert index.history("nightly") == sample().history("nightly")
    assert reader.image_path(REGISTRY, REPOSITORY, digest("c"), "linux/amd64") is None
    assert reader.get(REGISTRY, "lvk/other").current("x") is None
    with pytest.raises(PublishIndexError, match="HTTP 503") as caught:
        reader.get(REGISTRY, "lvk/broken").current("x")
    assert caught.value.temporary


def test_a_mirror_of_a_version_1_root_is_still_read(tmp_path: Path) -> None:
    with serving(published_root(tmp_path, version=1)) as (url, _):
        index = open_index_reader(url).get(REGISTRY, REPOSITORY)
        assert index.current("nightly") == digest("c") and index.at("nightly", T0) == digest("a")


def test_http_reader_unreachable() -> None:
    reader = open_index_reader(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(PublishIndexError, match="unreachable") as caught:
        reader.get(REGISTRY, REPOSITORY).current("nightly")
    assert caught.value.temporary


def test_http_reader_reads_at_most_its_cap(mirror: tuple[str, list[str]]) -> None:
    reader = HttpIndexReader(mirror[0], max_bytes=100)
    with pytest.raises(PublishIndexError, match="is larger than 100 bytes: not an index") as caught:
        reader.get(REGISTRY, REPOSITORY).current("nightly")
    assert not caught.value.temporary
    assert HttpIndexReader(mirror[0]).get(REGISTRY, REPOSITORY).current("nightly") == digest("c")


def test_an_index_answers_only_for_its_own_repository(mirror: tuple[str, list[str]],
                                                      tmp_path: Path) -> None:
    root = tmp_path / "root"  # the mirror serves it
    source = root / paths.pointer_file(REGISTRY, REPOSITORY, "nightly")
    copy = root / paths.pointer_file(REGISTRY, "lvk/copy", "nightly")
    copy.parent.mkdir(parents=True)
    copy.write_text(source.read_text())
    expected = f"describes {REGISTRY}/{REPOSITORY}, not {REGISTRY}/lvk/copy"
    for location in (mirror[0], str(root)):
        with pytest.raises(PublishIndexError, match=re.escape(expected)):
            open_index_reader(location).get(REGISTRY, "lvk/copy").current("nightly")


def test_bad_json_is_an_index_error(tmp_path: Path) -> None:
    root = published_root(tmp_path)
    (root / paths.pointer_file(REGISTRY, REPOSITORY, "nightly")).write_text("[" * 5000)
    with pytest.raises(PublishIndexError, match="not valid JSON"):
        open_index_reader(root).get(REGISTRY, REPOSITORY).current("nightly")


POINTER_PATH = f"/{paths.pointer_file(REGISTRY, REPOSITORY, 'nightly')}"


def test_a_trickling_mirror_is_unreachable_at_its_deadline(stub: Stub) -> None:
    # Headers at once, then one byte every 50 ms: each read is quick, the whole never comes.
    stub.on("GET", POINTER_PATH, Reply(200, {}, b"{" + b" " * 10_000, trickle=0.05))
    reader = HttpIndexReader(f"http://{stub.host}", deadline=0.3)
    with pytest.raises(PublishIndexError, match=r"^index mirror http://\S+ is unreachable \(no whole "
                                                r"answer after \d+\.\d s\)$") as caught:
        reader.get(REGISTRY, REPOSITORY).current("nightly")
    assert caught.value.temporary
    assert stub.hung_up.wait(10)  # the connection is closed, not left trickling


@pytest.mark.parametrize(("body", "reason"), [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"schemaVersion": ' + b"1" * 5000 + b"}", "Exceeds the limit"),
    (b'{"schemaVersion": 1,', "Expecting property name"),
])
def test_a_mirror_serving_bad_json_is_an_index_error(stub: Stub, body: bytes, reason: str) -> None:
    stub.on("GET", POINTER_PATH, Reply(200, {}, body))
    with pytest.raises(PublishIndexError, match=rf"{POINTER_PATH}: not valid JSON \({reason}") as caught:
        HttpIndexReader(f"http://{stub.host}").get(REGISTRY, REPOSITORY).current("nightly")
    assert not caught.value.temporary
