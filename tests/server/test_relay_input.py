"""Hostile relay input on every endpoint kind: names that would not round-trip through the
reference parser, and JSON nested deep enough to exhaust a recursive validator."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from ligoenv.store.boundedjson import MAX_DEPTH
from ligoenv.store.schemas import schema_errors
from ligoenv_server.relay.auth import sign
from testbed.relay import CI_SECRET, DISTRIBUTION_V1, MemorySink, fixture_json, to_body

BAD_NAMES = ["v1\n", "v1\u00a0", " v1", "v1 ", "v1\t", "v\u00e91"]


def distribution(tag: str, repository: str = "lvk/lalsuite") -> dict[str, Any]:
    body = fixture_json("distribution_push.json")
    body["events"][0]["target"].update(tag=tag, repository=repository)
    return body


def harbor(tag: str, repository: str = "lvk/bilby") -> dict[str, Any]:
    body = fixture_json("harbor_push.json")
    body["event_data"]["resources"][0]["tag"] = tag
    body["event_data"]["repository"]["repo_full_name"] = repository
    return body


def dockerhub(tag: str, repository: str = "lvk/lalsuite") -> dict[str, Any]:
    body = fixture_json("dockerhub_push.json")
    body["push_data"]["tag"] = tag
    body["repository"]["repo_name"] = repository
    return body


def generic(tag: str, repository: str = "lvk/pycbc") -> dict[str, Any]:
    body = fixture_json("generic_publish.json")
    body["image"] = f"127.0.0.1:5000/{repository}:{tag}"
    return body


def post(client: TestClient, kind: str, document: Any) -> Any:
    raw = document if isinstance(document, bytes) else to_body(document)
    if kind == "distribution":
        return client.post("/hooks/distribution", content=raw, headers={
            "Authorization": "Bearer local-token", "Content-Type": DISTRIBUTION_V1})
    if kind == "harbor":
        return client.post("/hooks/harbor", content=raw, headers={
            "Authorization": "Basic harbor-secret", "Content-Type": "application/json"})
    if kind == "dockerhub":
        return client.post("/hooks/dockerhub/hub-path-secret", content=raw,
                           headers={"Content-Type": "application/json"})
    return client.post("/hooks/ci", content=raw, headers={
        "Content-Type": "application/json", "X-Ligoenv-Signature": f"sha256={sign(CI_SECRET, raw)}"})


KINDS: dict[str, Callable[..., dict[str, Any]]] = {
    "distribution": distribution, "harbor": harbor, "dockerhub": dockerhub, "generic": generic}


@pytest.mark.parametrize("kind", KINDS)
def test_a_plain_tag_is_accepted_on_every_kind(client: TestClient, sink: MemorySink,
                                               kind: str) -> None:
    response = post(client, kind, KINDS[kind]("v1"))
    assert response.status_code == 202, response.text
    assert [request.tag for request in sink.queued()] == ["v1"]


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_tag_that_does_not_round_trip_is_refused(client: TestClient, sink: MemorySink,
                                                   kind: str, name: str) -> None:
    response = post(client, kind, KINDS[kind](name))
    assert response.status_code == 400, response.text
    assert sink.queued() == []


@pytest.mark.parametrize("name", ["lvk/app\n", "lvk/app\u00a0", " lvk/app", "lvk/app/"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_repository_that_does_not_round_trip_is_refused(client: TestClient, sink: MemorySink,
                                                          kind: str, name: str) -> None:
    response = post(client, kind, KINDS[kind]("v1", name))
    assert response.status_code == 400, response.text
    assert sink.queued() == []


def test_a_generic_image_with_white_space_around_it_is_refused(client: TestClient,
                                                              sink: MemorySink) -> None:
    body = generic("v1")
    body["image"] += "\n"
    assert post(client, "generic", body).status_code == 400
    assert sink.queued() == []


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 946])  # 946: what reached a 500 before
@pytest.mark.parametrize("kind", KINDS)
def test_json_nested_too_deep_is_refused_before_validation(client: TestClient, sink: MemorySink,
                                                           kind: str, depth: int) -> None:
    body = KINDS[kind]("v1")
    body["extra"] = nested(depth)
    response = post(client, kind, json.dumps(body).encode())
    assert response.status_code == 400, response.text
    assert response.json()["error"] == f"invalid JSON: JSON nested deeper than {MAX_DEPTH} levels"
    assert sink.queued() == []


def test_json_as_deep_as_the_limit_is_read(client: TestClient, sink: MemorySink) -> None:
    body = distribution("v1")
    body["events"][0]["extra"] = nested(MAX_DEPTH - 3)  # the event is 3 levels down already
    assert post(client, "distribution", body).status_code == 202


def test_schema_patterns_match_whole_strings() -> None:
    body = distribution("v1\n")
    assert any("does not match" in error for error in
               schema_errors(body, "webhooks/distribution"))
    assert schema_errors(distribution("v1"), "webhooks/distribution") == []
