"""The lockfile: round trip, deterministic bytes, atomic replacement, and one-line errors for bad files."""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ligoenv.oci.digest import Digest
from ligoenv.oci.errors import NotFound, PlatformNotFound, UsageError
from ligoenv.oci.platform import Platform
from ligoenv.oci.reference import Reference
from ligoenv.store.errors import LockfileError
from ligoenv.store.lockfile import (
    Environment,
    Lockfile,
    PlatformPin,
    assign_names,
    default_name,
    keep_unchanged,
    merged,
    read_lockfile,
    write_lockfile,
)
from ligoenv.store.schemas import schema_errors

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T1 = datetime(2026, 3, 2, 8, 30, tzinfo=UTC)
TOP = Digest.of_bytes(b"index")
AMD64, ARM64 = Digest.of_bytes(b"amd64"), Digest.of_bytes(b"arm64")


def env(reference: str = "registry.example:5000/lvk/lalsuite:nightly", digest: Digest = TOP,
        resolved: datetime = T0) -> Environment:
    ref = Reference.parse(reference)
    return Environment(
        reference=reference, registry=ref.registry, repository=ref.repository, tag=ref.tag,
        digest=digest, media_type="application/vnd.oci.image.index.v1+json",
        platforms={"linux/amd64": PlatformPin(AMD64, Digest.of_bytes(b"c1")),
                   "linux/arm64": PlatformPin(ARM64, None)},
        resolved=resolved, source="index:/cvmfs/singularity.opensciencegrid.org",
        paths=(f"/cvmfs/singularity.opensciencegrid.org/.images/{AMD64.hex[:2]}/{AMD64.hex}",),
    )


def lockfile(**environments: Environment) -> Lockfile:
    return Lockfile(environments or {"lalsuite": env()}, created=T0)


def test_round_trip_and_format(tmp_path: Path) -> None:
    path = tmp_path / "ligoenv.lock"
    original = lockfile(lalsuite=env(), gwpy=env("gwpy/gwpy:3.0", Digest.of_bytes(b"gwpy")))
    write_lockfile(path, original)

    text = path.read_text()
    assert text.endswith("}\n") and text.startswith('{\n  "created": "2026-03-01T12:00:00Z"')
    data = json.loads(text)
    assert schema_errors(data, "lockfile") == []
    assert list(data["environments"]) == ["gwpy", "lalsuite"]  # sorted keys
    assert data["environments"]["gwpy"]["canonical"] == f"docker.io/gwpy/gwpy:3.0@{Digest.of_bytes(b'gwpy')}"
    assert data["environments"]["lalsuite"]["platforms"]["linux/arm64"] == {"config": None,
                                                                             "manifest": str(ARM64)}
    for strict in (False, True):
        loaded = read_lockfile(path, strict=strict)
        assert loaded == original and loaded.path == path
    assert read_lockfile(path).dumps() == text


def test_same_content_same_bytes(tmp_path: Path) -> None:
    first, second = tmp_path / "a.lock", tmp_path / "b.lock"
    write_lockfile(first, lockfile(b=env(), a=env("ubuntu:22.04")))
    write_lockfile(second, lockfile(a=env("ubuntu:22.04"), b=env()))
    assert first.read_bytes() == second.read_bytes()


def test_write_replaces_atomically_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "ligoenv.lock"
    write_lockfile(path, lockfile())
    reader = path.open()  # a reader that opened the old file keeps reading the old file
    old_inode = os.stat(path).st_ino
    write_lockfile(path, lockfile(lalsuite=env(digest=Digest.of_bytes(b"new"))))
    assert os.stat(path).st_ino != old_inode
    assert json.loads(reader.read())["environments"]["lalsuite"]["digest"] == str(TOP)
    reader.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ligoenv.lock"]
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_a_symlinked_lockfile_stays_a_link_to_the_replaced_file(tmp_path: Path) -> None:
    real = tmp_path / "paper" / "ligoenv.lock"
    real.parent.mkdir()
    write_lockfile(real, lockfile())
    work = tmp_path / "work"
    work.mkdir()
    (work / "ligoenv.lock").symlink_to("../paper/ligoenv.lock")
    write_lockfile(work / "ligoenv.lock", lockfile(lalsuite=env(digest=Digest.of_bytes(b"new"))))
    assert os.readlink(work / "ligoenv.lock") == "../paper/ligoenv.lock"
    assert read_lockfile(real).environments["lalsuite"].digest == Digest.of_bytes(b"new")
    assert os.listdir(work) == ["ligoenv.lock"] and os.listdir(real.parent) == ["ligoenv.lock"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "ligoenv.lock"
    write_lockfile(path, lockfile())
    before = path.read_bytes()
    bad = lockfile(lalsuite=replace(env(), source="somewhere"))  # not registry or index:...
    expected = "refusing to write an invalid lockfile: environments.lalsuite.source"
    with pytest.raises(LockfileError, match=re.escape(expected)):
        write_lockfile(path, bad)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ligoenv.lock"]


def test_binary_file(tmp_path: Path) -> None:
    (tmp_path / "ligoenv.lock").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(LockfileError, match="is not UTF-8 text: is it a lockfile"):
        read_lockfile(tmp_path / "ligoenv.lock")


@pytest.mark.parametrize("content", ["", "{", '{"lockfileVersion": 1,', "\x00\x01", "[1, 2"])
def test_corrupt_json_is_one_clear_line(tmp_path: Path, content: str) -> None:
    path = tmp_path / "ligoenv.lock"
    path.write_text(content)
    with pytest.raises(LockfileError) as caught:
        read_lockfile(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"lockfile {path} is not valid JSON (line ")
    assert "ligoenv lock" in message


def valid_document() -> dict[str, object]:
    return json.loads(lockfile().dumps())  # type: ignore[no-any-return]


@pytest.mark.parametrize(("change", "field"), [
    (lambda d: d["environments"]["lalsuite"].pop("digest"), "environments.lalsuite.digest"),
    (lambda d: d["environments"]["lalsuite"].update(digest="sha256:abc"), "environments.lalsuite.digest"),
    (lambda d: d["environments"]["lalsuite"].update(resolved="yesterday"), "environments.lalsuite.resolved"),
    (lambda d: d["environments"]["lalsuite"].update(tag=7), "environments.lalsuite.tag"),
    (lambda d: d["environments"]["lalsuite"]["platforms"]["linux/amd64"].update(manifest="x"),
     "environments.lalsuite.platforms.linux/amd64.manifest"),
    (lambda d: d["environments"]["lalsuite"].update(canonical="docker.io/other@" + str(TOP)),
     "environments.lalsuite.canonical"),
    (lambda d: d.update(environments=[]), "environments"),
    (lambda d: d.pop("created"), "created"),
])
def test_invalid_fields_are_named(tmp_path: Path, change: object, field: str) -> None:
    document = valid_document()
    change(document)  # type: ignore[operator]
    path = tmp_path / "ligoenv.lock"
    path.write_text(json.dumps(document))
    for strict in (False, True):
        with pytest.raises(LockfileError) as caught:
            read_lockfile(path, strict=strict)
        message = str(caught.value)
        assert message.startswith(f"lockfile {path} is invalid: ")
        parent, _, last = field.rpartition(".")
        # The schema says "environments.x: 'digest' is a required property"; both name the field.
        assert field in message or (f"{parent}: '{last}'" in message)
        assert "\n" not in message


@pytest.mark.parametrize(("field", "value"), [
    ("registry", ".."), ("registry", "index.docker.io"), ("registry", "lvk"),
    ("repository", "../x"), ("repository", "LVK/lalsuite"), ("repository", "lvk//x"),
    ("tag", "a/b"), ("tag", "-x"),
])
def test_names_are_what_the_reference_parser_makes_of_them(tmp_path: Path, field: str, value: str) -> None:
    document = valid_document()
    entry = document["environments"]["lalsuite"]  # type: ignore[index]
    entry[field] = value
    # A consistent canonical form too, as a hand edit would make it: only the parser catches it.
    entry["canonical"] = f"{entry['registry']}/{entry['repository']}:{entry['tag']}@{entry['digest']}"
    path = tmp_path / "ligoenv.lock"
    path.write_text(json.dumps(document))
    with pytest.raises(LockfileError) as caught:
        read_lockfile(path)
    assert str(caught.value) == (f"lockfile {path} is invalid: environments.lalsuite.{field}: "
                                 f"{value!r} is not a valid {field} name")
    with pytest.raises(LockfileError):
        read_lockfile(path, strict=True)


@pytest.mark.parametrize(("reference", "names"), [
    # The attack: the reference (what a paper cites) names registry A, the fields registry B.
    ("other.example:5000/lvk/lalsuite:nightly", "other.example:5000/lvk/lalsuite:nightly"),
    ("registry.example:5000/lvk/other:nightly", "registry.example:5000/lvk/other:nightly"),
    ("registry.example:5000/lvk/lalsuite:v1", "registry.example:5000/lvk/lalsuite:v1"),
    ("registry.example:5000/lvk/lalsuite", "registry.example:5000/lvk/lalsuite:latest"),
    (f"registry.example:5000/lvk/lalsuite:nightly@{AMD64}",
     f"registry.example:5000/lvk/lalsuite:nightly@{AMD64}"),
])
def test_the_reference_must_mean_what_the_environment_pins(tmp_path: Path, reference: str,
                                                           names: str) -> None:
    document = valid_document()
    document["environments"]["lalsuite"]["reference"] = reference  # type: ignore[index]
    path = tmp_path / "ligoenv.lock"
    path.write_text(json.dumps(document))
    pins = "registry.example:5000/lvk/lalsuite:nightly" + (f"@{TOP}" if "@" in reference else "")
    for strict in (False, True):
        with pytest.raises(LockfileError) as caught:
            read_lockfile(path, strict=strict)
        assert str(caught.value) == (
            f"lockfile {path} is invalid: environments.lalsuite.reference: {reference!r} names "
            f"{names}, but the environment pins {pins}: re-lock it with `ligoenv lock`")


def test_a_reference_by_digest_or_as_written_is_consistent(tmp_path: Path) -> None:
    for reference in (f"registry.example:5000/lvk/lalsuite:nightly@{TOP}",
                      " registry.example:5000/lvk/lalsuite:nightly"):
        path = tmp_path / "ligoenv.lock"
        write_lockfile(path, lockfile(lalsuite=env(reference)))
        assert read_lockfile(path, strict=True).environments["lalsuite"].reference == reference


def test_future_version_asks_for_an_upgrade(tmp_path: Path) -> None:
    document = valid_document()
    document["lockfileVersion"] = 2
    path = tmp_path / "ligoenv.lock"
    path.write_text(json.dumps(document))
    with pytest.raises(LockfileError, match="lockfileVersion 2; this ligoenv reads version 1: upgrade"):
        read_lockfile(path)


def test_missing_lockfile_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=re.escape("does not exist: create it with `ligoenv lock REF...`")):
        read_lockfile(tmp_path / "nope.lock")


def test_find_by_name_reference_or_canonical_form() -> None:
    lock = lockfile(lalsuite=env(), gwpy=env("gwpy/gwpy:3.0", Digest.of_bytes(b"gwpy")))
    assert lock.find("lalsuite")[0] == "lalsuite"  # type: ignore[index]
    assert lock.find("gwpy/gwpy:3.0")[0] == "gwpy"  # type: ignore[index]
    assert lock.find("docker.io/gwpy/gwpy:3.0")[0] == "gwpy"  # type: ignore[index]
    assert lock.find(f"registry.example:5000/lvk/lalsuite@{TOP}")[0] == "lalsuite"  # type: ignore[index]
    assert lock.find(f"registry.example:5000/lvk/lalsuite@{AMD64}") is None
    assert lock.find("gwpy/gwpy:2.0") is None
    assert lock.find("Not A Reference") is None
    with pytest.raises(NotFound, match="no environment 'nope' in the lockfile; environments: gwpy, lalsuite"):
        lock.environment("nope")


def test_platform_pins() -> None:
    assert env().platform_pin(Platform.parse("linux/arm64/v8")) == ("linux/arm64", PlatformPin(ARM64))
    with pytest.raises(PlatformNotFound, match="locked for linux/amd64, linux/arm64, not linux/ppc64le"):
        env().platform_pin(Platform.parse("linux/ppc64le"))


def test_relocking_unchanged_inputs_keeps_the_times() -> None:
    old = lockfile(lalsuite=env(resolved=T0), gwpy=env("gwpy/gwpy:3.0", resolved=T0))
    new = Lockfile({"lalsuite": env(resolved=T1),
                    "gwpy": env("gwpy/gwpy:3.0", Digest.of_bytes(b"moved"), resolved=T1)}, created=T1)
    kept = keep_unchanged(old, new)
    assert kept.created == T1  # a digest changed: this is a new lock
    assert kept.environments["lalsuite"].resolved == T0  # same digest: same bytes in git
    assert kept.environments["gwpy"].resolved == T1  # the tag moved: the new time says when


def test_created_moves_only_when_the_environments_or_their_digests_change() -> None:
    old = lockfile(lalsuite=env(resolved=T0))
    newer_paths = Lockfile({"lalsuite": replace(env(resolved=T1), paths=())}, created=T1)
    assert keep_unchanged(old, newer_paths).created == T0  # the same digests: the same lock
    added = Lockfile({"lalsuite": env(resolved=T1), "gwpy": env("gwpy/gwpy:3.0", resolved=T1)}, created=T1)
    assert keep_unchanged(old, added).created == T1
    moved = Lockfile({"lalsuite": env(digest=Digest.of_bytes(b"moved"), resolved=T1)}, created=T1)
    assert keep_unchanged(old, moved).created == T1
    assert keep_unchanged(old, Lockfile({}, created=T1)).created == T1


def test_times_are_written_to_the_second() -> None:
    lock = Lockfile({"lalsuite": env(resolved=T1.replace(microsecond=999))},
                    created=T0.replace(microsecond=1))
    data = lock.to_json()
    assert data["created"] == "2026-03-01T12:00:00Z"
    assert data["environments"]["lalsuite"]["resolved"] == "2026-03-02T08:30:00Z"


def test_merged_adds_and_replaces() -> None:
    old = lockfile(lalsuite=env())
    result = merged(old, {"gwpy": env("gwpy/gwpy:3.0", resolved=T1)}, T1)
    assert list(result.environments) == ["gwpy", "lalsuite"]
    assert result.created == T1 and result.environments["lalsuite"].resolved == T0
    assert merged(result, {"gwpy": env("gwpy/gwpy:3.0", resolved=T1)}, T1.replace(hour=23)) == result


def test_default_names() -> None:
    ref = Reference.parse("registry.example/lvk/lalsuite:nightly")
    assert default_name(ref, []) == "lalsuite"
    assert default_name(ref, ["lalsuite"]) == "lalsuite-nightly"
    assert default_name(ref, ["lalsuite", "lalsuite-nightly"]) == "lalsuite-nightly-2"
    pinned = Reference.parse(f"lvk/lalsuite@{TOP}")
    assert default_name(pinned, ["lalsuite"]) == f"lalsuite-{TOP.hex[:12]}"


def test_assign_names_reuses_the_name_a_reference_was_locked_under() -> None:
    old = lockfile(science=env())
    names = assign_names(old, [(None, "registry.example:5000/lvk/lalsuite:nightly"),
                               (None, "other.example/lvk/lalsuite:1.0"), ("gw", "gwpy/gwpy")])
    assert names == [("science", "registry.example:5000/lvk/lalsuite:nightly"),
                     ("lalsuite", "other.example/lvk/lalsuite:1.0"), ("gw", "gwpy/gwpy")]
    with pytest.raises(UsageError, match="given twice"):
        assign_names(None, [("a", "x"), ("a", "y")])
    with pytest.raises(UsageError, match="invalid environment name 'a/b'"):
        assign_names(None, [("a/b", "x")])
