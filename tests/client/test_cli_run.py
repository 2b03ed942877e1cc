"""`ligoenv run` in-process: exact command lines through the stand-ins, and real bubblewrap runs."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ligoenv.client.runtimes.base import Host
from testbed.clientkit import Cli, Pushed, pushed, standin_calls, standin_path, write_index
from testbed.images import build_busybox_image, push_image
from testbed.ocibuild import Entry, Layer
from testbed.registry import RegistryProcess

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MAC = Host("Darwin", "arm64")
Capture = pytest.CaptureFixture[str]


@pytest.fixture()
def log(cli: Cli, tmp_path: Path) -> Path:
    """Stand-ins for every runtime on PATH (and the real bwrap); their calls land in this file."""
    cli.environ["PATH"] = standin_path(tmp_path, real=("bwrap",))
    cli.environ["LIGOENV_STANDIN_LOG"] = str(tmp_path / "calls.jsonl")
    return tmp_path / "calls.jsonl"


@pytest.fixture()
def outside_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working directory outside /tmp: bwrap mounts a fresh /tmp, so only there mount points matter."""
    work = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="ligoenv-test-"))
    monkeypatch.chdir(work)
    yield work
    shutil.rmtree(work)


def only_call(log: Path) -> list[str]:
    calls = standin_calls(log)
    assert len(calls) == 1, calls
    return calls[0]["argv"]  # type: ignore[return-value]


def test_apptainer_runs_the_published_tree(cli: Cli, log: Path, images: dict[str, Pushed],
                                           tmp_path: Path) -> None:
    multi = images["multi"]
    root = tmp_path / "cvmfs" / "singularity.opensciencegrid.org"
    write_index(root, multi, [(multi.digest, T0)], trees=True)
    cli.environ["LIGOENV_INDEX"] = str(root)
    cli.environ["APPTAINER_BIND"] = "/hdfs,/cvmfs"
    arm = multi.platforms["linux/arm64"]
    assert cli("run", "--platform", "linux/arm64", multi.ref, "--", "python", "-c", "print(1)") == 0
    assert only_call(log) == ["apptainer", "exec", f"{root}/.images/{arm.hex[:2]}/{arm.hex}",
                              "python", "-c", "print(1)"]
    assert standin_calls(log)[0]["env"] == {"APPTAINER_BIND": "/hdfs,/cvmfs"}


def test_apptainer_falls_back_to_docker_uri_with_every_option(cli: Cli, log: Path, images: dict[str, Pushed],
                                                              tmp_path: Path) -> None:
    stable = images["stable"]
    (tmp_path / "data").mkdir()
    code = cli("run", "-B", str(tmp_path / "data") + ":/data:ro", "--bind", "/scratch", "--gpu",
               "--env", "OMP_NUM_THREADS=4", "--env", 'MSG=a, "b"', "--cleanenv", "--pwd", "/data",
               stable.ref, "--", "sh", "-c", "echo $MSG")
    assert code == 0
    assert only_call(log) == ["apptainer", "exec", "--cleanenv", "--nv",
                              "--bind", f"{tmp_path}/data:/data:ro", "--bind", "/scratch:/scratch",
                              "--pwd", "/data", f"docker://{stable.pinned}",
                              "sh", "-c", "echo $MSG"]
    # Not `--env`, which apptainer splits as CSV: the values arrive whole.
    assert standin_calls(log)[0]["env"] == {"APPTAINERENV_MSG": 'a, "b"', "APPTAINERENV_OMP_NUM_THREADS": "4"}


def test_singularity_then_docker_then_podman(cli: Cli, images: dict[str, Pushed], tmp_path: Path) -> None:
    stable = images["stable"]
    cli.environ["LIGOENV_STANDIN_LOG"] = str(tmp_path / "calls.jsonl")
    expected = {
        ("singularity", "docker"): ["singularity", "exec", f"docker://{stable.pinned}", "true"],
        ("docker", "podman"): ["docker", "run", "--rm", "-v", f"{os.getcwd()}:{os.getcwd()}",
                               "-w", os.getcwd(), stable.pinned, "true"],
        ("podman",): ["podman", "run", "--rm", "-v", f"{os.getcwd()}:{os.getcwd()}",
                      "-w", os.getcwd(), stable.pinned, "true"],
    }
    for number, (names, argv) in enumerate(expected.items()):
        (tmp_path / str(number)).mkdir()
        cli.environ["PATH"] = standin_path(tmp_path / str(number), names)
        assert cli("run", stable.ref, "--", "true") == 0
        assert standin_calls(tmp_path / "calls.jsonl")[-1]["argv"] == argv


@pytest.mark.parametrize(("image", "platform_flag"), [("stable", ["--platform", "linux/amd64"]),
                                                      ("multi", [])])
def test_docker_on_an_apple_silicon_mac(cli: Cli, images: dict[str, Pushed], tmp_path: Path, image: str,
                                        platform_flag: list[str]) -> None:
    pushed = images[image]
    cli.environ["PATH"] = standin_path(tmp_path, ("docker",))
    cli.environ["LIGOENV_STANDIN_LOG"] = str(tmp_path / "calls.jsonl")
    cli.host = MAC
    assert cli("run", pushed.ref, "--", "uname", "-m") == 0
    assert only_call(tmp_path / "calls.jsonl") == [
        "docker", "run", "--rm", "-v", f"{os.getcwd()}:{os.getcwd()}", "-w", os.getcwd(),
        *platform_flag, pushed.pinned, "uname", "-m"]


def test_run_a_lockfile_environment(cli: Cli, log: Path, images: dict[str, Pushed]) -> None:
    stable, multi = images["stable"], images["multi"]
    assert cli("lock", "-o", "one.lock", stable.ref) == 0
    assert cli("run", "--lock", "one.lock", "--", "echo", "hi") == 0  # the only environment
    assert cli("lock", "-o", "two.lock", stable.ref, multi.ref) == 0
    assert cli("run", "--lock", "two.lock", "multi", "--", "echo", "hi") == 0
    assert cli("run", "--lock", "two.lock", "multi", "echo", "hi") == 0  # -- is optional
    calls = [call["argv"] for call in standin_calls(log)]
    assert calls == [["apptainer", "exec", f"docker://{stable.pinned}", "echo", "hi"],
                     ["apptainer", "exec", f"docker://{multi.pinned}", "echo", "hi"],
                     ["apptainer", "exec", f"docker://{multi.pinned}", "echo", "hi"]]


def test_the_command_exit_status_is_ours(cli: Cli, log: Path, images: dict[str, Pushed]) -> None:
    cli.environ["LIGOENV_STANDIN_EXIT"] = "5"
    assert cli("run", images["stable"].ref, "--", "false") == 5


def test_missing_runtime(cli: Cli, images: dict[str, Pushed], tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    cli.environ["PATH"] = str(tmp_path)
    assert cli("run", "--runtime", "apptainer", images["stable"].ref, "--", "true") == 4
    assert capsys.readouterr().err == (
        "ligoenv: error: apptainer is not on PATH: install Apptainer "
        "(https://apptainer.org/docs/admin/main/installation.html) or choose another --runtime\n")
    assert cli("run", images["stable"].ref, "--", "true") == 4
    assert capsys.readouterr().err.startswith(
        "ligoenv: error: no container runtime found: looked on PATH for "
        "apptainer, singularity, docker, podman, bwrap (and for a Docker engine socket); install")


def test_bwrap_pulls_into_the_cache_once_and_runs(cli: Cli, images: dict[str, Pushed], tmp_path: Path,
                                                  outside_tmp: Path, capfd: Capture) -> None:
    stable = images["stable"]
    cli.environ["PATH"] = standin_path(tmp_path, ("docker",), real=("bwrap",))
    assert cli("run", "--runtime", "bwrap", stable.ref, "--", "cat", "/etc/greeting") == 0
    assert capfd.readouterr().out == "hello from stable\n"
    tree = Path(cli.environ["LIGOENV_CACHE"]) / "images" / stable.digest.hex
    assert (tree / ".singularity.d" / "runscript").is_file()
    assert (tree / outside_tmp.relative_to("/")).is_dir()  # the mount point for the working directory
    code = cli("run", "--runtime", "bwrap", "--env", "EXTRA=1", stable.ref, "--",
               "sh", "-c", 'echo "$GREETING $EXTRA $PWD"; exit 7')
    assert code == 7
    assert capfd.readouterr().out == f"hi there 1 {outside_tmp}\n"


def test_bwrap_on_a_published_tree_pulls_nothing(cli: Cli, images: dict[str, Pushed], tmp_path: Path,
                                                 outside_tmp: Path, capfd: Capture) -> None:
    old = images["old"]
    root = tmp_path / "root"
    tree = root / ".images" / old.digest.hex[:2] / old.digest.hex
    assert cli("pull", "--output", str(tree), old.ref) == 0  # a real tree, as a publisher makes it
    assert capfd.readouterr().out == f"{tree}\n"
    write_index(root, old, [(old.digest, T0)])
    cache = Path(cli.environ["LIGOENV_CACHE"]) / "images"
    cli.environ["PATH"] = standin_path(tmp_path, (), real=("bwrap",))
    command = ["sh", "-c", "cat /etc/greeting; env"]
    assert cli("run", "--index", str(root), "--cleanenv", old.ref, "--", *command) == 0
    out, err = capfd.readouterr()
    assert out.startswith("hello from old\n")
    env = sorted(line for line in out.splitlines()[1:] if not line.startswith("SHLVL="))
    assert env == ["GREETING=hi there", "PATH=/usr/bin:/bin", "PWD=/"]
    assert err == (f"ligoenv: {outside_tmp} is not mounted: {outside_tmp} does not exist in the image; "
                   "running in /\n")
    assert not cache.exists()
    assert not (tree / "var" / "tmp" / outside_tmp.name).exists()  # the published tree is never modified


def test_bwrap_mounts_a_working_directory_the_published_tree_lacks(
        cli: Cli, images: dict[str, Pushed], tmp_path: Path, capfd: Capture) -> None:
    old = images["old"]
    root = tmp_path / "root"
    tree = root / ".images" / old.digest.hex[:2] / old.digest.hex
    assert cli("pull", "--output", str(tree), old.ref) == 0
    capfd.readouterr()
    write_index(root, old, [(old.digest, T0)])
    cli.environ["PATH"] = standin_path(tmp_path, (), real=("bwrap",))
    # /srv is an empty bind point in the image; the working directory below it is not there.
    work = Path(tempfile.mkdtemp(dir="/srv", prefix="ligoenv-test-"))
    try:
        (work / "data.txt").write_text("strain data\n")
        os.chdir(work)
        assert cli("run", "--index", str(root), old.ref, "--", "sh", "-c",
                   "cat data.txt /etc/greeting; pwd; touch /new 2>/dev/null || echo read-only") == 0
        out, err = capfd.readouterr()
        assert out == f"strain data\nhello from old\n{work}\nread-only\n" and err == ""
        assert not (tree / "srv" / work.name).exists()  # the published tree is never modified
    finally:
        shutil.rmtree(work)


@pytest.mark.parametrize("args", [
    ["--gpu", "-B", "/a:/b:ro", "REF", "--env", "K=V", "--", "sh", "-c", "exit 0"],
    ["--bind=/a", "--cleanenv", "--pwd", "/w", "REF", "echo", "hi"],
    ["--lock", "two.lock", "multi", "--runtime=apptainer", "--", "echo", "--gpu"],
    ["--lock", "one.lock", "--", "true"],
    ["--platform", "linux/arm64", "REF", "--", "uname"],
])
def test_fast_path_and_typer_agree(cli: Cli, log: Path, images: dict[str, Pushed], args: list[str]) -> None:
    stable = images["stable"]
    assert cli("lock", "-o", "one.lock", stable.ref) == 0
    assert cli("lock", "-o", "two.lock", stable.ref, images["multi"].ref) == 0
    line = [images["multi"].ref if a == "REF" else a for a in args]
    assert cli("run", *line) == 0
    assert cli.typer("run", *line) == 0
    fast, full = standin_calls(log)
    assert fast == full


def test_apptainer_fetches_the_asked_platform(cli: Cli, log: Path, images: dict[str, Pushed]) -> None:
    multi = images["multi"]
    arm = multi.platforms["linux/arm64"]
    assert cli("run", "--platform", "linux/arm64", multi.ref, "--", "uname", "-m") == 0
    assert cli("lock", multi.ref) == 0
    assert cli("run", "--platform", "linux/arm64", "--lock", "ligoenv.lock", "--", "uname", "-m") == 0
    assert cli("run", multi.ref, "--", "uname", "-m") == 0  # no --platform: apptainer picks the host's
    arm_only = ["apptainer", "exec", f"docker://{multi.registry}/client/multi@{arm}", "uname", "-m"]
    assert [call["argv"] for call in standin_calls(log)] == [
        arm_only, arm_only, ["apptainer", "exec", f"docker://{multi.pinned}", "uname", "-m"]]


def test_lockfile_paths_are_run_only_where_the_index_gives_them(
        cli: Cli, log: Path, images: dict[str, Pushed], tmp_path: Path, capsys: Capture) -> None:
    stable = images["stable"]
    assert cli("lock", stable.ref) == 0
    # A directory named like the digest, anywhere: a hand-edited (or hostile) lockfile points at it.
    evil = tmp_path / "evil" / stable.digest.hex
    evil.mkdir(parents=True)
    document = json.loads(Path("ligoenv.lock").read_text())
    document["environments"]["busybox"]["paths"] = [str(evil)]
    Path("ligoenv.lock").write_text(json.dumps(document))
    capsys.readouterr()

    assert cli("run", "--lock", "ligoenv.lock", "--", "true") == 0  # no index: nothing vouches for it
    assert cli("path", "busybox") == 3
    root = tmp_path / "root"
    write_index(root, stable, [(stable.digest, T0)], trees=True)
    published = root / ".images" / stable.digest.hex[:2] / stable.digest.hex
    cli.environ["LIGOENV_INDEX"] = str(root)
    assert cli("run", "--lock", "ligoenv.lock", "--", "true") == 0
    assert cli("path", "busybox") == 0
    assert capsys.readouterr().out == f"{published}\n"
    assert [call["argv"] for call in standin_calls(log)] == [
        ["apptainer", "exec", f"docker://{stable.pinned}", "true"],
        ["apptainer", "exec", str(published), "true"]]
    assert json.loads(Path("ligoenv.lock").read_text()) == document  # left as written, for the record


def test_a_bind_destination_cannot_reach_out_of_the_tree(cli: Cli, log: Path, images: dict[str, Pushed],
                                                        tmp_path: Path, capsys: Capture) -> None:
    for destination in ("/../../../escaped", "/srv/../../escaped"):
        assert cli("run", "--runtime", "bwrap", "-B", f"{tmp_path}:{destination}", images["stable"].ref,
                   "--", "true") == 2
        assert capsys.readouterr().err == (f"ligoenv: error: invalid bind '{tmp_path}:{destination}': "
                                           "the destination must not contain '..'\n")
    assert not (tmp_path / "escaped").exists()
    assert not (Path(cli.environ["LIGOENV_CACHE"]) / "escaped").exists()


@pytest.mark.parametrize(("args", "command", "debug"), [
    (["REF", "echo", "hi", "--debug"], ["echo", "hi", "--debug"], False),
    (["REF", "ls", "-l", "--gpu"], ["ls", "-l", "--gpu"], False),
    (["--debug", "REF", "echo", "hi"], ["echo", "hi"], True),
    (["REF", "--debug", "--", "echo", "--debug"], ["echo", "--debug"], True),
    (["--lock", "one.lock", "busybox", "--debug"], ["--debug"], False),
])
def test_options_after_the_image_belong_to_the_command(
        cli: Cli, log: Path, images: dict[str, Pushed], monkeypatch: pytest.MonkeyPatch, capsys: Capture,
        args: list[str], command: list[str], debug: bool) -> None:
    stable = images["stable"]
    assert cli("lock", "-o", "one.lock", stable.ref) == 0
    line = [stable.ref if a == "REF" else a for a in args]
    assert cli("run", *line) == 0
    monkeypatch.setattr("ligoenv.cli.main._fast_path", lambda args, inv: None)  # through typer
    assert cli("run", *line) == 0
    assert cli("--debug", "run", *line) == 0
    fast, full, debugged = (call["argv"] for call in standin_calls(log))
    assert fast == full == debugged == ["apptainer", "exec", f"docker://{stable.pinned}", *command]
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ligoenv: running")]
    assert len(notes) == (3 if debug else 1)


def hostile_image(registry: str, repository: str, links: dict[str, str]) -> Pushed:
    """busybox with its top-level `links` (name -> target) replaced by symlinks, pushed."""
    entries = [Entry(f".wh.{name}") for name in links]
    entries += [Entry(name, "symlink", target=target) for name, target in links.items()]
    image = build_busybox_image(repository, extra_layers=[Layer.from_entries(entries)])
    return pushed(registry, repository, "latest", push_image(registry, repository, "latest", image), [image])


@pytest.fixture()
def host_dir(tmp_path: Path) -> Path:
    """A directory of the host that a hostile image's symlinks point at through bwrap's /oldroot."""
    directory = tmp_path / "host"
    directory.mkdir()
    return directory


def publish_tree(cli: Cli, image: Pushed, root: Path) -> Path:
    """`image` pulled as a publisher would lay it out under `root`, with its index."""
    tree = root / ".images" / image.digest.hex[:2] / image.digest.hex
    assert cli("pull", "--output", str(tree), image.ref) == 0
    write_index(root, image, [(image.digest, T0)])
    return tree


@pytest.mark.parametrize("published", [False, True])
@pytest.mark.parametrize("spelling", ["/oldroot{host}", "..{host}/../../oldroot{host}"])
def test_a_bind_destination_never_crosses_an_image_symlink(
        cli: Cli, registry: RegistryProcess, tmp_path: Path, host_dir: Path, capfd: Capture,
        published: bool, spelling: str) -> None:
    image = hostile_image(registry.host, f"client/escape-{len(spelling)}",
                          {"escape": spelling.format(host=host_dir), "srv": "/oldroot/" + str(host_dir)})
    cli.environ["PATH"] = standin_path(tmp_path, (), real=("bwrap",))
    if published:
        cli.environ["LIGOENV_INDEX"] = str(tmp_path / "root")
        publish_tree(cli, image, tmp_path / "root")
    capfd.readouterr()
    for destination, crossed in (("/escape/x", "/escape"), ("/escape", "/escape"), ("/srv/a/b", "/srv")):
        assert cli("run", "--runtime", "bwrap", "-B", f"{tmp_path}:{destination}", image.ref,
                   "--", "true") == 2
        assert capfd.readouterr().err == (
            f"ligoenv: error: cannot bind {tmp_path} to {destination}: {crossed} is a symbolic link "
            "in the image, and a mount point must not cross one (bind to the directory it names)\n")
    assert list(host_dir.iterdir()) == []


@pytest.mark.parametrize("published", [False, True])
def test_the_working_directory_is_not_mounted_through_an_image_symlink(
        cli: Cli, registry: RegistryProcess, tmp_path: Path, host_dir: Path, outside_tmp: Path,
        capfd: Capture, published: bool) -> None:
    image = hostile_image(registry.host, "client/var-escape", {"var": f"/oldroot{host_dir}"})
    cli.environ["PATH"] = standin_path(tmp_path, (), real=("bwrap",))
    if published:
        cli.environ["LIGOENV_INDEX"] = str(tmp_path / "root")
        publish_tree(cli, image, tmp_path / "root")
    capfd.readouterr()
    assert cli("run", "--runtime", "bwrap", image.ref, "--", "sh", "-c", "pwd") == 0
    assert capfd.readouterr() == ("/\n", f"ligoenv: {outside_tmp} is not mounted: /var is a symbolic "
                                         "link in the image, and a mount point must not cross one; "
                                         "running in /\n")
    assert list(host_dir.iterdir()) == []


def test_an_image_tmp_that_is_a_symlink_is_replaced_by_a_fresh_one(
        cli: Cli, registry: RegistryProcess, tmp_path: Path, host_dir: Path, outside_tmp: Path,
        capfd: Capture) -> None:
    image = hostile_image(registry.host, "client/tmp-escape", {"tmp": f"/oldroot{host_dir}"})
    cli.environ["PATH"] = standin_path(tmp_path, (), real=("bwrap",))
    capfd.readouterr()
    assert cli("run", "--runtime", "bwrap", "-B", f"{tmp_path}:/tmp/data", image.ref, "--", "sh", "-c",
               "touch /tmp/x && ls /tmp && pwd") == 0
    assert capfd.readouterr() == (f"data\nx\n{outside_tmp}\n", "")
    assert list(host_dir.iterdir()) == []


def test_apptainer_on_a_tree_refuses_a_bind_crossing_an_image_symlink(
        cli: Cli, log: Path, registry: RegistryProcess, tmp_path: Path, host_dir: Path,
        capfd: Capture) -> None:
    image = hostile_image(registry.host, "client/escape-apptainer", {"escape": f"/oldroot{host_dir}"})
    cli.environ["LIGOENV_INDEX"] = str(tmp_path / "root")
    publish_tree(cli, image, tmp_path / "root")
    capfd.readouterr()
    assert cli("run", "-B", f"{tmp_path}:/escape/x", image.ref, "--", "true") == 2
    assert capfd.readouterr().err == (
        f"ligoenv: error: cannot bind {tmp_path} to /escape/x: /escape is a symbolic link in the image, "
        "and a mount point must not cross one (bind to the directory it names)\n")
    assert standin_calls(log) == []
