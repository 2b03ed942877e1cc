"""POST /v1/pins takes pins only with the configured token; the pins file is served as a mirror has it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from starlette.applications import Starlette
from starlette.testclient import TestClient

from ligoenv.oci.digest import Digest
from ligoenv.store.lockfile import Environment, Lockfile, PlatformPin
from ligoenv.store.pins import load_pins
from ligoenv.store.publishroot import PublishRoot
from ligoenv_server.config import Secret
from ligoenv_server.pinapi import pin_routes
from ligoenv_server.publishers.directory import DirectoryPublisher

TOKEN = "a-pin-token-of-some-length"
DIGEST = Digest("sha256", "d" * 64)
WHEN = datetime(2026, 3, 1, tzinfo=UTC)


def client(root: Path, token: str | None = TOKEN) -> TestClient:
    publisher = DirectoryPublisher(root)
    routes = pin_routes(PublishRoot(root), Secret(token) if token else None, lambda: publisher)
    return TestClient(Starlette(routes=routes))


def body() -> dict[str, object]:
    env = Environment("registry.example.org/lab/app:v1", "registry.example.org", "lab/app", "v1", DIGEST,
                      "application/vnd.oci.image.manifest.v1+json",
                      {"linux/amd64": PlatformPin(DIGEST)}, WHEN, "registry")
    return {"lockfile": Lockfile({"app": env}, WHEN).to_json(), "why": "GWTC-4 paper", "by": "alice"}


def test_pins_need_the_token(tmp_path: Path) -> None:
    api = client(tmp_path)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        answer = api.post("/v1/pins", json=body(), headers=headers)
        assert answer.status_code == 401, headers
    assert load_pins(tmp_path).pins == {}
    answer = api.post("/v1/pins", json=body(), headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"label": answer.json()["label"], "pinned": [str(DIGEST)], "changed": 1}
    assert [p.by for p in load_pins(tmp_path).of(DIGEST)] == ["alice"]
    served = api.get("/.ligoenv/pins.json")
    assert served.status_code == 200 and str(DIGEST) in served.json()["pins"]


def test_no_token_configured_accepts_nothing(tmp_path: Path) -> None:
    answer = client(tmp_path, None).post("/v1/pins", json=body(),
                                         headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 403 and "pin_token" in answer.json()["error"]
    assert client(tmp_path, None).get("/.ligoenv/pins.json").status_code == 404


def test_bad_bodies_are_refused(tmp_path: Path) -> None:
    api, auth = client(tmp_path), {"Authorization": f"Bearer {TOKEN}"}
    assert api.post("/v1/pins", json={**body(), "why": ""}, headers=auth).status_code == 400
    assert api.post("/v1/pins", json={**body(), "lockfile": {"x": 1}}, headers=auth).status_code == 400
    huge = b'{"why": "' + b"x" * (2 << 20) + b'"}'
    assert api.post("/v1/pins", content=huge, headers=auth).status_code == 413
    assert load_pins(tmp_path).pins == {}
