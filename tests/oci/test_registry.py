"""RegistryClient and its transport against the real registry; a scripted stub only for answers
a real registry does not give on demand (429, 503, a HEAD without digest, a lying header)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from pathlib import Path

import pytest

from ligoenv.oci.digest import Digest
from ligoenv.oci.errors import DigestMismatch, NotFound, RegistryError, RegistryUnavailable
from ligoenv.oci.hosts import is_loopback, plain_http
from ligoenv.oci.manifest import (
    ALL_MANIFEST_TYPES,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    ImageIndex,
    ImageManifest,
)
from ligoenv.oci.reference import Reference
from ligoenv.oci.registry import DownloadCancelled, RegistryClient, client_for
from ligoenv.oci.transport import RetryPolicy, Transport
from testbed.httpstub import Reply, Silent, Stub
from testbed.images import (
    build_busybox_image,
    build_multiplatform_images,
    files_layer,
    push_image,
    push_umoci_image,
)
from testbed.ocibuild import Image
from testbed.registry import RegistryProcess, free_port
from tests.oci.conftest import Sleeps, blob_file

MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": "sha256:" + "a" * 64, "size": 2},
                       "layers": []}).encode()
MANIFEST_DIGEST = Digest.of_bytes(MANIFEST)


def stub_client(stub: Stub, sleeps: Sleeps, **retry: float) -> RegistryClient:
    transport = Transport(stub.host, retry=RetryPolicy(**retry), sleep=sleeps,  # type: ignore[arg-type]
                          clock=lambda: 1_000_000.0)
    return RegistryClient(stub.host, transport=transport)


def ref_on(host: str, text: str) -> Reference:
    return Reference.parse(f"{host}/{text}")


# -- manifests ------------------------------------------------------------------------------


@pytest.mark.parametrize(("media_type", "docker", "multi"), [
    (OCI_MANIFEST, False, False), (OCI_INDEX, False, True),
    (DOCKER_MANIFEST, True, False), (DOCKER_LIST, True, True)])
def test_all_four_manifest_types(registry: RegistryProcess, client: RegistryClient, repo: str,
                                 media_type: str, docker: bool, multi: bool) -> None:
    image: Image | list[Image] = build_multiplatform_images("four") if multi else build_busybox_image("four")
    pushed = push_image(registry.host, repo, "v1", image, docker=docker)
    ref = ref_on(registry.host, f"{repo}:v1")
    assert client.resolve(ref) == pushed
    fetched = client.fetch_manifest(ref)
    assert (fetched.media_type, fetched.digest) == (media_type, pushed)
    assert isinstance(fetched, ImageIndex if multi else ImageManifest)
    assert hashlib.sha256(fetched.raw).hexdigest() == pushed.hex


def test_resolve_pinned_reference_checks_the_digest(registry: RegistryProcess, client: RegistryClient,
                                                    repo: str) -> None:
    pushed = push_image(registry.host, repo, "v1", build_busybox_image("pinned"))
    assert client.resolve(ref_on(registry.host, f"{repo}@{pushed}")) == pushed
    assert client.fetch_manifest(ref_on(registry.host, f"{repo}:v1@{pushed}")).digest == pushed


def test_umoci_image_pushed_by_skopeo(registry: RegistryProcess, client: RegistryClient, repo: str,
                                      tmp_path: Path) -> None:
    pushed = push_umoci_image(registry.host, repo, "u1", tmp_path, {"etc/motd": "from umoci\n"},
                              method="insert")
    manifest = client.fetch_manifest(ref_on(registry.host, f"{repo}:u1"))
    assert manifest.digest == pushed and isinstance(manifest, ImageManifest)
    assert len(manifest.layers) == 2
    config = client.fetch_blob(repo, manifest.config)
    assert json.loads(config)["config"]["Cmd"] == ["/bin/sh"]


def test_missing_manifest_names_repository_and_reference(registry: RegistryProcess,
                                                         client: RegistryClient) -> None:
    with pytest.raises(NotFound) as caught:
        client.resolve(ref_on(registry.host, "lab/absent:v9"))
    assert str(caught.value) == f"manifest lab/absent:v9 not found on registry {registry.host}"
    with pytest.raises(NotFound, match=r"manifest lab/absent:v9 not found .*(MANIFEST_UNKNOWN|NAME_UNKNOWN)"):
        client.fetch_manifest(ref_on(registry.host, "lab/absent:v9"))
    absent = Digest.of_bytes(b"never pushed")
    for ask in (client.resolve, client.fetch_manifest):
        with pytest.raises(NotFound) as caught:
            ask(ref_on(registry.host, f"lab/absent@{absent}"))
        assert str(caught.value).startswith(f"manifest lab/absent@{absent} not found on registry")


def test_tampered_manifest_is_refused(registry: RegistryProcess, client: RegistryClient, repo: str) -> None:
    pushed = push_image(registry.host, repo, "v1", build_busybox_image("tamper-manifest"))
    data = blob_file(registry, pushed)
    data.write_bytes(data.read_bytes().replace(b'"schemaVersion":2', b'"schemaVersion": 2'))
    with pytest.raises(DigestMismatch, match=f"manifest {repo}:v1: .*Docker-Content-Digest {pushed}"):
        client.fetch_manifest(ref_on(registry.host, f"{repo}:v1"))
    with pytest.raises(DigestMismatch, match="served content with digest"):
        client.fetch_manifest(ref_on(registry.host, f"{repo}@{pushed}"))


def test_resolve_falls_back_to_get_when_head_has_no_digest(stub: Stub, sleeps: Sleeps) -> None:
    stub.on("HEAD", "/v2/lab/app/manifests/v1", Reply(200, {"Content-Type": OCI_MANIFEST}))
    stub.on("GET", "/v2/lab/app/manifests/v1", Reply(200, {"Content-Type": OCI_MANIFEST}, MANIFEST))
    assert stub_client(stub, sleeps).resolve(ref_on(stub.host, "lab/app:v1")) == MANIFEST_DIGEST
    assert [(method, path) for method, path, _ in stub.seen] == [
        ("HEAD", "/v2/lab/app/manifests/v1"), ("GET", "/v2/lab/app/manifests/v1")]
    for _, _, headers in stub.seen:
        assert all(media_type in headers["Accept"] for media_type in ALL_MANIFEST_TYPES)


def test_resolve_uses_head_digest_without_get(stub: Stub, sleeps: Sleeps) -> None:
    stub.on("HEAD", "/v2/lab/app/manifests/v1", Reply(200, {"Docker-Content-Digest": str(MANIFEST_DIGEST)}))
    assert stub_client(stub, sleeps).resolve(ref_on(stub.host, "lab/app:v1")) == MANIFEST_DIGEST
    assert [method for method, _, _ in stub.seen] == ["HEAD"]


def test_lying_digest_header_is_refused(stub: Stub, sleeps: Sleeps) -> None:
    wrong = "sha256:" + "b" * 64
    stub.on("GET", "/v2/lab/app/manifests/v1", Reply(200, {"Docker-Content-Digest": wrong}, MANIFEST))
    with pytest.raises(DigestMismatch, match=f"does not match the Docker-Content-Digest {wrong}"):
        stub_client(stub, sleeps).fetch_manifest(ref_on(stub.host, "lab/app:v1"))


def test_oversized_manifest_is_refused(stub: Stub, sleeps: Sleeps) -> None:
    stub.on("GET", "/v2/lab/app/manifests/v1", Reply(200, {}, b" " * (4 << 20) + MANIFEST))
    with pytest.raises(RegistryError, match="more than the 4194304 a manifest may have"):
        stub_client(stub, sleeps).fetch_manifest(ref_on(stub.host, "lab/app:v1"))


# -- retries, timeouts and errors -----------------------------------------------------------


def test_unreachable_registry_fails_fast_with_one_line(sleeps: Sleeps) -> None:
    host = f"127.0.0.1:{free_port()}"  # nothing listens there: a stopped registry
    client = RegistryClient(host, transport=Transport(host, sleep=sleeps))
    with pytest.raises(RegistryUnavailable) as caught:
        client.resolve(ref_on(host, "lab/app:v1"))
    assert str(caught.value) == f"registry {host} is unreachable: connection refused"
    assert caught.value.temporary
    assert sleeps == [0.25, 0.5, 1.0]  # three retries, under two seconds in all


def test_stopped_registry_is_unavailable(tmp_path: Path, sleeps: Sleeps) -> None:
    process = RegistryProcess(tmp_path / "reg").start()
    push_image(process.host, "lab/app", "v1", build_busybox_image("stopped"))
    process.stop()
    client = RegistryClient(process.host, transport=Transport(process.host, sleep=sleeps))
    with pytest.raises(RegistryUnavailable, match=f"^registry {process.host} is unreachable"):
        client.fetch_manifest(ref_on(process.host, "lab/app:v1"))


def test_429_honours_retry_after(stub: Stub, sleeps: Sleeps) -> None:
    stub.on("HEAD", "/v2/lab/app/manifests/v1",
            Reply(429, {"Retry-After": "1"}),
            Reply(200, {"Docker-Content-Digest": str(MANIFEST_DIGEST)}))
    assert stub_client(stub, sleeps).resolve(ref_on(stub.host, "lab/app:v1")) == MANIFEST_DIGEST
    assert sleeps == [1.0]


def test_retry_after_as_http_date(stub: Stub, sleeps: Sleeps) -> None:
    # The injected clock reads 1,000,000 s after the epoch; the date is 3 s later.
    stub.on("HEAD", "/v2/lab/app/manifests/v1",
            Reply(429, {"Retry-After": "Mon, 12 Jan 1970 13:46:43 GMT"}),
            Reply(200, {"Docker-Content-Digest": str(MANIFEST_DIGEST)}))
    stub_client(stub, sleeps).resolve(ref_on(stub.host, "lab/app:v1"))
    assert sleeps == [3.0]


def test_long_retry_after_is_capped_then_gives_up(stub: Stub, sleeps: Sleeps) -> None:
    stub.on("HEAD", "/v2/lab/app/manifests/v1", Reply(429, {"Retry-After": "3600"}))
    with pytest.raises(RegistryUnavailable) as caught:
        stub_client(stub, sleeps).resolve(ref_on(stub.host, "lab/app:v1"))
    assert sleeps == [10.0]  # capped; a second 10 s wait would overrun the 15 s budget
    assert str(caught.value) == (f"registry {stub.host} answered 429 Too Many Requests to HEAD "
                                 "/v2/lab/app/manifests/v1 2 times: try again later")


def test_server_errors_are_retried_with_backoff(stub: Stub, sleeps: Sleeps) -> None:
    stub.on("GET", "/v2/lab/app/manifests/v1", Reply(503), Reply(502),
            Reply(200, {"Content-Type": OCI_MANIFEST}, MANIFEST))
    assert stub_client(stub, sleeps).fetch_manifest(ref_on(stub.host, "lab/app:v1")).digest == MANIFEST_DIGEST
    assert sleeps == [0.25, 0.5]


def test_persistent_server_error_is_unavailable(stub: Stub, sleeps: Sleeps) -> None:
    stub.on("GET", "/v2/lab/app/manifests/v1", Reply(500))
    with pytest.raises(RegistryUnavailable, match="answered 500 Internal Server Error to GET "
                       "/v2/lab/app/manifests/v1 4 times: try again later"):
        stub_client(stub, sleeps).fetch_manifest(ref_on(stub.host, "lab/app:v1"))


def test_not_found_is_not_retried(stub: Stub, sleeps: Sleeps) -> None:
    with pytest.raises(NotFound, match=r"manifest lab/app:v1 not found .*\(NAME_UNKNOWN: no such route\)"):
        stub_client(stub, sleeps).fetch_manifest(ref_on(stub.host, "lab/app:v1"))
    assert len(stub.seen) == 1 and sleeps == []


def test_connection_lost_mid_blob_is_unavailable(stub: Stub, sleeps: Sleeps, tmp_path: Path) -> None:
    data = b"x" * 1000
    descriptor = Descriptor("application/octet-stream", Digest.of_bytes(data), 1000)
    stub.on("GET", f"/v2/lab/app/blobs/{descriptor.digest}",
            Reply(200, {"Connection": "close", "Content-Length": "1000"}, data[:10]))
    with pytest.raises(RegistryUnavailable, match=f"registry {stub.host}: connection lost while reading "
                       f"blob {descriptor.digest.short} of lab/app"):
        stub_client(stub, sleeps).download_blob("lab/app", descriptor, tmp_path / "blob")
    assert os.listdir(tmp_path) == []


def test_silent_registry_is_tried_twice_within_the_budget_then_unavailable(silent: Silent,
                                                                          sleeps: Sleeps) -> None:
    # 0.5 s, a 0.25 s wait, and the second try gets only what is left of the 0.9 s budget.
    transport = Transport(silent.host, timeout=0.5, sleep=sleeps, retry=RetryPolicy(budget=0.9))
    began = time.monotonic()
    with RegistryClient(silent.host, transport=transport) as client, \
            pytest.raises(RegistryUnavailable) as caught:
        client.resolve(ref_on(silent.host, "lab/app:v1"))
    took = time.monotonic() - began
    stated = re.fullmatch(rf"registry {silent.host} is unreachable: no answer in (\d+\.\d) s \(2 tries\)",
                          str(caught.value))
    assert stated is not None, caught.value
    assert 0.5 <= float(stated[1]) <= round(took, 1)  # the real time waited, not one try's timeout
    assert len(silent.connections) == 2 and sleeps == [0.25]  # a timed-out try is retried once


def test_a_retry_gets_only_what_is_left_of_the_budget() -> None:
    policy = RetryPolicy()  # 15 s in all
    assert policy.try_timeout((5.0, 10.0), 0.0) == (5.0, 10.0)
    assert policy.try_timeout((5.0, 10.0), 10.25) == (4.75, 4.75)  # 10 s, a wait, then 4.75 s: 15 s
    assert not policy.allows(1, 1, 15.0)


def test_time_spent_trying_counts_in_the_budget(silent: Silent, sleeps: Sleeps) -> None:
    # A try that timed out took 0.5 s: with the 0.25 s wait, the 0.6 s budget is spent.
    transport = Transport(silent.host, timeout=0.5, sleep=sleeps, retry=RetryPolicy(budget=0.6))
    with RegistryClient(silent.host, transport=transport) as client, pytest.raises(RegistryUnavailable):
        client.resolve(ref_on(silent.host, "lab/app:v1"))
    assert len(silent.connections) == 1 and sleeps == []


def test_trickled_manifest_stops_at_the_deadline(stub: Stub, sleeps: Sleeps) -> None:
    stub.on("GET", "/v2/lab/app/manifests/v1",
            Reply(200, {"Content-Type": OCI_MANIFEST}, MANIFEST, trickle=0.05, length=False))
    transport = Transport(stub.host, timeout=0.5, sleep=sleeps)
    with RegistryClient(stub.host, transport=transport) as client, \
            pytest.raises(RegistryUnavailable) as caught:
        client.fetch_manifest(ref_on(stub.host, "lab/app:v1"))
    assert str(caught.value) == f"registry {stub.host} did not send manifest lab/app:v1 within 0.5 s"
    assert len(stub.seen) == 1


def test_trickled_answer_stops_at_the_deadline(stub: Stub, sleeps: Sleeps) -> None:
    stub.on("GET", "/v2/lab/app/tags/list", Reply(200, {}, b'{"tags": ["a"]}' + b" " * 200, trickle=0.05))
    transport = Transport(stub.host, timeout=0.5, sleep=sleeps)
    with RegistryClient(stub.host, transport=transport) as client, \
            pytest.raises(RegistryUnavailable) as caught:
        client.list_tags("lab/app")
    assert re.fullmatch(rf"registry {stub.host} did not send the answer to GET /v2/lab/app/tags/list "
                        r"in \d+\.\d s \(2 tries\)", str(caught.value)), caught.value
    assert len(stub.seen) == 2 and sleeps == [0.25]  # timed out: tried once more


def test_stalled_blob_download_is_unavailable(stub: Stub, sleeps: Sleeps, tmp_path: Path) -> None:
    data = b"x" * 1000
    descriptor = Descriptor("application/octet-stream", Digest.of_bytes(data), 1000)
    stub.on("GET", f"/v2/lab/app/blobs/{descriptor.digest}",
            Reply(200, {"Content-Length": "1000"}, data[:10], hold=30))
    transport = Transport(stub.host, timeout=0.5, sleep=sleeps)
    with RegistryClient(stub.host, transport=transport) as client, \
            pytest.raises(RegistryUnavailable) as caught:
        client.download_blob("lab/app", descriptor, tmp_path / "blob")
    assert str(caught.value) == (f"registry {stub.host} sent no data for 0.5 s while sending "
                                 f"blob {descriptor.digest.short} of lab/app")
    assert os.listdir(tmp_path) == []


def test_cancelled_download_stops_and_leaves_nothing(stub: Stub, sleeps: Sleeps, tmp_path: Path) -> None:
    data = b"y" * 100
    descriptor = Descriptor("application/octet-stream", Digest.of_bytes(data), len(data))
    stub.on("GET", f"/v2/lab/app/blobs/{descriptor.digest}", Reply(200, {}, data, trickle=0.05))
    cancel, chunks = threading.Event(), []

    def cancel_after_two(count: int) -> None:
        chunks.append(count)
        if len(chunks) == 2:
            cancel.set()

    with pytest.raises(DownloadCancelled, match=f"download of blob {descriptor.digest.short} of "
                       "lab/app cancelled"):
        stub_client(stub, sleeps).download_blob("lab/app", descriptor, tmp_path / "blob",
                                                cancel_after_two, cancel=cancel)
    assert len(chunks) == 2 and os.listdir(tmp_path) == []
    assert stub.hung_up.wait(10)
    with pytest.raises(DownloadCancelled):  # set before: not even asked for
        stub_client(stub, sleeps).download_blob("lab/app", descriptor, tmp_path / "blob", cancel=cancel)
    assert len(stub.seen) == 1


def test_slow_but_steady_blob_has_no_deadline(stub: Stub, sleeps: Sleeps, tmp_path: Path) -> None:
    data = os.urandom(60)  # 1.2 s at one byte per 20 ms: longer than the timeout, never stalled
    descriptor = Descriptor("application/octet-stream", Digest.of_bytes(data), len(data))
    stub.on("GET", f"/v2/lab/app/blobs/{descriptor.digest}", Reply(200, {}, data, trickle=0.02))
    transport = Transport(stub.host, timeout=1.0, sleep=sleeps)
    with RegistryClient(stub.host, transport=transport) as client:
        client.download_blob("lab/app", descriptor, tmp_path / "blob")
    assert (tmp_path / "blob").read_bytes() == data


@pytest.mark.parametrize(("host", "insecure", "plain"), [
    ("127.0.0.1:5000", None, True), ("localhost:5000", None, True), ("[::1]:5000", None, True),
    ("127.8.9.10", None, True), ("registry.example.org", None, False), ("10.0.0.1:5000", None, False),
    ("registry.example.org", True, True), ("127.0.0.1:5000", False, False),
    # a name under .localhost may resolve anywhere: only what is loopback without DNS counts
    ("registry.localhost:5000", None, False), ("a.localhost", None, False), ("LOCALHOST", None, True)])
def test_plain_http_only_for_loopback_or_when_asked(host: str, insecure: bool | None, plain: bool) -> None:
    assert plain_http(host, insecure) is plain


def test_client_for_reference() -> None:
    assert client_for(Reference.parse("ubuntu")).transport.base_url == "https://registry-1.docker.io"
    assert client_for(Reference.parse("localhost:5000/a")).transport.base_url == "http://localhost:5000"
    insecure = client_for(Reference.parse("reg.lan:5000/a"), insecure_registries=["reg.lan:5000"])
    assert insecure.transport.base_url == "http://reg.lan:5000"
    assert client_for(Reference.parse("reg.lan:5000/a")).transport.base_url == "https://reg.lan:5000"
    assert is_loopback("localhost") and not is_loopback("example.org")


# -- blobs ---------------------------------------------------------------------------------


def unique_layer(text: str) -> tuple[bytes, Descriptor]:
    layer = files_layer({"data.txt": text})
    return layer.blob, Descriptor(layer.media_type, layer.digest, len(layer.blob))


def test_blob_round_trip(client: RegistryClient, repo: str, tmp_path: Path) -> None:
    blob, descriptor = unique_layer("round trip")
    assert not client.blob_exists(repo, descriptor.digest)
    assert client.push_blob(repo, blob) == descriptor.digest
    assert client.blob_exists(repo, descriptor.digest)
    assert client.fetch_blob(repo, descriptor) == blob
    seen: list[int] = []
    client.download_blob(repo, descriptor, tmp_path / "out" / "blob", progress=seen.append)
    assert (tmp_path / "out" / "blob").read_bytes() == blob
    assert sum(seen) == len(blob) and os.listdir(tmp_path / "out") == ["blob"]
    with client.open_blob(repo, descriptor) as reader:
        assert reader.read() == blob and reader.verified


def test_push_big_blob_from_a_file_and_skip_existing(registry: RegistryProcess, repo: str,
                                                     tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(os.urandom(3 << 20))
    calls: list[str] = []

    class Recording(Transport):
        def request(self, method, path, **kwargs):  # type: ignore[no-untyped-def, override]
            calls.append(method)
            return super().request(method, path, **kwargs)

    client = RegistryClient(registry.host, transport=Recording(registry.host))
    digest = client.push_blob(repo, path)
    assert calls == ["HEAD", "POST", "PUT"]
    assert client.push_blob(repo, path, digest) == digest
    assert calls == ["HEAD", "POST", "PUT", "HEAD"]
    descriptor = Descriptor("application/octet-stream", digest, 3 << 20)
    assert client.fetch_blob(repo, descriptor) == path.read_bytes()


def test_tampered_blob_is_refused_and_nothing_is_left(registry: RegistryProcess, client: RegistryClient,
                                                      repo: str, tmp_path: Path) -> None:
    blob, descriptor = unique_layer("to be tampered with")
    client.push_blob(repo, blob)
    stored = blob_file(registry, descriptor.digest)
    stored.write_bytes(bytes([blob[0] ^ 0xFF]) + blob[1:])
    with pytest.raises(DigestMismatch, match=f"blob {descriptor.digest.short} of {repo}: expected"):
        client.download_blob(repo, descriptor, tmp_path / "blob")
    assert os.listdir(tmp_path) == []
    with pytest.raises(DigestMismatch):
        client.fetch_blob(repo, descriptor)


def test_missing_blob_is_not_found(client: RegistryClient, repo: str, tmp_path: Path) -> None:
    _, descriptor = unique_layer("never pushed")
    with pytest.raises(NotFound, match=f"blob {descriptor.digest.short} of {repo} not found"):
        client.download_blob(repo, descriptor, tmp_path / "blob")
    assert os.listdir(tmp_path) == []


# -- tags and deletes ----------------------------------------------------------------------


def test_list_tags_and_delete(registry: RegistryProcess, client: RegistryClient, repo: str) -> None:
    digests = {tag: push_image(registry.host, repo, tag, build_busybox_image(tag)) for tag in ("a", "b", "c")}
    assert sorted(client.list_tags(repo)) == ["a", "b", "c"]
    client.delete_manifest(repo, digests["b"])
    with pytest.raises(NotFound):
        client.resolve(ref_on(registry.host, f"{repo}@{digests['b']}"))
    assert sorted(client.list_tags(repo)) == ["a", "c"]


def test_list_tags_of_missing_repository(client: RegistryClient) -> None:
    with pytest.raises(NotFound, match="repository lab/never-pushed not found"):
        client.list_tags("lab/never-pushed")


def test_list_tags_follows_pages(stub: Stub, sleeps: Sleeps) -> None:
    stub.on("GET", "/v2/lab/app/tags/list",
            Reply(200, {"Link": '</v2/lab/app/tags/list?n=2&last=b>; rel="next"'},
                  b'{"name":"lab/app","tags":["a","b"]}'),
            Reply(200, {}, b'{"name":"lab/app","tags":["c"]}'))
    assert stub_client(stub, sleeps).list_tags("lab/app") == ["a", "b", "c"]
    assert stub.seen[1][1] == "/v2/lab/app/tags/list?n=2&last=b"


class RecordingPacer:
    def __init__(self) -> None:
        self.waits, self.pauses = 0, list[float]()

    def wait(self) -> None:
        self.waits += 1

    def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)


def test_pacer_sees_every_request_and_the_registrys_retry_after(stub: Stub, sleeps: Sleeps) -> None:
    stub.on("HEAD", "/v2/lab/app/manifests/v1",
            Reply(429, {"Retry-After": "2"}), Reply(429), Reply(503),
            Reply(200, {"Docker-Content-Digest": str(MANIFEST_DIGEST)}))
    pacer = RecordingPacer()
    transport = Transport(stub.host, sleep=sleeps, clock=lambda: 1_000_000.0, pacer=pacer)
    assert RegistryClient(stub.host, transport=transport).resolve(ref_on(stub.host, "lab/app:v1")) \
        == MANIFEST_DIGEST
    # every try went through the pacer; a 429 pauses it (Retry-After, else the backoff), a
    # 503 without Retry-After does not
    assert pacer.waits == 4 and pacer.pauses == [2.0, 0.25]


def test_list_tags_is_bounded(stub: Stub, sleeps: Sleeps) -> None:
    stub.on("GET", "/v2/lab/app/tags/list",
            Reply(200, {"Link": '</v2/lab/app/tags/list?last=b>; rel="next"'},
                  b'{"name":"lab/app","tags":["a","b"]}'))
    with pytest.raises(RegistryError, match="in a loop"):
        stub_client(stub, sleeps).list_tags("lab/app")
    with pytest.raises(RegistryError, match="more than 1 tags: list fewer"):
        stub_client(stub, sleeps).list_tags("lab/app", limit=1)
    stub.on("GET", "/v2/lab/other/tags/list",
            Reply(200, {"Link": '<http://elsewhere.example/v2/lab/other/tags/list?last=b>; rel="next"'},
                  b'{"name":"lab/other","tags":["a"]}'))
    with pytest.raises(RegistryError, match="to another host: not followed"):
        stub_client(stub, sleeps).list_tags("lab/other")
