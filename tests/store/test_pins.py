"""The pins file of a publish root: its format, labels, and reading it from a root."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from ligoenv.oci.digest import Digest
from ligoenv.store.errors import PublishIndexError
from ligoenv.store.lockfile import Environment, Lockfile, PlatformPin
from ligoenv.store.pins import PINS_FILE, Pin, PinSet, default_label, load_pins, lockfile_digests, read_pins
from ligoenv.store.schemas import schema_errors

TOP, AMD, ARM = (Digest("sha256", c * 64) for c in "abc")
WHEN = datetime(2026, 3, 1, 12, tzinfo=UTC)


def lockfile() -> Lockfile:
    env = Environment("registry.example.org/lab/app:v1", "registry.example.org", "lab/app", "v1", TOP,
                      "application/vnd.oci.image.index.v1+json",
                      {"linux/amd64": PlatformPin(AMD), "linux/arm64": PlatformPin(ARM)}, WHEN, "registry")
    return Lockfile({"app": env}, WHEN)


def test_every_digest_of_a_lockfile_and_a_stable_label() -> None:
    assert list(lockfile_digests(lockfile())) == [TOP, AMD, ARM]
    label = default_label("papers/gwtc4.lock", lockfile())
    assert label.startswith("gwtc4-") and len(label) == len("gwtc4-") + 8
    assert default_label("gwtc4.lock", lockfile()) == label


def test_round_trip_add_replace_remove(tmp_path: Path) -> None:
    pins = PinSet()
    assert pins.add(TOP, Pin("paper", "alice", WHEN, "GWTC-4", "lab/app@x"))
    assert not pins.add(TOP, Pin("paper", "alice", WHEN, "GWTC-4", "lab/app@x"))
    assert pins.add(TOP, Pin("other", "bob", WHEN, "O4 review", "lab/app@x"))
    assert schema_errors(pins.to_json(), "pins") == []
    (tmp_path / PINS_FILE).parent.mkdir(parents=True)
    (tmp_path / PINS_FILE).write_text(pins.dumps())
    again = read_pins(str(tmp_path))
    assert again == pins and [p.label for p in again.of(TOP)] == ["other", "paper"]
    assert again.remove(TOP, "paper") and not again.remove(TOP, "paper")
    assert again.remove(TOP, "other") and not again.is_pinned(TOP) and again.to_json()["pins"] == {}


def test_no_file_no_pins_and_a_bad_file_is_one_error(tmp_path: Path) -> None:
    assert load_pins(tmp_path).pins == {}
    (tmp_path / PINS_FILE).parent.mkdir(parents=True)
    (tmp_path / PINS_FILE).write_text('{"schemaVersion": 1, "pins": {"sha256:zz": []}}')
    with pytest.raises(PublishIndexError, match=r"pins\.sha256:zz"):
        load_pins(tmp_path)


def test_pins_are_read_from_a_mirror_over_http() -> None:
    from testbed.httpstub import Reply, Stub

    pins = PinSet()
    pins.add(TOP, Pin("paper", "alice", WHEN, "GWTC-4", "lab/app@x"))
    stub = Stub()
    try:
        stub.on("GET", f"/{PINS_FILE}", Reply(200, body=pins.dumps().encode()))
        assert read_pins(f"http://{stub.host}") == pins
        stub.on("GET", f"/{PINS_FILE}", Reply(404))
        assert read_pins(f"http://{stub.host}/") == PinSet()
        stub.on("GET", f"/{PINS_FILE}", Reply(503))
        with pytest.raises(PublishIndexError, match="HTTP 503"):
            read_pins(f"http://{stub.host}")
    finally:
        stub.stop()
