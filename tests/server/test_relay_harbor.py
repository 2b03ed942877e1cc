"""Harbor webhooks: pushes publish, deletes untag, everything else is acknowledged and ignored."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from ligoenv_server.jobs import Action, PublishRequest
from testbed.relay import (
    NOW,
    MemorySink,
    fixture_bytes,
    fixture_json,
    to_body,
)

PATH = "/hooks/harbor"
HEADERS = {"Authorization": "Basic harbor-secret", "Content-Type": "application/json"}
DIGEST = "sha256:8a9e9863dbb6e10edb5adfe917c00da84e1700fa76e7ed02476aa6e6fb8ee0d8"


def test_a_push_publishes_each_tagged_resource(client: TestClient, sink: MemorySink) -> None:
    response = client.post(PATH, content=fixture_bytes("harbor_push.json"), headers=HEADERS)
    assert (response.status_code, response.json()) == (202, {"accepted": 1, "jobs": [1], "ignored": []})
    assert sink.queued() == [PublishRequest("harbor.example.org", "lvk/bilby", "2026.03", DIGEST,
                                            "webhook:harbor/harbor", NOW, Action.PUBLISH)]


def test_a_delete_untags(client: TestClient, sink: MemorySink) -> None:
    assert client.post(PATH, content=fixture_bytes("harbor_delete.json"), headers=HEADERS).status_code == 202
    assert sink.queued() == [PublishRequest("harbor.example.org", "lvk/bilby", "2026.03", DIGEST,
                                            "webhook:harbor/harbor", NOW, Action.UNTAG)]


def test_other_events_are_ignored(client: TestClient, sink: MemorySink) -> None:
    response = client.post(PATH, content=fixture_bytes("harbor_pull.json"), headers=HEADERS)
    assert response.json() == {"accepted": 0, "jobs": [], "ignored": [
        {"reason": "Harbor event PULL_ARTIFACT is not a push or a delete"}]}
    document = {"type": "SCANNING_COMPLETED", "occur_at": 1, "operator": "auto", "event_data": {}}
    assert client.post(PATH, content=to_body(document), headers=HEADERS).json()["accepted"] == 0
    assert sink.queued() == []


def test_resources_pushed_by_digest_have_no_tag(client: TestClient, sink: MemorySink) -> None:
    document = fixture_json("harbor_push.json")
    resource = document["event_data"]["resources"][0]
    document["event_data"]["resources"] = [{**resource, "tag": DIGEST}, {**resource, "tag": ""},
                                           {**resource, "tag": "v1"}]
    response = client.post(PATH, content=to_body(document), headers=HEADERS)
    assert response.json()["accepted"] == 1
    assert response.json()["ignored"] == [{"reason": f"lvk/bilby: artifact {DIGEST} has no tag"}] * 2
    assert [r.tag for r in sink.queued()] == ["v1"]


def test_the_resource_url_host_is_never_used(client: TestClient, sink: MemorySink) -> None:
    document = fixture_json("harbor_push.json")
    document["event_data"]["resources"][0]["resource_url"] = "evil.example.com/lvk/bilby:2026.03"
    client.post(PATH, content=to_body(document), headers=HEADERS)
    assert sink.queued()[0].registry == "harbor.example.org"


@pytest.mark.parametrize("authorization", [None, "Basic wrong", "basic harbor-secret",
                                           "Bearer harbor-secret"])
def test_the_whole_header_must_match(client: TestClient, sink: MemorySink, authorization: str | None) -> None:
    headers = {"Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    response = client.post(PATH, content=fixture_bytes("harbor_push.json"), headers=headers)
    assert response.status_code == 401
    assert sink.queued() == []


@pytest.mark.parametrize(("change", "field"), [
    (lambda d: d["event_data"].pop("resources"), "event_data: 'resources' is a required property"),
    (lambda d: d["event_data"]["resources"][0].update(digest="md5:abc"), "event_data.resources[0].digest"),
    (lambda d: d["event_data"]["repository"].pop("repo_full_name"), "event_data.repository"),
    (lambda d: d.update(type=7), "type: 7 is not of type 'string'"),
])
def test_schema_invalid_is_400(client: TestClient, sink: MemorySink, change: object, field: str) -> None:
    document = fixture_json("harbor_push.json")
    change(document)  # type: ignore[operator]
    response = client.post(PATH, content=to_body(document), headers=HEADERS)
    assert response.status_code == 400 and field in response.json()["error"]
    assert sink.queued() == []


def test_an_invalid_tag_is_400_naming_the_resource(client: TestClient, sink: MemorySink) -> None:
    document = fixture_json("harbor_push.json")
    document["event_data"]["resources"][0]["tag"] = "not a tag"
    response = client.post(PATH, content=to_body(document), headers=HEADERS)
    assert response.status_code == 400
    assert response.json()["error"].startswith("event_data.resources[0]: invalid reference")
