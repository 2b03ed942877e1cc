""".singularity.d's scripts run for real: busybox images unpacked and completed, run in bubblewrap.

`/.singularity.d/actions/exec CMD ARGS` and `/.singularity.d/actions/run ARGS` are what older
Singularity 3.x (and tools that call them directly) run inside the container.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from ligoenv.store.completion import complete_tree
from ligoenv.store.singularityd import ACTIONS, env_script, runscript
from testbed.images import build_busybox_image, unpack_image
from testbed.ocibuild import Entry, Layer

ODD_ENV = {
    "QUOTES": "it's a \"quoted\" value",
    "SPACES": "  two  spaces  ",
    "EQUALS": "a=b c==d =",
    "DOLLARS": "$HOME ${PATH} $(id) `id` $$ $",
    "NEWLINE": "first\nsecond",
    "EMPTY": "",
    "LD_LIBRARY_PATH": "/opt/lal/lib",
}
IMAGE_PATH = "/opt/tools/bin:/usr/bin:/bin"
GREET = Layer.from_entries([
    Entry("opt", "dir", mode=0o755), Entry("opt/tools", "dir", mode=0o755),
    Entry("opt/tools/bin", "dir", mode=0o755),
    Entry("opt/tools/bin/greet", data=b'#!/bin/sh\nprintf "greet"; printf " <%s>" "$@"; echo\n',
          mode=0o755),
    Entry("opt/tools/bin/status", data=b'#!/bin/sh\nexit "$1"\n', mode=0o755),
])


def make_tree(root: Path, *, entrypoint: Sequence[str] = (), cmd: Sequence[str] = (),
              working_dir: str = "", env: dict[str, str] | None = None) -> Path:
    """A busybox image with /opt/tools/bin on its PATH, unpacked and completed."""
    image = build_busybox_image(
        "sd", extra_layers=[GREET], entrypoint=entrypoint, cmd=cmd, working_dir=working_dir,
        env=[f"PATH={IMAGE_PATH}", *(f"{k}={v}" for k, v in (env or {}).items())])
    tree = root / "tree"
    complete_tree(tree, unpack_image(image, tree))
    return tree


def bwrap(tree: Path, *command: str, cwd: str = "/", env: dict[str, str] | None = None
          ) -> subprocess.CompletedProcess[str]:
    """Run `command` in the tree with an empty environment (plus `env`), as a runtime would."""
    setenv = [arg for name, value in (env or {}).items() for arg in ("--setenv", name, value)]
    return subprocess.run(
        ["bwrap", "--ro-bind", str(tree), "/", "--proc", "/proc", "--dev", "/dev",
         "--tmpfs", "/tmp", "--clearenv", *setenv, "--chdir", cwd, *command],
        capture_output=True, text=True, timeout=30, check=False)


def environment(output: str) -> dict[str, str]:
    """`env -0` output as a dict (values may hold newlines)."""
    pairs = (item.partition("=") for item in output.split("\0") if item)
    return {name: value for name, _, value in pairs}


@pytest.fixture(scope="module")
def odd_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("odd"), cmd=("greet", "from", "cmd"), env=ODD_ENV)


def test_exec_gives_the_image_env_exactly(odd_tree: Path) -> None:
    result = bwrap(odd_tree, "/.singularity.d/actions/exec", "env", "-0")
    assert result.returncode == 0, result.stderr
    env = environment(result.stdout)
    assert env["PATH"] == IMAGE_PATH
    for name, value in ODD_ENV.items():
        if name != "LD_LIBRARY_PATH":
            assert env[name] == value, name
    # the host's GPU libraries (`--nv`) come after the image's own
    assert env["LD_LIBRARY_PATH"] == "/opt/lal/lib:/.singularity.d/libs"
    assert env["PS1"]  # exported for shells; the caller's own prompt is kept
    mine = bwrap(odd_tree, "/.singularity.d/actions/exec", "env", "-0", env={"PS1": "mine> "})
    assert environment(mine.stdout)["PS1"] == "mine> "


def test_exec_finds_commands_on_the_image_path_and_keeps_arguments(odd_tree: Path) -> None:
    result = bwrap(odd_tree, "/.singularity.d/actions/exec", "greet", "a b", "it's", "$HOME", "*", "")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "greet <a b> <it's> <$HOME> <*> <>\n"


@pytest.mark.parametrize("action", ["/.singularity.d/actions/exec", "/.exec"])
def test_exec_passes_the_exit_status(odd_tree: Path, action: str) -> None:
    assert bwrap(odd_tree, action, "status", "7").returncode == 7
    assert bwrap(odd_tree, action, "status", "0").returncode == 0


def test_exec_without_a_command(odd_tree: Path) -> None:
    result = bwrap(odd_tree, "/.singularity.d/actions/exec")
    assert result.returncode == 1
    assert result.stderr == "exec: no command given\n"


def test_the_caller_sets_path_after_the_image(odd_tree: Path) -> None:
    """`apptainer exec --env PATH=...` and APPTAINERENV_PREPEND_PATH arrive in SING_USER_DEFINED_*."""
    prepend = bwrap(odd_tree, "/.singularity.d/actions/exec", "env", "-0",
                    env={"SING_USER_DEFINED_PREPEND_PATH": "/first",
                         "SING_USER_DEFINED_APPEND_PATH": "/last"})
    env = environment(prepend.stdout)
    assert env["PATH"] == f"/first:{IMAGE_PATH}:/last"
    assert not [name for name in env if name.startswith("SING_USER_DEFINED")]
    replaced = bwrap(odd_tree, "/.singularity.d/actions/exec", "env", "-0",
                     env={"SING_USER_DEFINED_PATH": "/only:/bin"})
    assert environment(replaced.stdout)["PATH"] == "/only:/bin"


@pytest.mark.parametrize(("entrypoint", "cmd", "args", "expected"), [
    ((), ("greet", "default", "cmd"), [], "greet <default> <cmd>"),
    ((), ("greet", "default"), ["greet", "a b", "c'd"], "greet <a b> <c'd>"),
    (("greet", "entry"), ("x y",), [], "greet <entry> <x y>"),
    (("greet", "entry"), ("x y",), ["over", "ridden"], "greet <entry> <over> <ridden>"),
    (("greet", "only"), (), [], "greet <only>"),
    (("greet", "only"), (), ["$HOME", "*", "a=b", '"q"'], 'greet <only> <$HOME> <*> <a=b> <"q">'),
    (("greet",), ("$PATH", "a=b"), [], "greet <$PATH> <a=b>"),
])
def test_run_follows_entrypoint_and_cmd(tmp_path: Path, entrypoint: tuple[str, ...],
                                        cmd: tuple[str, ...], args: list[str], expected: str) -> None:
    tree = make_tree(tmp_path, entrypoint=entrypoint, cmd=cmd)
    for command in ("/.singularity.d/actions/run", "/.run", "/singularity"):
        # /singularity is the runscript itself: without the env scripts, PATH must come from outside
        env = {"PATH": IMAGE_PATH} if command == "/singularity" else None
        result = bwrap(tree, command, *args, env=env)
        assert result.returncode == 0, (command, result.stderr)
        assert result.stdout == expected + "\n", command


def test_run_passes_the_exit_status(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, entrypoint=("status",), cmd=("3",))
    assert bwrap(tree, "/.singularity.d/actions/run").returncode == 3
    assert bwrap(tree, "/.singularity.d/actions/run", "42").returncode == 42


def test_run_without_entrypoint_or_cmd(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    result = bwrap(tree, "/.singularity.d/actions/run")
    assert result.returncode == 1
    assert "no command given" in result.stderr
    assert bwrap(tree, "/.singularity.d/actions/run", "greet", "ok").stdout == "greet <ok>\n"


def test_run_keeps_the_callers_directory_like_apptainer(tmp_path: Path) -> None:
    """An image's WorkingDir is not applied: Apptainer runs in the caller's directory (--pwd)."""
    tree = make_tree(tmp_path, cmd=("pwd",), working_dir="/opt/tools")
    assert bwrap(tree, "/.singularity.d/actions/run", cwd="/tmp").stdout == "/tmp\n"
    assert bwrap(tree, "/.singularity.d/actions/exec", "pwd", cwd="/opt").stdout == "/opt\n"


def test_shell_test_and_start_actions(odd_tree: Path) -> None:
    shell = bwrap(odd_tree, "/.singularity.d/actions/shell", "-c", 'echo "$SHELL $SPACES"')
    assert (shell.returncode, shell.stdout) == (0, "/bin/sh   two  spaces  \n")
    chosen = bwrap(odd_tree, "/.singularity.d/actions/shell", "-c", "echo chosen",
                   env={"APPTAINER_SHELL": "/opt/tools/bin/greet"})
    assert chosen.stdout == "greet <-c> <echo chosen>\n"
    test = bwrap(odd_tree, "/.singularity.d/actions/test")
    assert (test.returncode, test.stderr) == (0, "this image defines no test\n")
    start = bwrap(odd_tree, "/.singularity.d/actions/start")
    assert (start.returncode, start.stdout, start.stderr) == (0, "", "")


def test_every_script_is_posix_sh(odd_tree: Path) -> None:
    """busybox sh -n parses each one (a syntax error would only show when a runtime calls it)."""
    scripts = [f"/.singularity.d/actions/{name}" for name in ACTIONS]
    scripts += [f"/.singularity.d/env/{p.name}" for p in (odd_tree / ".singularity.d/env").iterdir()]
    scripts += ["/.singularity.d/runscript", "/.singularity.d/startscript"]
    for script in scripts:
        result = bwrap(odd_tree, "/bin/sh", "-n", script)
        assert result.returncode == 0, (script, result.stderr)


def test_env_script_skips_what_sh_cannot_export() -> None:
    script = env_script(["GOOD=1", "bad-name=2", "NOEQUALS", "_under=3", "9digit=4"])
    assert script.splitlines()[2:] == ["export GOOD=1", "export _under=3"]


def test_runscript_never_evaluates_its_arguments() -> None:
    assert runscript(("/bin/echo",), ("$(id)",)).splitlines()[2:] == [
        "if [ $# -eq 0 ]; then set -- '$(id)'; fi", 'exec /bin/echo "$@"']
