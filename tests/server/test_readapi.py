"""The read API over a version-2 publish root: pages of history, tags and repositories, and
cache headers that tell immutable files from moving pointers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from ligoenv.store.index import paths
from ligoenv.store.index.writer import IndexWriter
from ligoenv.store.publishroot import PublishRoot
from ligoenv.store.times import format_time
from ligoenv_server.readapi import read_routes
from testbed.indexfiles import DAY, REGISTRY, REPOSITORY, T0, digest, manifest, sample, save_v1

REF = f"{REGISTRY}/{REPOSITORY}"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One root for the module (read only): ten nightlies in segments of four, more tags,
    repositories whose names nest, and a repository still in version 1."""
    tmp_path = tmp_path_factory.mktemp("root")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(paths, "SEGMENT_EVENTS", 4)
        _populate(tmp_path)
    yield TestClient(Starlette(routes=read_routes(PublishRoot(tmp_path))))


def _populate(tmp_path: Path) -> None:
    writer = IndexWriter(tmp_path)
    for day in range(10):
        writer.plan_publish(REGISTRY, REPOSITORY, [manifest(f"d{day}")], "nightly",
                            digest(f"d{day}"), T0 + day * DAY, "cli").apply()
    for tag in ("a", "b", "c"):
        writer.plan_publish(REGISTRY, REPOSITORY, [], tag, digest("d0"), T0, "cli").apply()
    for name in ("lab/app", "lab/app/x", "lab-x/y", "lvk/z"):
        writer.plan_publish(REGISTRY, name, [], "t", digest("d0"), T0, "cli").apply()
    old = sample()
    old.repository = "old/v1"
    save_v1(tmp_path, old)  # not migrated: readable, not listed


def test_history_pages_back_in_time(client: TestClient) -> None:
    seen: list[str] = []
    params = {"ref": f"{REF}:nightly", "limit": "3"}
    while True:
        page = client.get("/v1/history", params=params)
        assert page.status_code == 200 and page.headers["Cache-Control"] == "public, max-age=5"
        seen = [e["digest"] for e in page.json()["history"]] + seen
        if page.json()["next"] is None:
            break
        params = {**params, **page.json()["next"]}
    assert seen == [str(digest(f"d{day}")) for day in range(10)]
    since = client.get("/v1/history", params={"ref": f"{REF}:nightly",
                                              "since": format_time(T0 + 8 * DAY)}).json()
    assert [e["from"] for e in since["history"]] == [format_time(T0 + d * DAY) for d in (8, 9)]
    assert client.get("/v1/history", params={"ref": f"{REGISTRY}/old/v1:nightly"}).status_code == 200


@pytest.mark.parametrize(("params", "status", "error"), [
    ({"ref": f"{REF}:nightly", "limit": "0"}, 400, "query parameter limit"),
    ({"ref": f"{REF}:nightly", "limit": "x"}, 400, "query parameter limit"),
    ({"ref": f"{REF}:nightly", "since": "soon"}, 400, "query parameter since"),
    ({"ref": f"{REF}@{digest('d0')}"}, 400, "name a tag"),
    ({}, 400, "missing query parameter ref"),
    ({"ref": f"{REF}:nope"}, 404, "no history"),
])
def test_history_refuses_bad_queries(client: TestClient, params: dict[str, str], status: int,
                                     error: str) -> None:
    answer = client.get("/v1/history", params=params)
    assert answer.status_code == status and error in answer.json()["error"]


def test_tags_and_repositories_page(client: TestClient) -> None:
    first = client.get("/v1/tags", params={"repository": REF, "limit": "2"}).json()
    assert first == {"tags": ["a", "b"], "next": {"after": "b"}}
    rest = client.get("/v1/tags", params={"repository": REF, "after": "b"}).json()
    assert rest == {"tags": ["c", "nightly"], "next": None}
    assert client.get("/v1/tags", params={"repository": f"{REF}:x"}).status_code == 400
    names: list[str] = []
    params = {"registry": REGISTRY, "limit": "2"}
    while True:
        page = client.get("/v1/repositories", params=params).json()
        names += page["repositories"]
        if page["next"] is None:
            break
        params = {**params, **page["next"]}
    assert names == ["lab/app", "lab/app/x", "lab-x/y", "lvk/lalsuite", "lvk/z"]


def test_cache_headers(client: TestClient) -> None:
    record = client.get(f"/{paths.record_file(REGISTRY, REPOSITORY, digest('d1'))}")
    assert record.status_code == 200 and "immutable" in record.headers["Cache-Control"]
    pointer = client.get(f"/{paths.pointer_file(REGISTRY, REPOSITORY, 'nightly')}")
    assert pointer.status_code == 200 and pointer.headers["Cache-Control"] == "public, max-age=5"
    assert client.get(f"/{paths.v1_file(REGISTRY, 'old/v1')}").status_code == 200
    assert client.get("/.ligoenv/index/_v2/..%2F..%2Fetc%2Fpasswd").status_code == 404
