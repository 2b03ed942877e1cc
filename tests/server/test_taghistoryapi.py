"""The tag-history endpoints of the read API, on a real index in a publish root."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from ligoenv.oci.digest import Digest
from ligoenv.oci.manifest import OCI_MANIFEST
from ligoenv.store.index import DigestRecord, RepositoryIndex
from ligoenv.store.index.writer import convert
from ligoenv.store.publishroot import PublishRoot
from ligoenv_server.taghistoryapi import tag_history_routes

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DIGESTS = [Digest.of_bytes(f"build {n}".encode()) for n in range(3)]


@pytest.fixture()
def client(tmp_path: Path) -> TestClient:
    layout = PublishRoot(tmp_path)
    index = RepositoryIndex.empty("reg.example.org", "lab/app")
    for n, digest in enumerate(DIGESTS):
        index.record_image(DigestRecord(digest, OCI_MANIFEST, {"linux/amd64": digest}, "linux/amd64",
                                        size=1000 + n, published=T0))
        index.move_tag("nightly", digest, T0 + timedelta(days=n), "webhook:distribution/lab")
    index.untag("nightly", T0 + timedelta(days=5), "webhook:distribution/lab")
    convert(tmp_path, index).apply()
    return TestClient(Starlette(routes=tag_history_routes(layout)))


def test_history_is_an_oci_index_newest_first(client: TestClient) -> None:
    answer = client.get("/v2/reg.example.org/lab/app/_oci/tag-history/nightly")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/vnd.oci.image.index.v1+json"
    body = answer.json()
    assert (body["schemaVersion"], body["mediaType"]) == (2, "application/vnd.oci.image.index.v1+json")
    assert [m["digest"] for m in body["manifests"]] == [str(d) for d in reversed(DIGESTS)]
    newest = body["manifests"][0]
    assert newest["mediaType"] == OCI_MANIFEST
    assert newest["annotations"] == {
        "org.opencontainers.image.ref.name": "nightly", "org.ligoenv.tag.from": "2026-01-03T00:00:00Z",
        "org.ligoenv.tag.until": "2026-01-06T00:00:00Z", "org.ligoenv.tag.source": "webhook:distribution/lab",
        "org.ligoenv.tag.image-size": "1002"}
    same = client.get("/v2/reg.example.org/lab/app/_oci/tag/history", params={"tag": "nightly"})
    assert same.json() == body


def test_pages_follow_the_link_header(client: TestClient) -> None:
    seen: list[str] = []
    url = "/v2/reg.example.org/lab/app/_oci/tag/history?tag=nightly&n=2"
    while url:
        answer = client.get(url)
        seen += [m["digest"] for m in answer.json()["manifests"]]
        link = answer.headers.get("link", "")
        url = link[1:link.index(">")] if link else ""
    assert seen == [str(d) for d in reversed(DIGESTS)]


def test_unknown_tags_are_empty_and_bad_names_refused(client: TestClient) -> None:
    for url in ("/v2/reg.example.org/lab/app/_oci/tag-history/other",
                "/v2/reg.example.org/lab/none/_oci/tag-history/nightly"):
        answer = client.get(url)
        assert (answer.status_code, answer.json()["manifests"]) == (200, [])
    for url in ("/v2/reg.example.org/lab/app/_oci/tag/history?tag=bad%0A",
                "/v2/reg.example.org/Lab/app/_oci/tag-history/nightly",
                "/v2/reg.example.org/lab/app/_oci/tag-history/nightly?n=0",
                "/v2/reg.example.org/lab/app/_oci/tag-history/nightly?last=yesterday-ish"):
        answer = client.get(url)
        assert answer.status_code == 400, url
        assert answer.json()["errors"][0]["code"] == "NAME_INVALID"
