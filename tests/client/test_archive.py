"""`ligoenv archive` and `restore` against the real registry, skopeo and bubblewrap."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from datetime import datetime
from pathlib import Path

import pytest

from ligoenv.oci.reference import Reference
from ligoenv.oci.registry import RegistryClient
from testbed.clientkit import Cli, Pushed, pushed
from testbed.images import build_busybox_image, build_multiplatform_images, push_image
from testbed.registry import RegistryProcess


@pytest.fixture()
def own_image(stopped_registry: RegistryProcess) -> Pushed:
    """An image in a registry of the test's own, so it can be deleted or the registry stopped."""
    image = build_busybox_image("paper", {"etc/greeting": "hello from the paper\n"},
                                env=("PATH=/usr/bin:/bin",))
    digest = push_image(stopped_registry.host, "client/paper", "v1", image)
    return pushed(stopped_registry.host, "client/paper", "v1", digest, [image])


def _lock_and_archive(cli: Cli, image: Pushed, archive: str = "env.tar") -> None:
    assert cli("lock", "--name", "paper=" + image.ref) == 0
    assert cli("archive", "-o", archive) == 0


def test_archive_restore_and_run_with_the_registry_gone(
        cli: Cli, own_image: Pushed, stopped_registry: RegistryProcess, userenv: dict[str, str],
        capfd: pytest.CaptureFixture[str]) -> None:
    _lock_and_archive(cli, own_image)
    with RegistryClient(own_image.registry) as client:
        client.delete_manifest(own_image.repository, own_image.digest)
    stopped_registry.stop()
    shutil.rmtree(userenv["LIGOENV_CACHE"])
    Path("ligoenv.lock").unlink()
    capfd.readouterr()

    assert cli("restore", "env.tar") == 0
    assert "every blob verified" in capfd.readouterr().out
    cli.environ["PATH"] = _bwrap_path(Path.cwd().parent)
    assert cli("run", "--runtime", "bwrap", "--lock", "ligoenv.lock", "paper", "--", "cat",
               "/etc/greeting") == 0
    assert capfd.readouterr().out == "hello from the paper\n"

    # verify and cite name the archive as where the environment can still be had.
    assert cli("verify", "--json") == 0
    [result] = json.loads(capfd.readouterr().out)["environments"]
    assert result["available"] == "archive" and result["archive"] == str(Path("env.tar").absolute())
    assert cli("cite", "--format", "text") == 0
    assert f"archived in {Path('env.tar').absolute()} (sha256:" in capfd.readouterr().out


def test_two_archives_of_one_lockfile_are_identical_and_hold_a_layout(
        cli: Cli, images: dict[str, Pushed], userenv: dict[str, str]) -> None:
    multi = images["multi"]
    assert cli("lock", "--name", "multi=" + multi.ref, "--name", "stable=" + images["stable"].ref) == 0
    assert cli("archive", "-o", "a.tar") == 0
    shutil.rmtree(userenv["LIGOENV_CACHE"], ignore_errors=True)  # the second from the registry alone
    assert cli("archive", "-o", "b.tar") == 0
    assert Path("a.tar").read_bytes() == Path("b.tar").read_bytes()

    with tarfile.open("a.tar") as tar:
        names = tar.getnames()
        assert names == sorted(names)
        created = datetime.fromisoformat(json.loads(Path("ligoenv.lock").read_text())["created"])
        assert {m.mtime for m in tar} == {int(created.timestamp())}
        assert {(m.uid, m.gid, m.uname, m.gname) for m in tar} == {(0, 0, "", "")}
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        citation = tar.extractfile("CITATION.cff").read().decode()  # type: ignore[union-attr]
    assert {"oci-layout", "ligoenv.lock", "README.md", "CITATION.cff"} <= set(names)
    entries = {e["annotations"]["org.opencontainers.image.ref.name"]: e["digest"] for e in index["manifests"]}
    assert entries == {"multi": str(multi.digest), "stable": str(images["stable"].digest)}
    assert f"value: \"{multi.ref}@{multi.digest}\"" in citation and str(images["stable"].digest) in citation
    for digest in multi.platforms.values():  # every locked platform's manifest
        assert f"blobs/sha256/{digest.hex}" in names


def test_archive_narrowed_to_one_platform(cli: Cli, images: dict[str, Pushed]) -> None:
    multi = images["multi"]
    assert cli("lock", multi.ref) == 0
    assert cli("archive", "--platform", "linux/arm64", "-o", "arm.tar") == 0
    with tarfile.open("arm.tar") as tar:
        names = set(tar.getnames())
    assert f"blobs/sha256/{multi.platforms['linux/arm64'].hex}" in names
    assert f"blobs/sha256/{multi.platforms['linux/amd64'].hex}" not in names
    assert cli("archive", "--platform", "linux/s390x", "-o", "none.tar") == 3
    assert not Path("none.tar").exists()


def test_skopeo_reads_the_archive_and_restore_to_rehosts_under_the_same_digest(
        cli: Cli, images: dict[str, Pushed], stopped_registry: RegistryProcess,
        capfd: pytest.CaptureFixture[str]) -> None:
    multi = images["multi"]
    assert cli("lock", "--name", "multi=" + multi.ref) == 0
    assert cli("archive", "-o", "multi.tar") == 0
    inspected = subprocess.run(["skopeo", "inspect", "--raw", "oci-archive:multi.tar:multi"],
                               capture_output=True, check=True, timeout=60).stdout
    assert Reference.parse(multi.pinned).digest.hex in _sha256(inspected)  # type: ignore[union-attr]

    capfd.readouterr()
    target = f"{stopped_registry.host}/rehosted"
    assert cli("restore", "multi.tar", "--to", target, "--lockfile", "copy.lock") == 0
    assert f"{target}/client/multi@{multi.digest}" in capfd.readouterr().out
    digest = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw",
                             f"docker://{target}/client/multi:latest"],
                            capture_output=True, check=True, timeout=60).stdout
    assert _sha256(digest) == multi.digest.hex
    assert Path("copy.lock").read_text() == Path("ligoenv.lock").read_text()


def test_a_flipped_byte_is_refused_naming_the_blob(cli: Cli, own_image: Pushed, userenv: dict[str, str],
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    _lock_and_archive(cli, own_image)
    layer = own_image.images[0].layers[-1].digest
    damaged = _flip_byte_in(Path("env.tar"), f"blobs/sha256/{layer.hex}")
    shutil.rmtree(userenv["LIGOENV_CACHE"])
    capfd.readouterr()
    assert cli("restore", str(damaged), "--lockfile", "other.lock") == 1
    err = capfd.readouterr().err
    assert err == (f"ligoenv: error: {damaged.absolute()}: blob {layer} does not match its digest: "
                   "the archive is damaged or was altered\n")
    assert not Path("other.lock").exists()
    assert not (Path(userenv["LIGOENV_CACHE"]) / "layers" / "blobs" / "sha256" / layer.hex).exists()
    assert not (Path(userenv["LIGOENV_CACHE"]) / "images").exists()


def test_restore_refuses_what_is_not_an_archive(cli: Cli, capfd: pytest.CaptureFixture[str]) -> None:
    Path("junk.tar").write_bytes(b"not a tar at all" * 100)
    assert cli("restore", "junk.tar") == 1
    assert "is not a readable tar archive" in capfd.readouterr().err
    with tarfile.open("link.tar", "w") as tar:
        link = tarfile.TarInfo("oci-layout")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    assert cli("restore", "link.tar") == 1
    assert "entry oci-layout is a link or device" in capfd.readouterr().err


def test_restore_to_needs_a_registry_host(cli: Cli, own_image: Pushed,
                                          capfd: pytest.CaptureFixture[str]) -> None:
    _lock_and_archive(cli, own_image)
    capfd.readouterr()
    assert cli("restore", "env.tar", "--to", "justaname") == 2
    assert "start with a registry host" in capfd.readouterr().err


def test_a_multiplatform_restore_unpacks_the_hosts_image(cli: Cli, registry: RegistryProcess,
                                                         userenv: dict[str, str]) -> None:
    multi = build_multiplatform_images("archived", {"etc/greeting": "multi\n"})
    digest = push_image(registry.host, "client/archived", "latest", multi)
    image = pushed(registry.host, "client/archived", "latest", digest, multi)
    assert cli("lock", image.ref) == 0
    assert cli("archive", "-o", "m.tar") == 0
    shutil.rmtree(userenv["LIGOENV_CACHE"])
    assert cli("restore", "m.tar", "--platform", "linux/arm64") == 0
    trees = Path(userenv["LIGOENV_CACHE"]) / "images"
    assert sorted(p.name for p in trees.iterdir()) == [image.platforms["linux/arm64"].hex]
    # the restored tree names the registry digests it was locked at, as a pulled one does
    from ligoenv.store.provenance import read_provenance

    origin = read_provenance(trees / image.platforms["linux/arm64"].hex)
    assert origin is not None
    assert (origin["reference"], origin["digest"], origin["manifest"], origin["platform"]) == (
        image.ref, str(digest), str(image.platforms["linux/arm64"]), "linux/arm64")


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _flip_byte_in(archive: Path, member: str) -> Path:
    with tarfile.open(archive) as tar:
        offset = tar.getmember(member).offset_data
    data = bytearray(archive.read_bytes())
    data[offset + 10] ^= 0xFF
    damaged = archive.with_name("damaged.tar")
    damaged.write_bytes(bytes(data))
    return damaged


def _bwrap_path(where: Path) -> str:
    directory = where / "bwrap-bin"
    directory.mkdir(exist_ok=True)
    found = shutil.which("bwrap")
    assert found, "bwrap is not installed"
    (directory / "bwrap").symlink_to(found)
    return str(directory)


def test_a_corrupt_cached_layer_leaves_no_archive(cli: Cli, own_image: Pushed, userenv: dict[str, str],
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    assert cli("lock", "--name", "paper=" + own_image.ref) == 0
    assert cli("pull", own_image.ref) == 0  # the layers are now in the cache
    layer = own_image.images[0].layers[-1].digest
    cached = Path(userenv["LIGOENV_CACHE"]) / "layers" / "blobs" / "sha256" / layer.hex
    data = bytearray(cached.read_bytes())
    data[-5] ^= 0xFF
    cached.write_bytes(bytes(data))
    capfd.readouterr()
    assert cli("archive", "-o", "bad.tar") == 1
    assert f"cached blob {layer.short}" in capfd.readouterr().err
    assert not Path("bad.tar").exists()
    assert [p.name for p in Path.cwd().iterdir() if p.name.startswith(".bad.tar")] == []
    assert not cached.exists()  # evicted: the next archive downloads it again
    assert cli("archive", "-o", "good.tar") == 0
