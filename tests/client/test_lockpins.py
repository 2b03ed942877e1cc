"""A lockfile's platform pins must be its index's entries: what a paper cites is what `run` runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from testbed.clientkit import Cli, Pushed, pushed, standin_calls, standin_path, write_index
from testbed.images import build_multiplatform_images, push_image
from testbed.registry import RegistryProcess

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
Capture = pytest.CaptureFixture[str]


def repin(path: Path, name: str, platform: str, manifest: str) -> None:
    """Edit the lockfile as an attacker would: the cited digest stays, one platform's pin changes."""
    document = json.loads(path.read_text())
    document["environments"][name]["platforms"][platform]["manifest"] = manifest
    path.write_text(json.dumps(document))


def refusal(image: Pushed, name: str = "multi") -> str:
    arm = image.platforms["linux/arm64"]
    return (f"ligoenv: error: environment {name} pins linux/amd64 to {arm}, which is not the entry of "
            f"{image.pinned} for linux/amd64 ({image.platforms['linux/amd64']}): the lockfile was "
            "altered; re-lock it with `ligoenv lock`\n")


@pytest.fixture()
def log(cli: Cli, tmp_path: Path) -> Path:
    cli.environ["PATH"] = standin_path(tmp_path, real=("bwrap",))
    cli.environ["LIGOENV_STANDIN_LOG"] = str(tmp_path / "calls.jsonl")
    return tmp_path / "calls.jsonl"


def test_run_and_verify_refuse_a_pin_that_is_not_the_index_entry(
        cli: Cli, log: Path, images: dict[str, Pushed], capsys: Capture) -> None:
    multi = images["multi"]
    assert cli("lock", multi.ref) == 0
    assert cli("verify") == 0
    repin(Path("ligoenv.lock"), "multi", "linux/amd64", str(multi.platforms["linux/arm64"]))
    capsys.readouterr()
    assert cli("verify") == 1
    assert capsys.readouterr().err == refusal(multi)
    for runtime in ("apptainer", "bwrap"):
        assert cli("run", "--runtime", runtime, "--platform", "linux/amd64", "--lock", "ligoenv.lock",
                   "multi", "--", "true") == 1
        assert capsys.readouterr().err == refusal(multi)
    assert cli("cite") == 0  # citing shows what the lockfile says, and runs nothing
    assert standin_calls(log) == []
    assert not (Path(cli.environ["LIGOENV_CACHE"]) / "images").exists()  # nothing was pulled


def test_the_index_comes_from_the_publish_index_else_the_cache(
        cli: Cli, log: Path, stopped_registry: RegistryProcess, tmp_path: Path, capsys: Capture) -> None:
    host = stopped_registry.host
    built = build_multiplatform_images("pins")
    image = pushed(host, "client/pins", "v1", push_image(host, "client/pins", "v1", built), built)
    assert cli("lock", image.ref) == 0
    assert cli("run", "--lock", "ligoenv.lock", "--", "true") == 0  # the index is read once, and kept
    stopped_registry.stop()
    assert cli("run", "--lock", "ligoenv.lock", "--", "true") == 0  # from the cache: no registry
    cached = Path(cli.environ["LIGOENV_CACHE"]) / "layers" / "blobs" / "sha256" / image.digest.hex
    cached.unlink()
    capsys.readouterr()
    assert cli("run", "--lock", "ligoenv.lock", "--", "true") == 1  # nowhere to check it: no run
    assert f"registry {host} is unreachable" in capsys.readouterr().err

    write_index(tmp_path / "root", image, [(image.digest, T0)])
    cli.environ["LIGOENV_INDEX"] = str(tmp_path / "root")
    assert cli("run", "--lock", "ligoenv.lock", "--", "true") == 0  # the publish index knows it
    repin(Path("ligoenv.lock"), "pins", "linux/amd64", str(image.platforms["linux/arm64"]))
    capsys.readouterr()
    assert cli("run", "--lock", "ligoenv.lock", "--", "true") == 1
    assert capsys.readouterr().err == refusal(image, "pins")
    assert [call["argv"] for call in standin_calls(log)] == [
        ["apptainer", "exec", f"docker://{image.pinned}", "true"]] * 3


def test_a_lockfile_whose_reference_names_another_image_is_refused(
        cli: Cli, log: Path, images: dict[str, Pushed], capsys: Capture) -> None:
    stable = images["stable"]
    assert cli("lock", stable.ref) == 0
    document = json.loads(Path("ligoenv.lock").read_text())
    cited = f"registry.example.org/client/busybox:stable@{stable.digest}"
    document["environments"]["busybox"]["reference"] = cited
    Path("ligoenv.lock").write_text(json.dumps(document))
    capsys.readouterr()
    for command in (["verify"], ["run", "--lock", "ligoenv.lock", "--", "true"]):
        assert cli(*command) == 1
        assert capsys.readouterr().err == (
            "ligoenv: error: lockfile ligoenv.lock is invalid: environments.busybox.reference: "
            f"{cited!r} names {cited}, but the environment pins {stable.registry}/client/busybox:"
            f"stable@{stable.digest}: re-lock it with `ligoenv lock`\n")
    assert standin_calls(log) == []
