"""Resolution order (lockfile, index, registry) against the real registry and real index files."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ligoenv.client.resolve import Resolver
from ligoenv.oci.digest import Digest
from ligoenv.oci.errors import NotFound, PlatformNotFound, RegistryUnavailable, UsageError
from ligoenv.oci.manifest import OCI_INDEX, OCI_MANIFEST
from ligoenv.oci.platform import Platform
from ligoenv.oci.reference import Reference
from ligoenv.oci.registry import RegistryClient
from ligoenv.store.errors import HistoryTooShort, PublishIndexError
from ligoenv.store.index import paths
from ligoenv.store.lockfile import Environment, Lockfile, PlatformPin
from testbed.clientkit import Pushed, pushed, write_index
from testbed.httpstub import Reply, Stub
from testbed.images import build_busybox_image, push_image
from testbed.registry import RegistryProcess, free_port

pytestmark = pytest.mark.usefixtures("userenv")

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T1 = datetime(2026, 3, 5, 9, 0, tzinfo=UTC)
LOCKED = Digest.of_bytes(b"what the lockfile pinned")
AMD64, ARM64 = Platform.parse("linux/amd64"), Platform.parse("linux/arm64")


def lockfile_pinning(image: Pushed, digest: Digest, path: Path) -> Lockfile:
    env = Environment(reference=image.ref, registry=image.registry, repository=image.repository,
                      tag=image.tag, digest=digest, media_type=OCI_MANIFEST,
                      platforms={"linux/amd64": PlatformPin(digest)}, resolved=T0, source="registry")
    return Lockfile({"busybox": env}, created=T0, path=path)


def test_lockfile_beats_index_beats_registry(images: dict[str, Pushed], tmp_path: Path) -> None:
    stable, old = images["stable"], images["old"]
    root = tmp_path / "root"
    write_index(root, stable, [(old.digest, T0)], extra=(old,))  # the index still says `old`
    lock = lockfile_pinning(stable, LOCKED, tmp_path / "ligoenv.lock")

    for text in (stable.ref, "busybox", f"{stable.registry}/{stable.repository}:stable"):
        answer = Resolver(lockfile=lock, index=str(root)).resolve(text)
        assert (answer.digest, answer.source, answer.environment) == (
            LOCKED, f"lockfile:{tmp_path / 'ligoenv.lock'}", "busybox")
    from_index = Resolver(index=str(root)).resolve(stable.ref)
    assert (from_index.digest, from_index.source) == (old.digest, f"index:{root}")
    assert from_index.pinned() == f"{stable.registry}/client/busybox@{old.digest}"
    from_registry = Resolver().resolve(stable.ref)
    assert (from_registry.digest, from_registry.source) == (stable.digest, "registry")


def test_index_without_the_repository_or_tag_falls_through_to_the_registry(
        images: dict[str, Pushed], tmp_path: Path) -> None:
    stable, multi = images["stable"], images["multi"]
    write_index(tmp_path / "root", multi, [(multi.digest, T0)])
    assert Resolver(index=str(tmp_path / "root")).resolve(stable.ref).source == "registry"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert Resolver(index=str(empty)).resolve(stable.ref).digest == stable.digest


def test_at_answers_from_the_index_history(images: dict[str, Pushed], tmp_path: Path) -> None:
    stable, old = images["stable"], images["old"]
    root = tmp_path / "root"
    write_index(root, stable, [(old.digest, T0), (stable.digest, T1)], extra=(old,))
    resolver = Resolver(index=str(root), lockfile=lockfile_pinning(stable, LOCKED, tmp_path / "x"))

    assert resolver.resolve(stable.ref, at=T0).digest == old.digest
    assert resolver.resolve(stable.ref, at=T1 - timedelta(seconds=1)).digest == old.digest
    assert resolver.resolve(stable.ref, at=T1).digest == stable.digest
    assert resolver.resolve(stable.ref).digest == LOCKED  # without --at the lockfile still wins
    assert resolver.resolve("busybox", at=T0).digest == old.digest  # the environment's tag, back then
    with pytest.raises(HistoryTooShort) as caught:
        resolver.resolve(stable.ref, at=T0 - timedelta(days=1))
    assert str(caught.value) == (f"history of {stable.registry}/client/busybox:stable starts at "
                                 "2026-03-01T12:00:00Z, after 2026-02-28T12:00:00Z")


def test_at_needs_an_index_and_a_tag(images: dict[str, Pushed], tmp_path: Path) -> None:
    stable = images["stable"]
    with pytest.raises(UsageError, match="pass --index LOCATION or set LIGOENV_INDEX"):
        Resolver().resolve(stable.ref, at=T0)
    with pytest.raises(UsageError, match="is pinned by digest"):
        Resolver(index=str(tmp_path)).resolve(stable.pinned, at=T0)
    with pytest.raises(NotFound, match=f"index {tmp_path} has no history for {re.escape(stable.registry)}"):
        Resolver(index=str(tmp_path)).resolve(stable.ref, at=T0)


def test_platforms_of_a_multi_platform_image(images: dict[str, Pushed], tmp_path: Path) -> None:
    multi = images["multi"]
    write_index(tmp_path / "root", multi, [(multi.digest, T0)])
    for resolver in (Resolver(), Resolver(index=str(tmp_path / "root"))):
        answer = resolver.resolve(multi.ref, platform=ARM64)
        assert answer.digest == multi.digest
        assert answer.media_type == OCI_INDEX
        assert answer.pinned(ARM64) == f"{multi.registry}/client/multi@{multi.platforms['linux/arm64']}"
        assert dict(answer.platforms) == multi.platforms
        with pytest.raises(PlatformNotFound, match="available: linux/amd64, linux/arm64"):
            answer.pinned(Platform.parse("linux/ppc64le"))
    with pytest.raises(PlatformNotFound, match="available: linux/amd64, linux/arm64"):
        Resolver().resolve(multi.ref, platform=Platform.parse("linux/ppc64le"))


def test_a_pinned_reference_needs_no_lookup(images: dict[str, Pushed]) -> None:
    stable = images["stable"]
    answer = Resolver().resolve(f"{stable.registry}/client/busybox@{LOCKED}")
    assert (answer.digest, answer.source) == (LOCKED, "reference")


def test_pin_from_the_registry_records_every_platform_and_config(images: dict[str, Pushed]) -> None:
    multi, stable = images["multi"], images["stable"]
    env = Resolver().pin(multi.ref, T1)
    assert (env.digest, env.media_type, env.source, env.resolved) == (multi.digest, OCI_INDEX, "registry", T1)
    assert env.platforms == {key: PlatformPin(digest, multi.config(key))
                             for key, digest in multi.platforms.items()}
    assert env.canonical == f"{multi.registry}/client/multi:latest@{multi.digest}"

    single = Resolver().pin(stable.ref, T1)
    assert single.platforms == {"linux/amd64": PlatformPin(stable.digest, stable.config("linux/amd64"))}
    only_arm = Resolver().pin(multi.ref, T1, [ARM64])
    assert list(only_arm.platforms) == ["linux/arm64"]


def test_pin_from_the_index_records_the_published_paths(images: dict[str, Pushed], tmp_path: Path) -> None:
    multi = images["multi"]
    root = tmp_path / "root"
    write_index(root, multi, [(multi.digest, T0)], trees=True)
    env = Resolver(index=str(root)).pin(multi.ref, T1)
    assert env.source == f"index:{root}"
    arm = "linux/arm64"
    assert env.platforms[arm] == PlatformPin(multi.platforms[arm], multi.config(arm))
    hexes = [multi.platforms[key].hex for key in ("linux/amd64", "linux/arm64")]
    assert env.paths == tuple(str(root / ".images" / h[:2] / h) for h in hexes)


def test_offline_lockfile_and_index_still_answer(stopped_registry: RegistryProcess, tmp_path: Path) -> None:
    image = build_busybox_image("offline")
    digest = push_image(stopped_registry.host, "client/offline", "v1", image)
    offline = pushed(stopped_registry.host, "client/offline", "v1", digest, [image])
    write_index(tmp_path / "root", offline, [(digest, T0)])
    lock = lockfile_pinning(offline, digest, tmp_path / "ligoenv.lock")
    stopped_registry.stop()

    assert Resolver(lockfile=lock).resolve(offline.ref).digest == digest
    assert Resolver(index=str(tmp_path / "root")).resolve(offline.ref).digest == digest
    with pytest.raises(RegistryUnavailable) as caught:
        Resolver().resolve(offline.ref)
    assert str(caught.value).startswith(f"registry {stopped_registry.host} is unreachable")


def test_availability_and_current_tag(stopped_registry: RegistryProcess, tmp_path: Path) -> None:
    host = stopped_registry.host
    first, second = build_busybox_image("first"), build_busybox_image("second")
    first_digest = push_image(host, "client/moving", "v1", first)
    image = pushed(host, "client/moving", "v1", first_digest, [first])
    resolver = Resolver()
    pinned = Reference.parse(f"{image.ref}@{first_digest}")
    assert resolver.where_available(pinned) == "registry"
    assert resolver.current(pinned) == first_digest

    second_digest = push_image(host, "client/moving", "v1", second)
    assert resolver.current(pinned) == second_digest
    with RegistryClient(host, anonymous=True) as client:
        client.delete_manifest("client/moving", first_digest)
    with pytest.raises(NotFound):
        resolver.where_available(pinned)
    write_index(tmp_path / "root", image, [(first_digest, T0)])
    assert Resolver(index=str(tmp_path / "root")).where_available(pinned) == "index"


def test_an_index_out_of_reach_is_passed_over_once_with_a_note(images: dict[str, Pushed]) -> None:
    stable = images["stable"]
    notes: list[str] = []
    mirror = f"http://127.0.0.1:{free_port()}"
    resolver = Resolver(index=mirror, warn=notes.append)
    assert resolver.resolve(stable.ref).digest == stable.digest
    assert resolver.pin(stable.ref, T1).source == "registry"
    assert resolver.where_available(Reference.parse(stable.pinned)) == "registry"
    assert notes == [f"index mirror {mirror} is unreachable (ConnectionError): asking the registry instead"]
    with pytest.raises(PublishIndexError, match="unreachable"):  # the history has no other source
        resolver.resolve(stable.ref, at=T1)


def test_a_trickling_mirror_is_passed_over_and_the_registry_answers(
        images: dict[str, Pushed], stub: Stub, monkeypatch: pytest.MonkeyPatch) -> None:
    stable = images["stable"]
    path = f"/{paths.pointer_file(stable.registry, stable.repository, stable.tag)}"
    stub.on("GET", path, Reply(200, {}, b"{" + b" " * 10_000, trickle=0.05))
    monkeypatch.setattr("ligoenv.store.index.files.READ_DEADLINE", 0.3)  # 15 s in use
    notes: list[str] = []
    resolver = Resolver(index=f"http://{stub.host}", warn=notes.append)
    assert resolver.resolve(stable.ref).source == "registry"
    assert resolver.resolve(stable.ref).digest == stable.digest
    assert len(notes) == 1
    assert re.fullmatch(rf"index mirror http://{stub.host} is unreachable \(no whole answer after "
                        r"\d+\.\d s\): asking the registry instead", notes[0])


def test_an_index_that_is_wrong_is_not_passed_over(images: dict[str, Pushed], tmp_path: Path) -> None:
    stable = images["stable"]
    path = tmp_path / "root" / ".ligoenv" / "index" / stable.registry / "client" / "busybox.json"
    path.parent.mkdir(parents=True)
    path.write_text("{")
    with pytest.raises(PublishIndexError, match="not valid JSON"):
        Resolver(index=str(tmp_path / "root"), warn=pytest.fail).resolve(stable.ref)
