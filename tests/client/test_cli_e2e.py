"""The installed `ligoenv` command as a subprocess: real exec, real bubblewrap, errors, light imports."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from testbed.clientkit import Pushed, pushed, standin_calls, standin_path, write_index
from testbed.images import build_busybox_image, push_image
from testbed.registry import RegistryProcess

LIGOENV = str(Path(sys.executable).parent / "ligoenv")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HEAVY = ("requests", "oras", "jsonschema", "rich", "typer", "click", "pydantic")


def ligoenv(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LIGOENV, *args], env=env, capture_output=True, text=True, timeout=60,
                          check=False)


def test_bwrap_runs_a_pulled_image_and_passes_the_exit_status(userenv: dict[str, str],
                                                              images: dict[str, Pushed]) -> None:
    stable = images["stable"]
    done = ligoenv(userenv, "run", "--runtime", "bwrap", stable.ref, "--", "cat", "/etc/greeting")
    assert (done.returncode, done.stdout, done.stderr) == (0, "hello from stable\n", "")
    done = ligoenv(userenv, "run", "--runtime", "bwrap", stable.ref, "--", "sh", "-c", "exit 7")
    assert (done.returncode, done.stdout, done.stderr) == (7, "", "")


def test_a_batch_systems_sigterm_reaches_the_command_in_bwrap(userenv: dict[str, str],
                                                              images: dict[str, Pushed]) -> None:
    stable = images["stable"]
    assert ligoenv(userenv, "pull", stable.ref).returncode == 0  # the run below starts at once
    script = 'trap "echo got TERM; exit 42" TERM; echo ready; sleep 100 & wait'
    process = subprocess.Popen([LIGOENV, "run", "--runtime", "bwrap", stable.ref, "--", "sh", "-c",
                                script], env=userenv, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    process.send_signal(signal.SIGTERM)  # as HTCondor or Slurm stop a job
    assert process.wait(30) == 42
    assert process.stdout.read() == "got TERM\n"


def test_exec_hands_the_process_to_the_runtime(userenv: dict[str, str], images: dict[str, Pushed],
                                               tmp_path: Path) -> None:
    stable = images["stable"]
    env = {**userenv, "PATH": standin_path(tmp_path), "LIGOENV_STANDIN_LOG": str(tmp_path / "calls.jsonl"),
           "LIGOENV_STANDIN_EXIT": "3", "SINGULARITY_BIND": "/srv"}
    done = ligoenv(env, "run", stable.ref, "--", "echo", "a b")
    assert done.returncode == 3 and done.stderr == ""
    [call] = standin_calls(tmp_path / "calls.jsonl")
    assert call["argv"] == ["apptainer", "exec", f"docker://{stable.pinned}", "echo", "a b"]
    assert call["env"] == {"SINGULARITY_BIND": "/srv"} and call["cwd"] == str(Path.cwd())


def test_errors_are_one_line_unless_debugging(userenv: dict[str, str]) -> None:
    Path("ligoenv.lock").write_text("{ not json")
    done = ligoenv(userenv, "resolve", "lalsuite")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == ("ligoenv: error: lockfile ligoenv.lock is not valid JSON (line 1, column 3: "
                           "Expecting property name enclosed in double quotes); restore it from version "
                           "control or re-create it with `ligoenv lock`\n")
    debug = ligoenv(userenv, "--debug", "resolve", "lalsuite")
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert "ligoenv.store.errors.LockfileError" in debug.stderr
    usage = ligoenv(userenv, "run", "--gpu=maybe", "x")
    assert usage.returncode == 2 and usage.stderr.count("\n") == 1 and "Traceback" not in usage.stderr
    Path("ligoenv.lock").unlink()
    missing = ligoenv({**userenv, "PATH": "/nonexistent"}, "run", "lvk/lalsuite:nightly", "--", "true")
    assert missing.returncode == 4 and missing.stdout == ""
    assert missing.stderr.startswith("ligoenv: error: no container runtime found: looked on PATH for ")
    assert missing.stderr.count("\n") == 1


def test_hot_paths_stay_light(userenv: dict[str, str], images: dict[str, Pushed], tmp_path: Path) -> None:
    """From a lockfile or a local index, resolve and run import none of the heavy libraries."""
    stable = images["stable"]
    assert ligoenv(userenv, "lock", stable.ref).returncode == 0
    write_index(tmp_path / "root", stable, [(stable.digest, T0)])
    probe = ("import sys; from ligoenv.cli.common import Invocation; from ligoenv.cli.main import run; "
             "code = run(sys.argv[1:], Invocation(executor=lambda argv, env: 0)); "
             f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})); sys.exit(code)")
    env = {**userenv, "PATH": standin_path(tmp_path)}
    for args in (["resolve", "busybox"], ["resolve", "--index", str(tmp_path / "root"), stable.ref],
                 ["resolve", "--json", "--lock", "ligoenv.lock", "--platform", "linux/amd64", stable.ref],
                 ["run", "busybox", "--", "true"], ["run", "--index", str(tmp_path / "root"), "--gpu",
                                                     "-B", "/srv", stable.ref, "--", "true"]):
        done = subprocess.run([sys.executable, "-c", probe, *args], env=env, capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1] == "[]"


def test_offline(userenv: dict[str, str], stopped_registry: RegistryProcess, tmp_path: Path) -> None:
    image = build_busybox_image("offline")
    digest = push_image(stopped_registry.host, "client/offline", "v1", image)
    offline = pushed(stopped_registry.host, "client/offline", "v1", digest, [image])
    assert ligoenv(userenv, "lock", offline.ref).returncode == 0
    write_index(tmp_path / "root", offline, [(digest, T0)])
    stopped_registry.stop()

    done = ligoenv(userenv, "resolve", offline.ref)  # the lockfile answers
    assert (done.returncode, done.stdout) == (0, f"{offline.pinned}\n")
    Path("ligoenv.lock").unlink()
    done = ligoenv({**userenv, "LIGOENV_INDEX": str(tmp_path / "root")}, "resolve", "--json", offline.ref)
    assert done.returncode == 0
    assert json.loads(done.stdout)["source"] == f"index:{tmp_path / 'root'}"
    done = ligoenv(userenv, "resolve", offline.ref)
    assert done.returncode == 1
    assert done.stderr == (f"ligoenv: error: registry {stopped_registry.host} is unreachable: "
                           "connection refused\n")


@pytest.mark.parametrize("args", [["--help"], ["resolve", "--help"], ["run", "--help"], ["--version"]])
def test_help_works_without_rich(userenv: dict[str, str], args: list[str]) -> None:
    probe = ("import sys; from ligoenv.cli.main import run; code = run(sys.argv[1:]); "
             "sys.stderr.write(str('rich' in sys.modules)); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", probe, *args], env=userenv, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0 and done.stderr == "False"
