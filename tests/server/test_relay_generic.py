"""Generic publish requests from CI: an HMAC-SHA256 of the raw body, and only the endpoint's registry."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from starlette.testclient import TestClient

from ligoenv_server.jobs import PublishRequest
from ligoenv_server.relay.auth import sign
from testbed.relay import (
    CI_SECRET,
    NOW,
    REGISTRY,
    MemorySink,
    fixture_bytes,
    to_body,
)

PATH = "/hooks/ci"
BODY = fixture_bytes("generic_publish.json")
DIGEST = "sha256:0f3ad6e1f0a0b5c1d2e3f405162738495a6b7c8d9e0f1a2b3c4d5e6f708192a3"


def signed(body: bytes, secret: str = CI_SECRET) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Ligoenv-Signature": f"sha256={sign(secret, body)}"}


def test_the_signature_is_a_plain_hmac_sha256() -> None:
    # What a CI script computes with `openssl dgst -sha256 -hmac SECRET`.
    assert sign("key", b"body") == hmac.new(b"key", b"body", hashlib.sha256).hexdigest()


def test_a_signed_request_is_queued(client: TestClient, sink: MemorySink) -> None:
    response = client.post(PATH, content=BODY, headers=signed(BODY))
    assert (response.status_code, response.json()) == (202, {"accepted": 1, "jobs": [1], "ignored": []})
    assert sink.queued() == [
        PublishRequest(REGISTRY, "lvk/pycbc", "v2.4.0", DIGEST, "webhook:generic/ci", NOW)]


def test_the_signature_prefix_is_case_insensitive(client: TestClient) -> None:
    headers = signed(BODY)
    headers["X-Ligoenv-Signature"] = headers["X-Ligoenv-Signature"].replace("sha256=", "SHA256=").upper()
    assert client.post(PATH, content=BODY, headers=headers).status_code == 202


@pytest.mark.parametrize("signature", [
    None, "", "sha256=", "sha256=00", f"sha1={sign(CI_SECRET, BODY)}", sign(CI_SECRET, BODY),
    f"sha256={sign('other-secret', BODY)}", f"sha256={sign(CI_SECRET, BODY + b' ')}",
])
def test_missing_or_bad_signatures_are_401(client: TestClient, sink: MemorySink,
                                           signature: str | None) -> None:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-Ligoenv-Signature"] = signature
    response = client.post(PATH, content=BODY, headers=headers)
    assert response.status_code == 401 and sink.queued() == []


def test_a_body_changed_after_signing_is_401(client: TestClient, sink: MemorySink) -> None:
    tampered = BODY.replace(b"v2.4.0", b"v6.6.6")
    assert client.post(PATH, content=tampered, headers=signed(BODY)).status_code == 401
    assert sink.queued() == []


def test_an_oversized_signed_body_is_413_before_hashing(client: TestClient) -> None:
    body = b"{" + b" " * 5000 + b"}"
    assert client.post(PATH, content=body, headers=signed(body)).status_code == 413


def test_unsigned_requests_are_401_whatever_else_is_wrong(client: TestClient) -> None:
    response = client.post(PATH, content=b"x" * 5000, headers={"Content-Type": "text/plain"})
    assert response.status_code == 401


def test_a_signed_request_with_the_wrong_content_type_is_415(client: TestClient) -> None:
    headers = {**signed(BODY), "Content-Type": "text/plain"}
    assert client.post(PATH, content=BODY, headers=headers).status_code == 415


@pytest.mark.parametrize(("document", "status", "error"), [
    ({"image": "registry.gitlab.com/lvk/pycbc:v2.4.0"}, 400,
     f"image: registry registry.gitlab.com is not {REGISTRY}, the registry of endpoint ci"),
    ({"image": "lvk/pycbc:v2.4.0"}, 400, f"image: registry docker.io is not {REGISTRY}"),
    ({"image": f"{REGISTRY}/LVK/pycbc"}, 400, "image: invalid reference"),
    ({"image": f"{REGISTRY}/lvk/pycbc@{DIGEST}", "digest": "sha256:" + "b" * 64}, 400,
     f"digest: sha256:{'b' * 64} differs from the digest in image ({DIGEST})"),
    ({"image": f"{REGISTRY}/lvk/pycbc", "digest": "sha256:short"}, 400,
     "digest: 'sha256:short' does not match"),
    ({"image": f"{REGISTRY}/lvk/pycbc", "registry": "evil.example.com"}, 400,
     "Additional properties are not allowed ('registry' was unexpected)"),
    ({"digest": DIGEST}, 400, "'image' is a required property"),
])
def test_bad_requests_are_400(client: TestClient, sink: MemorySink, document: object, status: int,
                              error: str) -> None:
    body = to_body(document)
    response = client.post(PATH, content=body, headers=signed(body))
    assert response.status_code == status
    assert error in response.json()["error"]
    assert sink.queued() == []


def test_an_image_pinned_by_digest_alone_moves_no_tag(client: TestClient, sink: MemorySink) -> None:
    body = to_body({"image": f"{REGISTRY}/lvk/pycbc@{DIGEST}"})
    assert client.post(PATH, content=body, headers=signed(body)).status_code == 202
    assert [(r.tag, r.digest) for r in sink.queued()] == [(None, DIGEST)]


def test_without_a_digest_the_worker_resolves_the_tag(client: TestClient, sink: MemorySink) -> None:
    body = to_body({"image": f"{REGISTRY}/lvk/pycbc"})
    assert client.post(PATH, content=body, headers=signed(body)).status_code == 202
    assert [(r.tag, r.digest) for r in sink.queued()] == [("latest", None)]
