"""End to end: real registry -> webhook -> relay -> SQLite queue -> worker -> publish root."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ligoenv.store.index import open_index_reader
from testbed.images import build_busybox_image, build_multiplatform_images, push_image
from testbed.ocibuild import LayoutWriter
from testbed.registry import skopeo_digest, skopeo_push
from testbed.stack import SECRET, Stack, new_stack, wait_for


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = new_stack(tmp_path_factory.mktemp("e2e"))
    stack.start("serve")
    yield stack
    stack.stop_all()
    stack.registry.stop()


def _current(stack: Stack, repository: str, tag: str) -> str | None:
    """The tag's digest once the publication is complete: the index names it and the tag link,
    written last, leads to its tree (for linux/amd64)."""
    index = stack.index(repository)
    digest = index.current(tag) if index else None
    path = index.path_of(digest, "linux/amd64") if index and digest else None
    link = stack.root / stack.registry.host / f"{repository}:{tag}"
    if path is None or not link.is_symlink() or link.resolve() != (stack.root / path).resolve():
        return None
    return str(digest)


def _push_with_skopeo(stack: Stack, tmp_path: Path, repository: str, tag: str, content: str) -> str:
    layout = tmp_path / f"layout-{tag}-{content}"
    LayoutWriter(layout).add_image(build_busybox_image(content), "src")
    skopeo_push(layout, "src", f"{stack.registry.host}/{repository}:{tag}")
    return skopeo_digest(f"{stack.registry.host}/{repository}:{tag}")


def test_skopeo_push_is_published_and_indexed(stack: Stack, tmp_path: Path) -> None:
    digest = _push_with_skopeo(stack, tmp_path, "lvk/lalsuite", "nightly", "first")
    wait_for(lambda: _current(stack, "lvk/lalsuite", "nightly") == digest, "the index to record the push")
    index = stack.index("lvk/lalsuite")
    assert index is not None
    record = index.digests[digest]
    tree = stack.root / str(record.path)
    assert (tree / "etc/ligoenv-image-tag").read_text() == "first\n"
    assert (tree / ".singularity.d" / "runscript").is_file()
    assert (tree / ".cvmfscatalog").exists()
    link = stack.root / stack.registry.host / "lvk/lalsuite:nightly"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    assert link.resolve() == tree.resolve()
    assert (stack.root / stack.registry.host / f"lvk/lalsuite@{digest}").resolve() == tree.resolve()
    history = index.history("nightly")
    assert [str(e.digest) for e in history] == [digest]
    assert history[0].source == "webhook:distribution/local"


def test_second_tag_for_same_digest_does_not_unpack_again(stack: Stack, tmp_path: Path) -> None:
    digest = _push_with_skopeo(stack, tmp_path, "lvk/pycbc", "v1", "pycbc")
    wait_for(lambda: _current(stack, "lvk/pycbc", "v1") == digest, "the first tag")
    tree = stack.root / ".images" / digest[7:9] / digest[7:]
    inode = tree.stat().st_ino
    skopeo_push(tmp_path / "layout-v1-pycbc", "src", f"{stack.registry.host}/lvk/pycbc:stable")
    wait_for(lambda: _current(stack, "lvk/pycbc", "stable") == digest, "the second tag")
    assert tree.stat().st_ino == inode
    results = [j["result"] for j in stack.jobs()
               if j["request"]["repository"] == "lvk/pycbc" and j["state"] == "done"]
    unpacked = [r for r in results if r.get("unpacked")]
    assert len(unpacked) == 1, results
    assert any(r.get("reused") == [digest] and r.get("tag") == "stable" for r in results)


def test_moving_tag_keeps_history_with_times(stack: Stack, tmp_path: Path) -> None:
    first = _push_with_skopeo(stack, tmp_path, "lvk/bilby", "nightly", "monday")
    wait_for(lambda: _current(stack, "lvk/bilby", "nightly") == first, "the first push")
    second = _push_with_skopeo(stack, tmp_path, "lvk/bilby", "nightly", "tuesday")
    assert second != first
    wait_for(lambda: _current(stack, "lvk/bilby", "nightly") == second, "the second push")
    index = stack.index("lvk/bilby")
    assert index is not None
    history = index.history("nightly")
    assert [str(e.digest) for e in history] == [first, second]
    assert history[0].until == history[1].since and history[1].until is None
    assert index.at("nightly", history[0].since) == history[0].digest
    # Both trees stay published: the digest-addressed names never move.
    for digest in (first, second):
        assert (stack.root / stack.registry.host / f"lvk/bilby@{digest}").resolve().is_dir()
    link = stack.root / stack.registry.host / "lvk/bilby:nightly"
    assert (link / "etc/ligoenv-image-tag").read_text() == "tuesday\n"


def test_multiplatform_index_publishes_default_platform(stack: Stack) -> None:
    top = push_image(stack.registry.host, "lvk/multi", "latest", build_multiplatform_images("multi"))
    wait_for(lambda: _current(stack, "lvk/multi", "latest") == str(top), "the index push")
    index = stack.index("lvk/multi")
    assert index is not None
    record = index.digests[str(top)]
    assert set(record.platforms) == {"linux/amd64", "linux/arm64"}
    amd64 = record.platforms["linux/amd64"]
    assert index.digests[str(amd64)].path is not None
    link = stack.root / stack.registry.host / "lvk/multi:latest"
    assert link.resolve().name == amd64.hex


def test_read_api_serves_index_and_resolves(stack: Stack, tmp_path: Path) -> None:
    digest = _push_with_skopeo(stack, tmp_path, "lvk/readapi", "v1", "read")
    wait_for(lambda: _current(stack, "lvk/readapi", "v1") == digest, "the push")
    host = stack.registry.host
    base = f"{stack.relay_url}/.ligoenv/index/_v2/{host}/lvk/readapi"
    served = requests.get(f"{base}/_tags/v1/current.json", timeout=5)
    assert served.status_code == 200 and served.json()["digest"] == digest
    assert served.headers["Cache-Control"] == "public, max-age=5"  # a pointer moves
    hexpart = digest.split(":")[1]
    record = requests.get(f"{base}/_digests/sha256/{hexpart[:2]}/{hexpart}.json", timeout=5)
    assert record.status_code == 200 and record.json()["digest"] == digest
    assert "immutable" in record.headers["Cache-Control"]
    reader = open_index_reader(stack.relay_url)  # the read API is read like a static mirror
    assert str(reader.get(host, "lvk/readapi").current("v1")) == digest
    history = requests.get(f"{stack.relay_url}/v1/history",
                           params={"ref": f"{host}/lvk/readapi:v1", "limit": "1"}, timeout=5).json()
    assert [e["digest"] for e in history["history"]] == [digest] and history["next"] is None
    tags = requests.get(f"{stack.relay_url}/v1/tags", params={"repository": f"{host}/lvk/readapi"},
                        timeout=5).json()
    assert tags == {"tags": ["v1"], "next": None}
    listed = requests.get(f"{stack.relay_url}/v1/repositories", params={"registry": host},
                          timeout=5).json()
    assert "lvk/readapi" in listed["repositories"]
    answer = requests.get(f"{stack.relay_url}/v1/resolve", params={"ref": f"{host}/lvk/readapi:v1"},
                          timeout=5).json()
    assert answer["reference"] == f"{host}/lvk/readapi@{digest}"
    assert answer["path"] == f".images/{digest[7:9]}/{digest[7:]}"  # not where the server keeps it
    resolve = f"{stack.relay_url}/v1/resolve"
    ref = f"{host}/lvk/readapi:v1"
    since = stack.index("lvk/readapi").history("v1")[0].since  # type: ignore[union-attr]
    at = requests.get(resolve, params={"ref": ref, "at": since.isoformat()}, timeout=5)
    assert at.status_code == 200 and at.json()["digest"] == digest
    early = requests.get(resolve, params={"ref": ref, "at": "2020-01-01"}, timeout=5)
    assert early.status_code == 404 and "history" in early.json()["error"]
    bad = requests.get(resolve, params={"ref": ref, "at": "garbage"}, timeout=5)
    assert bad.status_code == 400 and bad.json()["error"].startswith("query parameter at:")
    traversal = requests.get(f"{stack.relay_url}/.ligoenv/index/..%2F..%2Fstate%2Fqueue.db", timeout=5)
    assert traversal.status_code == 404


def test_wrong_secret_is_refused_and_enqueues_nothing(stack: Stack) -> None:
    before = len(stack.jobs())
    body = b'{"events": []}'
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {SECRET}"}):
        answer = requests.post(f"{stack.relay_url}/hooks/registry", data=body, timeout=5,
                               headers={**headers, "Content-Type": "application/json"})
        assert answer.status_code == 401
    assert len(stack.jobs()) == before
    assert SECRET not in stack.log_text()


def test_every_line_of_a_job_names_the_job_and_the_digest(stack: Stack, tmp_path: Path) -> None:
    digest = _push_with_skopeo(stack, tmp_path, "lvk/logged", "v1", "logged")
    wait_for(lambda: _current(stack, "lvk/logged", "v1") == digest, "the push")

    def records_now() -> list[dict[str, Any]]:
        return [json.loads(line) for line in stack.log_text().splitlines() if line.startswith("{")]

    # this job's own "job done": an earlier job's may be in the log already
    wait_for(lambda: any(r["msg"] == "job done" and r.get("digest") == digest for r in records_now()),
             "the log")
    records = records_now()
    job_ids = {r["job_id"] for r in records if r.get("digest") == digest and "job_id" in r}
    assert len(job_ids) == 1
    ours = ("ligoenv.", "ligoenv_server.")
    lines = [r for r in records if r.get("job_id") in job_ids and r["logger"].startswith(ours)]
    assert {r["msg"] for r in lines} >= {"unpacking", "job done"}
    assert all(r.get("digest") == digest for r in lines), lines


def test_deleting_a_manifest_upstream_untags_and_keeps_the_image(stack: Stack, tmp_path: Path) -> None:
    from ligoenv.oci.digest import Digest
    from ligoenv.oci.registry import RegistryClient

    digest = _push_with_skopeo(stack, tmp_path, "lvk/retired", "v1", "retired")
    wait_for(lambda: _current(stack, "lvk/retired", "v1") == digest, "the push")
    with RegistryClient(stack.registry.host, anonymous=True) as client:
        client.delete_manifest("lvk/retired", Digest.parse(digest))
    link = stack.root / stack.registry.host / "lvk/retired:v1"
    index = wait_for(lambda: (i := stack.index("lvk/retired")) is not None and len(i.history("v1")) == 2
                     and not os.path.lexists(link) and i, "the untag")
    assert index.current("v1") is None
    assert [str(e.digest) if e.digest else None for e in index.history("v1")] == [digest, None]
    assert not os.path.lexists(stack.root / stack.registry.host / "lvk/retired:v1")
    assert (stack.root / stack.registry.host / f"lvk/retired@{digest}").resolve().is_dir()
