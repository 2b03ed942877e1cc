"""Runtime command lines (exact argv), runtime selection on a real PATH, and local trees."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import fields, replace
from pathlib import Path

import pytest

from ligoenv.client.runtimes.apptainer import Apptainer, Singularity
from ligoenv.client.runtimes.base import Bind, Host, RunPlan, RunRequest, parse_env
from ligoenv.client.runtimes.bwrap import Bwrap
from ligoenv.client.runtimes.docker import Docker, Podman
from ligoenv.client.runtimes.process import run_command
from ligoenv.client.runtimes.select import select_runtime
from ligoenv.oci.digest import Digest
from ligoenv.oci.errors import UsageError
from ligoenv.oci.manifest import ImageConfig
from ligoenv.oci.platform import Platform
from ligoenv.oci.reference import Reference
from ligoenv.store.completion import complete_tree
from ligoenv.store.errors import RuntimeNotFound
from ligoenv.store.singularityd import tree_command, tree_env
from testbed.clientkit import standin_path

DIGEST = Digest.of_bytes(b"top")
IMAGE = Reference.parse(f"registry.example:5000/lvk/lalsuite@{DIGEST}")
PINNED = f"registry.example:5000/lvk/lalsuite@{DIGEST}"
LINUX = Host("Linux", "x86_64")
MAC = Host("Darwin", "arm64")


REQUEST_FIELDS = {f.name for f in fields(RunRequest)} - {"platform"}


def plan(*, platform_explicit: bool = False, **changes: object) -> RunPlan:
    """A plan for IMAGE; `changes` name fields of the request or of the plan, and
    `platform_explicit` says that the request's --platform was the plan's platform."""
    asked = {k: v for k, v in changes.items() if k in REQUEST_FIELDS}
    resolved = {k: v for k, v in changes.items() if k not in REQUEST_FIELDS}
    request = replace(RunRequest(reference=str(IMAGE), command=("python", "-c", "print(1)"),
                                 cwd="/home/alice/analysis", host=LINUX, stdin_open=False),
                      **asked)  # type: ignore[arg-type]
    base = RunPlan(request=request, image=IMAGE, platform=Platform.parse("linux/amd64"))
    base = replace(base, **resolved)  # type: ignore[arg-type]
    if platform_explicit:
        base = replace(base, request=replace(request, platform=base.platform))
    return base


BINDS = (Bind("/data", "/data", False), Bind("/scratch/x", "/in", True))
ENV = (("OMP_NUM_THREADS", "4"), ("GREETING", "hello world"))


def test_apptainer_on_the_published_tree() -> None:
    tree = Path("/cvmfs/singularity.opensciencegrid.org/.images/ab/abcd")
    assert Apptainer().command(plan(tree=tree)) == [
        "apptainer", "exec", str(tree), "python", "-c", "print(1)"]


def test_apptainer_with_every_option_and_docker_fallback() -> None:
    argv = Apptainer().command(plan(binds=BINDS, env=ENV, gpu=True, cleanenv=True, workdir="/work"))
    assert argv == ["apptainer", "exec", "--cleanenv", "--nv", "--bind", "/data:/data",
                    "--bind", "/scratch/x:/in:ro", "--pwd", "/work",
                    f"docker://{PINNED}", "python", "-c", "print(1)"]
    assert Singularity().command(plan(command=())) == ["singularity", "run", f"docker://{PINNED}"]


def test_apptainer_leaves_its_bind_variables_in_the_environment() -> None:
    environ = {"APPTAINER_BIND": "/cvmfs,/hdfs", "SINGULARITY_BIND": "/srv", "HOME": "/home/alice"}
    assert Apptainer().environment(plan(cleanenv=True), environ) == environ


def test_apptainer_gets_the_user_environment_as_variables_not_csv_options() -> None:
    env = (("LIST", "a,b"), ("QUOTED", 'say "hi", then go'), ("EMPTY", ""))
    environ = {"HOME": "/home/alice"}
    assert Apptainer().environment(plan(env=env), environ) == {
        "HOME": "/home/alice", "APPTAINERENV_LIST": "a,b",
        "APPTAINERENV_QUOTED": 'say "hi", then go', "APPTAINERENV_EMPTY": ""}
    assert Singularity().environment(plan(env=env[:1]), environ) == {
        "HOME": "/home/alice", "SINGULARITYENV_LIST": "a,b"}
    assert "--env" not in Apptainer().command(plan(env=env))


def test_apptainer_fetches_the_asked_platform_by_its_manifest_digest() -> None:
    arm = Digest.of_bytes(b"arm64 manifest")
    argv = Apptainer().command(plan(platform=Platform.parse("linux/arm64"), platform_explicit=True,
                                    platform_digest=arm, command=("uname",)))
    assert argv == ["apptainer", "exec", f"docker://registry.example:5000/lvk/lalsuite@{arm}", "uname"]
    tree = Path("/cvmfs/x/.images/ab/abcd")  # a published tree is already the platform's own
    assert Apptainer().command(plan(tree=tree, platform_digest=arm, command=("uname",)))[2] == str(tree)


def test_docker_command_lines() -> None:
    assert Docker().command(plan()) == [
        "docker", "run", "--rm", "-v", "/home/alice/analysis:/home/alice/analysis",
        "-w", "/home/alice/analysis", PINNED, "python", "-c", "print(1)"]
    argv = Podman().command(plan(binds=BINDS, env=ENV, gpu=True, stdin_open=True, tty=True,
                                 workdir="/work", cleanenv=True))
    assert argv == ["podman", "run", "--rm", "-i", "-t",
                    "-v", "/home/alice/analysis:/home/alice/analysis", "-w", "/work",
                    "-v", "/data:/data", "-v", "/scratch/x:/in:ro",
                    "-e", "OMP_NUM_THREADS=4", "-e", "GREETING=hello world", "--gpus", "all",
                    PINNED, "python", "-c", "print(1)"]


@pytest.mark.parametrize(("host", "platforms", "explicit", "expected"), [
    (MAC, ("linux/amd64",), False, ["--platform", "linux/amd64"]),  # emulated, but asked for
    (MAC, ("linux/amd64", "linux/arm64"), False, []),  # the arm64 variant runs natively
    (MAC, ("linux/arm64/v8",), False, []),
    (MAC, (), False, []),  # unknown platforms: let docker decide
    (LINUX, ("linux/amd64",), False, []),
    (Host("Darwin", "x86_64"), ("linux/amd64",), False, []),
    (LINUX, ("linux/amd64", "linux/arm64"), True, ["--platform", "linux/arm64"]),
])
def test_docker_platform(host: Host, platforms: tuple[str, ...], explicit: bool, expected: list[str]) -> None:
    wanted = Platform.parse("linux/arm64") if explicit else Platform.parse("linux/amd64")
    argv = Docker().command(plan(host=host, image_platforms=platforms, platform=wanted,
                                 platform_explicit=explicit, command=("true",)))
    assert argv == ["docker", "run", "--rm", "-v", "/home/alice/analysis:/home/alice/analysis",
                    "-w", "/home/alice/analysis", *expected, PINNED, "true"]


def test_bwrap_command_line() -> None:
    tree = Path("/var/cache/ligoenv/images/abcd")
    argv = Bwrap().command(plan(tree=tree, binds=BINDS, env=ENV, cleanenv=True,
                                image_env=("PATH=/usr/bin:/bin", "LAL_DATA=/opt/lal x")))
    assert argv == [
        "bwrap", "--ro-bind", str(tree), "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
        "--bind", "/home/alice/analysis", "/home/alice/analysis", "--chdir", "/home/alice/analysis",
        "--die-with-parent", "--unshare-pid", "--new-session",
        "--bind", "/data", "/data", "--ro-bind", "/scratch/x", "/in",
        "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LAL_DATA", "/opt/lal x",
        "--setenv", "OMP_NUM_THREADS", "4", "--setenv", "GREETING", "hello world",
        "python", "-c", "print(1)"]
    no_cwd = Bwrap().command(plan(tree=tree, bind_cwd=False, command=(), image_command=("/run",)))
    assert no_cwd == ["bwrap", "--ro-bind", str(tree), "/", "--proc", "/proc", "--dev", "/dev",
                      "--tmpfs", "/tmp", "--chdir", "/", "--die-with-parent", "--unshare-pid",
                      "--new-session", "/run"]


def test_bwrap_keeps_the_session_only_for_a_terminal_on_stdin() -> None:
    tree = Path("/var/cache/ligoenv/images/abcd")
    assert "--new-session" in Bwrap().command(plan(tree=tree, stdin_tty=False, tty=False))
    assert "--new-session" in Bwrap().command(plan(tree=tree, stdin_tty=False, stdin_open=True))
    assert "--new-session" not in Bwrap().command(plan(tree=tree, stdin_tty=True, tty=True))


def test_bwrap_needs_a_tree_and_a_command() -> None:
    with pytest.raises(UsageError, match="bwrap runs an unpacked tree"):
        Bwrap().command(plan())
    with pytest.raises(UsageError, match="has no Entrypoint or Cmd: give a command after --"):
        Bwrap().command(plan(tree=Path("/t"), command=()))


@pytest.mark.parametrize(("text", "bind"), [
    ("/data", Bind("/data", "/data", False)),
    ("/data:/in", Bind("/data", "/in", False)),
    ("/data:/in:ro", Bind("/data", "/in", True)),
    ("/data:/in:rw", Bind("/data", "/in", False)),
    ("/data::ro", Bind("/data", "/data", True)),
    ("/data:/in//sub/./:ro", Bind("/data", "/in/sub", True)),
    ("/data://in", Bind("/data", "/in", False)),
])
def test_bind_syntax(text: str, bind: Bind) -> None:
    assert Bind.parse(text) == bind


@pytest.mark.parametrize("text", ["", ":/x", "/a:/b:rx", "/a:/b:ro:x", "/a:relative", "/a:..",
                                  "/a:/../../../X", "/a:/in/../x", "/a:/in/..:ro"])
def test_bad_binds(text: str) -> None:
    with pytest.raises(UsageError, match=re.escape(f"invalid bind {text!r}")):
        Bind.parse(text)


def test_env_syntax() -> None:
    assert parse_env("A=b=c") == ("A", "b=c")
    assert parse_env("EMPTY=") == ("EMPTY", "")
    for bad in ("NOVALUE", "=x"):
        with pytest.raises(UsageError, match="expected NAME=VALUE"):
            parse_env(bad)


def which_in(path: str):  # type: ignore[no-untyped-def]
    return lambda name: shutil.which(name, path=path)


def test_auto_selection_order(tmp_path: Path) -> None:
    cases = [
        (("apptainer", "singularity", "docker", "podman"), ("bwrap",), "apptainer"),
        (("singularity", "docker"), ("bwrap",), "singularity"),
        (("docker", "podman"), ("bwrap",), "docker"),
        (("podman",), ("bwrap",), "podman"),
        ((), ("bwrap",), "bwrap"),
    ]
    for number, (standins, real, expected) in enumerate(cases):
        (tmp_path / str(number)).mkdir()
        path = standin_path(tmp_path / str(number), standins, real)
        runtime = select_runtime("auto", which_in(path), {"DOCKER_HOST": "unix:///run/docker.sock"})
        assert runtime.name == expected
        assert runtime.path() == os.path.join(path, expected)


def test_a_docker_client_without_an_engine_is_passed_over(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = standin_path(tmp_path, ("docker",), ("bwrap",))
    monkeypatch.setattr("ligoenv.client.runtimes.docker.ENGINE_SOCKETS", (str(tmp_path / "docker.sock"),))
    assert select_runtime("auto", which_in(path), {}).name == "bwrap"
    assert select_runtime("auto", which_in(path), {"DOCKER_HOST": "tcp://127.0.0.1:2375"}).name == "docker"
    (tmp_path / "docker.sock").touch()
    assert select_runtime("auto", which_in(path), {}).name == "docker"
    assert select_runtime("docker", which_in(path), {}).name == "docker"  # asked for by name


def test_podman_needs_no_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ligoenv.client.runtimes.docker.ENGINE_SOCKETS", (str(tmp_path / "docker.sock"),))
    path = standin_path(tmp_path, ("docker", "podman"), ("bwrap",))
    assert select_runtime("auto", which_in(path), {}).name == "podman"  # docker has no engine here


def test_nothing_to_run_with(tmp_path: Path) -> None:
    empty = str(tmp_path)
    with pytest.raises(RuntimeNotFound) as caught:
        select_runtime("auto", which_in(empty))
    message = str(caught.value)
    assert message.startswith("no container runtime found: looked on PATH for apptainer, singularity, "
                              "docker, podman, bwrap (and for a Docker engine socket); install "
                              "Apptainer (https://apptainer.org")
    with pytest.raises(RuntimeNotFound, match="podman is not on PATH: install Podman"):
        select_runtime("podman", which_in(empty))
    with pytest.raises(UsageError, match="unknown runtime 'rkt': choose one of auto, apptainer, singularity"):
        select_runtime("rkt", which_in(empty))
    assert RuntimeNotFound("x").exit_code == 4


def test_env_and_command_read_back_from_a_completed_tree(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    value = "it's \"quoted\" with $HOME and\na new line"
    config = ImageConfig(digest=DIGEST, os="linux", architecture="amd64", diff_ids=(),
                         env=("PATH=/usr/bin:/bin", f"TRICKY={value}", "EMPTY="), cmd=("/bin/sh",))
    complete_tree(tree, config)
    assert tree_env(tree) == ("PATH=/usr/bin:/bin", f"TRICKY={value}", "EMPTY=")
    assert tree_command(tree) == ("/.singularity.d/runscript",)
    assert tree_env(tmp_path) == () and tree_command(tmp_path) == ()


def test_run_command_passes_the_exit_status_through(tmp_path: Path) -> None:
    assert run_command(["/bin/sh", "-c", "exit 7"], {}) == 7
    assert run_command(["/bin/sh", "-c", "kill -TERM $$"], {}) == 128 + 15
    with pytest.raises(RuntimeNotFound, match="cannot execute /nonexistent"):
        run_command(["/nonexistent"], {})


def test_bwrap_refuses_gpu_rather_than_ignoring_it(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--gpu needs Apptainer"):
        Bwrap().command(plan(tree=tmp_path, gpu=True))
