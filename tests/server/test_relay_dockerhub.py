"""Docker Hub webhooks: the secret in the URL path, no digest, and only Docker Hub's own callback."""

from __future__ import annotations

import logging

import pytest
from starlette.testclient import TestClient

from ligoenv_server.hubcallback import is_docker_hub_callback
from ligoenv_server.jobs import PublishRequest
from testbed.relay import (
    NOW,
    MemorySink,
    fixture_bytes,
    fixture_json,
    to_body,
)

PATH = "/hooks/dockerhub/hub-path-secret"
JSON = {"Content-Type": "application/json"}
CALLBACK = "https://registry.hub.docker.com/u/lvk/lalsuite/hook/2141b5bi5i5b02bec211i4eeih0242eg11000a/"


def test_a_push_is_queued_without_digest(client: TestClient, sink: MemorySink) -> None:
    response = client.post(PATH, content=fixture_bytes("dockerhub_push.json"), headers=JSON)
    assert (response.status_code, response.json()) == (202, {"accepted": 1, "jobs": [1], "ignored": []})
    assert sink.queued() == [PublishRequest(
        registry="docker.io", repository="lvk/lalsuite", tag="nightly", digest=None,
        source="webhook:dockerhub/hub", received_at=NOW, callback_url=CALLBACK)]


@pytest.mark.parametrize("path", ["/hooks/dockerhub/wrong", "/hooks/dockerhub/hub-path-secreT",
                                  "/hooks/dockerhub/hub-path-secret-and-more"])
def test_a_wrong_path_secret_is_401(client: TestClient, sink: MemorySink, path: str) -> None:
    response = client.post(path, content=fixture_bytes("dockerhub_push.json"), headers=JSON)
    assert response.status_code == 401 and sink.queued() == []


def test_no_path_secret_matches_no_route(client: TestClient) -> None:
    assert client.post("/hooks/dockerhub/", content=b"{}", headers=JSON).status_code == 404


def test_docker_hub_sends_plain_json(client: TestClient) -> None:
    headers = {"Content-Type": "application/vnd.docker.distribution.events.v1+json"}
    assert client.post(PATH, content=fixture_bytes("dockerhub_push.json"), headers=headers).status_code == 415


@pytest.mark.parametrize("url", [
    "http://registry.hub.docker.com/u/lvk/lalsuite/hook/x/",
    "https://evil.example.com/u/lvk/lalsuite/hook/x/",
    "https://registry.hub.docker.com.evil.example.com/hook/x/",
    "https://registry.hub.docker.com@evil.example.com/hook/x/",
    "https://user:pw@registry.hub.docker.com/hook/x/",
    "https://registry.hub.docker.com:8443/hook/x/",
    "https://REGISTRY.hub.docker.com/hook/x/",
    "https://[::1/hook",
    "file:///etc/passwd",
])
def test_a_foreign_callback_is_dropped_with_a_warning(client: TestClient, sink: MemorySink, url: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    document = fixture_json("dockerhub_push.json")
    document["callback_url"] = url
    with caplog.at_level(logging.WARNING, logger="ligoenv_server"):
        response = client.post(PATH, content=to_body(document), headers=JSON)
    assert response.json()["accepted"] == 1
    assert sink.queued()[0].callback_url is None
    [warning] = [r for r in caplog.records if r.name.startswith("ligoenv_server")]
    assert warning.getMessage() == "dropped a callback_url that is not https://registry.hub.docker.com"
    assert getattr(warning, "endpoint", None) == "hub"


def test_callback_check() -> None:
    assert is_docker_hub_callback(CALLBACK)
    assert not is_docker_hub_callback("https://registry.hub.docker.com.evil.example.com/")


def test_without_callback(client: TestClient, sink: MemorySink) -> None:
    document = fixture_json("dockerhub_push.json")
    del document["callback_url"]
    assert client.post(PATH, content=to_body(document), headers=JSON).status_code == 202
    assert sink.queued()[0].callback_url is None


def test_official_images_live_under_library(client: TestClient, sink: MemorySink) -> None:
    document = fixture_json("dockerhub_push.json")
    document["repository"]["repo_name"] = "ubuntu"
    client.post(PATH, content=to_body(document), headers=JSON)
    assert sink.queued()[0].repository == "library/ubuntu"


@pytest.mark.parametrize(("change", "field"), [
    (lambda d: d["push_data"].pop("tag"), "push_data: 'tag' is a required property"),
    (lambda d: d.pop("repository"), "(top level): 'repository' is a required property"),
    (lambda d: d["push_data"].update(tag="-bad"), "push_data.tag"),
])
def test_schema_invalid_is_400(client: TestClient, sink: MemorySink, change: object, field: str) -> None:
    document = fixture_json("dockerhub_push.json")
    change(document)  # type: ignore[operator]
    response = client.post(PATH, content=to_body(document), headers=JSON)
    assert response.status_code == 400 and field in response.json()["error"]
    assert sink.queued() == []


def test_a_malformed_repository_name_is_400(client: TestClient, sink: MemorySink) -> None:
    document = fixture_json("dockerhub_push.json")
    document["repository"]["repo_name"] = "LVK/LALSuite"
    response = client.post(PATH, content=to_body(document), headers=JSON)
    assert response.status_code == 400
    assert response.json()["error"].startswith("repository.repo_name: invalid reference")
    assert sink.queued() == []
