"""The command line in-process: resolve, lock, verify, cite, history, path, doctor and their errors."""

from __future__ import annotations

import io
import json
import os
import re
import select
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ligoenv.cli.main import run as cli_run
from ligoenv.client.settings import load_settings
from ligoenv.oci.digest import Digest
from ligoenv.oci.registry import RegistryClient
from ligoenv.store.errors import ConfigError, LockfileError
from testbed.clientkit import Cli, Pushed, pushed, write_index
from testbed.images import build_busybox_image, push_image
from testbed.registry import RegistryProcess, free_port

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T1 = datetime(2026, 3, 5, 9, 0, tzinfo=UTC)
Capture = pytest.CaptureFixture[str]


def outputs(capsys: Capture) -> tuple[str, str]:
    captured = capsys.readouterr()
    return captured.out, captured.err


def one_error_line(err: str) -> str:
    assert err.startswith("ligoenv: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err[len("ligoenv: error: "):].rstrip("\n")


# -- resolve -------------------------------------------------------------------------------------


def test_resolve_from_the_registry_index_and_lockfile(cli: Cli, images: dict[str, Pushed], tmp_path: Path,
                                                       capsys: Capture) -> None:
    stable, old = images["stable"], images["old"]
    assert cli("resolve", stable.ref) == 0
    assert outputs(capsys) == (stable.pinned + "\n", "")

    root = tmp_path / "root"
    write_index(root, stable, [(old.digest, T0)], extra=(old,))
    assert cli("resolve", "--index", str(root), stable.ref) == 0
    assert outputs(capsys)[0] == f"{stable.registry}/client/busybox@{old.digest}\n"
    cli.environ["LIGOENV_INDEX"] = str(root)
    assert cli("resolve", stable.ref, "--json") == 0
    answer = json.loads(outputs(capsys)[0])
    assert (answer["source"], answer["digest"], answer["tag"]) == (f"index:{root}", str(old.digest), "stable")

    assert cli("lock", "--name", "science=" + stable.ref) == 0  # from the index: it says `old`
    outputs(capsys)
    assert cli("resolve", "science") == 0
    assert outputs(capsys)[0] == f"{stable.registry}/client/busybox@{old.digest}\n"
    assert cli("resolve", "--json", "--platform", "linux/amd64", stable.ref) == 0
    answer = json.loads(outputs(capsys)[0])
    assert answer["source"] == "lockfile:ligoenv.lock" and answer["environment"] == "science"
    assert answer["manifest"] == str(old.digest) and answer["platform"] == "linux/amd64"


@pytest.mark.parametrize(("when", "expected"), [
    ("2026-03-01T12:00", "old"), ("2026-03-01T12:00:00Z", "old"), ("2026-03-01T14:00+02:00", "old"),
    ("2026-03-02", "old"), ("2026-03-05T09:00Z", "stable"), ("2026-03-06", "stable"),
])
def test_resolve_at(cli: Cli, images: dict[str, Pushed], tmp_path: Path, capsys: Capture, when: str,
                    expected: str) -> None:
    stable, old = images["stable"], images["old"]
    write_index(tmp_path / "root", stable, [(old.digest, T0), (stable.digest, T1)], extra=(old,))
    assert cli("resolve", "--index", str(tmp_path / "root"), "--at", when, stable.ref) == 0
    assert outputs(capsys)[0] == f"{stable.registry}/client/busybox@{images[expected].digest}\n"


def test_resolve_at_before_the_history(cli: Cli, images: dict[str, Pushed], tmp_path: Path,
                                       capsys: Capture) -> None:
    stable = images["stable"]
    write_index(tmp_path / "root", stable, [(stable.digest, T0)])
    assert cli("resolve", "--index", str(tmp_path / "root"), "--at", "2026-03-01", stable.ref) == 3
    assert one_error_line(outputs(capsys)[1]) == (
        f"history of {stable.registry}/client/busybox:stable starts at 2026-03-01T12:00:00Z, "
        "after 2026-03-01T00:00:00Z")
    assert cli("resolve", "--index", str(tmp_path / "root"), "--at", "last tuesday", stable.ref) == 2
    assert "invalid time 'last tuesday'" in one_error_line(outputs(capsys)[1])


@pytest.mark.parametrize(("args", "code", "message"), [
    (["resolve", "Lvk/LalSuite"], 2, "invalid reference 'Lvk/LalSuite': repository names must be lowercase"),
    (["resolve", "ubuntu@sha256:abc"], 2, "invalid reference 'ubuntu@sha256:abc': invalid digest"),
    (["resolve"], 2, "Missing argument 'REF'."),
    (["resolve", "a", "b"], 2, "unexpected extra argument(s) (b)"),
    (["resolve", "--bogus", "x"], 2, "No such option: --bogus"),
    (["resolve", "x", "--platform", "linux"], 2, "invalid platform 'linux'"),
    (["frobnicate"], 2, "No such command 'frobnicate'."),
    (["run", "--runtime", "rkt", "x", "--", "true"], 2,
     "runtime 'rkt' from command line is not one of: auto,"),
])
def test_usage_errors_are_one_line_with_exit_2(cli: Cli, capsys: Capture, args: list[str], code: int,
                                               message: str) -> None:
    assert cli(*args) == code
    assert message in one_error_line(outputs(capsys)[1])


def test_corrupt_lockfile_is_one_line_and_debug_shows_the_traceback(cli: Cli, capsys: Capture) -> None:
    Path("ligoenv.lock").write_text('{"lockfileVersion": 1, "environments": {')
    for args in (["resolve", "x"], ["verify"], ["cite"], ["run", "x", "--", "true"]):
        assert cli(*args) == 1
        message = one_error_line(outputs(capsys)[1])
        assert message.startswith("lockfile ligoenv.lock is not valid JSON (line 1, column 41")
    with pytest.raises(LockfileError):
        cli("--debug", "resolve", "x")


def test_unknown_environment_and_missing_lockfile(cli: Cli, images: dict[str, Pushed],
                                                  capsys: Capture) -> None:
    assert cli("lock", images["stable"].ref) == 0
    outputs(capsys)
    assert cli("run", "--lock", "ligoenv.lock", "nosuch", "--", "true") == 3
    assert one_error_line(outputs(capsys)[1]) == (
        "no environment 'nosuch' in lockfile ligoenv.lock; environments: busybox")
    assert cli("resolve", "--lock", "elsewhere.lock", "busybox") == 3
    assert "lockfile elsewhere.lock does not exist" in one_error_line(outputs(capsys)[1])


# -- lock, verify, cite --------------------------------------------------------------------------


def test_lock_is_deterministic_and_relocking_keeps_the_bytes(cli: Cli, images: dict[str, Pushed],
                                                             capsys: Capture) -> None:
    stable, multi = images["stable"], images["multi"]
    cli.clock = lambda: T0
    assert cli("lock", stable.ref, multi.ref, "--name", "base=" + images["old"].ref) == 0
    out, err = outputs(capsys)
    assert out.splitlines() == [
        f"locked busybox {stable.registry}/client/busybox:stable@{stable.digest} (registry)",
        f"locked multi {multi.registry}/client/multi:latest@{multi.digest} (registry)",
        f"locked base {stable.registry}/client/busybox:old@{images['old'].digest} (registry)"]
    assert err == "ligoenv: wrote ligoenv.lock\n"
    first = Path("ligoenv.lock").read_bytes()
    data = json.loads(first)
    assert sorted(data["environments"]) == ["base", "busybox", "multi"]
    assert data["created"] == "2026-03-01T12:00:00Z"
    assert sorted(data["environments"]["multi"]["platforms"]) == ["linux/amd64", "linux/arm64"]

    cli.clock = lambda: T1
    assert cli("lock", stable.ref, multi.ref) == 0
    assert outputs(capsys)[0].startswith("unchanged busybox ")
    assert cli("lock", "--update") == 0
    assert Path("ligoenv.lock").read_bytes() == first


def test_lock_records_the_index_as_an_absolute_path(cli: Cli, images: dict[str, Pushed],
                                                   tmp_path: Path) -> None:
    stable = images["stable"]
    write_index(tmp_path / "root", stable, [(stable.digest, T0)])
    assert cli("lock", "--index", "../root", stable.ref) == 0  # from tmp_path/work
    [env] = json.loads(Path("ligoenv.lock").read_text())["environments"].values()
    assert env["source"] == f"index:{tmp_path / 'root'}"


def test_lock_update_follows_a_moved_tag(cli: Cli, stopped_registry: RegistryProcess,
                                         capsys: Capture) -> None:
    host = stopped_registry.host
    first = push_image(host, "client/nightly", "nightly", build_busybox_image("n1"))
    cli.clock = lambda: T0
    assert cli("lock", f"{host}/client/nightly:nightly", "--platform", "linux/amd64") == 0
    second = push_image(host, "client/nightly", "nightly", build_busybox_image("n2"))
    cli.clock = lambda: T1
    assert cli("lock", "--update", "nightly") == 0
    outputs(capsys)
    env = json.loads(Path("ligoenv.lock").read_text())["environments"]["nightly"]
    assert (env["digest"], env["resolved"]) == (str(second), "2026-03-05T09:00:00Z")
    assert first != second
    assert cli("lock", "--update", "nosuch") == 3
    assert "no environment 'nosuch'" in one_error_line(outputs(capsys)[1])
    assert cli("lock") == 2
    assert "nothing to lock" in one_error_line(outputs(capsys)[1])


def test_verify_reports_moved_tags_and_fails_on_gone_digests(cli: Cli, stopped_registry: RegistryProcess,
                                                            capsys: Capture) -> None:
    host = stopped_registry.host
    kept = push_image(host, "client/kept", "v1", build_busybox_image("kept"))
    doomed = push_image(host, "client/doomed", "v1", build_busybox_image("doomed"))
    assert cli("lock", f"{host}/client/kept:v1", f"{host}/client/doomed:v1") == 0
    assert cli("verify") == 0
    out = outputs(capsys)[0]
    assert f"ok     kept: {host}/client/kept:v1@{kept} (registry)\n" in out

    moved = push_image(host, "client/kept", "v1", build_busybox_image("kept-2"))
    assert cli("verify") == 0
    assert f"tag v1 has moved to {moved}" in outputs(capsys)[0]

    with RegistryClient(host, anonymous=True) as client:
        client.delete_manifest("client/doomed", doomed)
    assert cli("verify", "--json") == 3
    out, err = outputs(capsys)
    assert one_error_line(err) == (
        f"1 pinned digest(s) no longer available: doomed ({host}/client/doomed@{doomed})")
    results = {r["name"]: r for r in json.loads(out)["environments"]}
    assert results["doomed"]["available"] is None and results["kept"]["moved"] is True


def test_verify_names_the_invalid_field(cli: Cli, images: dict[str, Pushed], capsys: Capture) -> None:
    assert cli("lock", images["stable"].ref) == 0
    data = json.loads(Path("ligoenv.lock").read_text())
    data["environments"]["busybox"]["platforms"]["linux/amd64"]["manifest"] = "sha256:short"
    Path("ligoenv.lock").write_text(json.dumps(data))
    outputs(capsys)
    assert cli("verify") == 1
    message = one_error_line(outputs(capsys)[1])
    assert message.startswith("lockfile ligoenv.lock is invalid: "
                              "environments.busybox.platforms.linux/amd64.manifest: 'sha256:short'")


def test_cite(cli: Cli, images: dict[str, Pushed], capsys: Capture) -> None:
    stable = images["stable"]
    cli.clock = lambda: T0
    assert cli("lock", "--name", "my_env=" + stable.ref) == 0
    outputs(capsys)
    assert cli("cite") == 0
    out = outputs(capsys)[0]
    text, bibtex = out.split("\n\n", 1)
    assert text.splitlines() == [
        "Container environments pinned by digest in ligoenv.lock (ligoenv 0.1.0):",
        f"[1] my_env: {stable.registry}/client/busybox:stable@{stable.digest}",
        "    resolved 2026-03-01T12:00:00Z from registry; platforms: linux/amd64"]
    assert bibtex == (
        f"@misc{{my_env-{stable.digest.hex[:12]},\n"
        f"  title        = {{{{my\\_env}}: container image {stable.registry}/client/busybox:stable}},\n"
        f"  howpublished = {{\\url{{{stable.pinned}}}}},\n"
        f"  note         = {{Image digest {stable.digest}, resolved 2026-03-01T12:00:00Z from registry "
        "with ligoenv 0.1.0},\n"
        "  year         = {2026}\n}\n")
    assert cli("cite", "--format", "bibtex") == 0
    assert outputs(capsys)[0].startswith("@misc{")
    assert cli("cite", "missing.lock") == 3


# -- history, path, doctor, settings -------------------------------------------------------------


def test_history(cli: Cli, images: dict[str, Pushed], tmp_path: Path, capsys: Capture) -> None:
    stable, old = images["stable"], images["old"]
    write_index(tmp_path / "root", stable, [(old.digest, T0), (stable.digest, T1)], extra=(old,))
    cli.environ["LIGOENV_INDEX"] = str(tmp_path / "root")
    assert cli("history", stable.ref) == 0
    lines = outputs(capsys)[0].splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["DIGEST", "FROM", "UNTIL", "SOURCE"]
    assert re.split(r"\s{2,}", lines[1]) == [str(old.digest), "2026-03-01T12:00:00Z", "2026-03-05T09:00:00Z",
                                             "webhook:test"]
    assert re.split(r"\s{2,}", lines[2]) == [str(stable.digest), "2026-03-05T09:00:00Z", "now",
                                             "webhook:test"]
    assert cli("history", "--json", stable.ref) == 0
    assert json.loads(outputs(capsys)[0])["history"][1]["until"] is None
    assert cli("history", f"{stable.registry}/client/busybox:other") == 3
    assert "has no history for" in one_error_line(outputs(capsys)[1])
    del cli.environ["LIGOENV_INDEX"]
    assert cli("history", stable.ref) == 2


def test_history_limit_since_and_before(cli: Cli, images: dict[str, Pushed], tmp_path: Path,
                                        capsys: Capture) -> None:
    stable, old = images["stable"], images["old"]
    moves = [(old.digest if day % 2 else stable.digest, T0 + timedelta(days=day)) for day in range(6)]
    write_index(tmp_path / "root", stable, moves, extra=(old,))
    cli.environ["LIGOENV_INDEX"] = str(tmp_path / "root")

    def shown(*args: str) -> list[str]:
        assert cli("history", "--json", *args, stable.ref) == 0
        return [e["from"] for e in json.loads(outputs(capsys)[0])["history"]]

    assert shown("--limit", "2") == ["2026-03-05T12:00:00Z", "2026-03-06T12:00:00Z"]
    assert shown("--limit", "2", "--before", "2026-03-05T12:00Z") == [
        "2026-03-03T12:00:00Z", "2026-03-04T12:00:00Z"]
    assert shown("--since", "2026-03-06") == ["2026-03-06T12:00:00Z"]
    assert cli("history", "--limit", "0", stable.ref) == 2
    assert "--limit must be at least 1" in one_error_line(outputs(capsys)[1])
    assert cli("history", "--since", "2027-01-01", stable.ref) == 3
    assert "in that window" in one_error_line(outputs(capsys)[1])


def test_history_of_a_digest_is_refused(cli: Cli, images: dict[str, Pushed], tmp_path: Path,
                                        capsys: Capture) -> None:
    stable = images["stable"]
    write_index(tmp_path / "root", stable, [(stable.digest, T0)])
    cli.environ["LIGOENV_INDEX"] = str(tmp_path / "root")
    assert cli("lock", "--name", "pinned=" + stable.pinned) == 0
    outputs(capsys)
    for text in (stable.pinned, "pinned"):  # not the history of `latest`, which was not asked for
        assert cli("history", text) == 2
        assert one_error_line(outputs(capsys)[1]) == (
            f"history shows what a tag meant; {stable.pinned} is pinned by digest: name its tag")


def test_path_for_htcondor(cli: Cli, images: dict[str, Pushed], tmp_path: Path, capsys: Capture) -> None:
    multi = images["multi"]
    root = tmp_path / "root"
    write_index(root, multi, [(multi.digest, T0)], trees=True)
    arm = multi.platforms["linux/arm64"]
    # By digest (a tag with --platform names its .multiarch link: tests/client/test_cli_path.py).
    pinned = f"{multi.registry}/{multi.repository}@{multi.digest}"
    assert cli("path", "--index", str(root), "--platform", "linux/arm64", pinned) == 0
    assert outputs(capsys)[0] == f"{root}/.images/{arm.hex[:2]}/{arm.hex}\n"
    assert cli("lock", "--index", str(root), multi.ref) == 0
    outputs(capsys)
    assert cli("path", "--index", str(root), "--platform", "linux/arm64", "multi") == 0  # by name
    assert outputs(capsys)[0] == f"{root}/.images/{arm.hex[:2]}/{arm.hex}\n"
    assert cli("path", "--platform", "linux/arm64", "multi") == 3  # a lockfile's paths need the index
    assert one_error_line(outputs(capsys)[1]).endswith("no publish index (set LIGOENV_INDEX)")
    assert cli("path", images["stable"].ref) == 3
    assert "has no published tree on this machine" in one_error_line(outputs(capsys)[1])


def test_doctor_reports_where_each_setting_came_from(cli: Cli, registry: RegistryProcess, tmp_path: Path,
                                                     capsys: Capture) -> None:
    config = tmp_path / "config.toml"
    config.write_text('runtime = "bwrap"\ninsecure_registries = ["registry.lab:5000"]\n'
                      'index = "/from/the/file"\n')
    cli.environ.update(LIGOENV_CONFIG=str(config), LIGOENV_INDEX=str(tmp_path))
    assert cli("doctor", "--json", "--registry", registry.host, "--registry", "127.0.0.1:9") == 0
    report = json.loads(outputs(capsys)[0])
    settings = report["settings"]
    assert settings["index"] == {"value": str(tmp_path), "source": "environment (LIGOENV_INDEX)"}
    assert settings["runtime"] == {"value": "bwrap", "source": f"config file ({config})"}
    assert settings["insecure_registries"]["value"] == "registry.lab:5000"
    assert settings["lockfile"] == {"value": "ligoenv.lock", "source": "default"}
    assert report["runtimes"] == {"apptainer": None, "singularity": None, "docker": None, "podman": None,
                                  "bwrap": f"{cli.environ['PATH']}/bwrap"}
    assert report["auto_runtime"] == "bwrap" and report["unusable_runtimes"] == []
    assert report["registries"][registry.host] == "reachable (HTTP 200)"
    assert report["registries"]["127.0.0.1:9"].startswith("registry 127.0.0.1:9 is unreachable")
    assert report["index"] == f"{tmp_path}: a directory without .ligoenv/index"
    assert cli("doctor", "--registry", registry.host) == 0
    assert f"runtime              bwrap  [config file ({config})]" in outputs(capsys)[0]


def test_settings_precedence_and_errors(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('runtime = "docker"\nlockfile = "file.lock"\n')
    environ = {"LIGOENV_RUNTIME": "podman", "LIGOENV_INSECURE_REGISTRIES": "a:5000, b:5000",
               "LIGOENV_CONFIG": str(config), "LIGOENV_CACHE": "/c"}
    settings = load_settings({"runtime": "bwrap", "index": None}, environ)
    assert (settings.runtime, settings.source_of("runtime")) == ("bwrap", "command line")
    settings = load_settings({}, environ)
    assert (settings.runtime, settings.source_of("runtime")) == ("podman", "environment (LIGOENV_RUNTIME)")
    assert settings.insecure_registries == ("a:5000", "b:5000")
    assert (str(settings.lockfile), settings.lockfile_explicit) == ("file.lock", True)
    assert settings.index is None and settings.source_of("index") == "default"
    for content, message in [("runtime = ", "is not valid TOML"),
                             ('colour = "blue"', "unknown setting 'colour'"),
                             ("insecure_registries = 5", "must be a list of strings"),
                             ('runtime = "rkt"', "runtime 'rkt' from config file")]:
        config.write_text(content)
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_settings({}, {"LIGOENV_CONFIG": str(config)})


def test_config_errors_exit_2(cli: Cli, tmp_path: Path, capsys: Capture) -> None:
    (tmp_path / "bad.toml").write_text("index = [")
    cli.environ["LIGOENV_CONFIG"] = str(tmp_path / "bad.toml")
    assert cli("resolve", "x") == 2
    assert one_error_line(outputs(capsys)[1]).startswith(f"config file {tmp_path}/bad.toml is not valid TOML")


def test_help_and_version(capsys: Capture) -> None:
    assert cli_run(["--version"]) == 0
    assert outputs(capsys)[0] == "ligoenv 0.1.0\n"
    assert cli_run(["resolve", "--help"]) == 0
    assert "times without an offset are UTC" in outputs(capsys)[0]
    assert cli_run([]) == 2
    assert "Commands:" in outputs(capsys)[1]


def test_a_digest_only_reference_locks_without_a_tag(cli: Cli, images: dict[str, Pushed],
                                                     capsys: Capture) -> None:
    stable = images["stable"]
    assert cli("lock", stable.pinned) == 0
    env = json.loads(Path("ligoenv.lock").read_text())["environments"]["busybox"]
    assert env["tag"] is None and env["canonical"] == stable.pinned
    assert Digest.parse(env["digest"]) == stable.digest


def test_an_index_mirror_out_of_reach_leaves_the_registry_to_answer(cli: Cli, images: dict[str, Pushed],
                                                                     capsys: Capture) -> None:
    stable = images["stable"]
    mirror = f"http://127.0.0.1:{free_port()}"
    assert cli("resolve", "--index", mirror, stable.ref) == 0
    assert outputs(capsys) == (f"{stable.pinned}\n", f"ligoenv: index mirror {mirror} is unreachable "
                                                     "(ConnectionError): asking the registry instead\n")
    assert cli("resolve", "--index", mirror, "--at", "2026-03-01", stable.ref) == 1  # only the index knows
    assert "is unreachable" in one_error_line(outputs(capsys)[1])


def test_offline_registry_fails_fast_with_one_line(cli: Cli, tmp_path: Path, capsys: Capture) -> None:
    host = RegistryProcess(tmp_path / "never-started").host
    assert cli("resolve", f"{host}/client/x:1") == 1
    assert one_error_line(outputs(capsys)[1]).startswith(f"registry {host} is unreachable")
    image = build_busybox_image("x")
    offline = pushed(host, "client/x", "1", Digest.of_bytes(image.manifest_bytes()), [image])
    write_index(tmp_path / "root", offline, [(offline.digest, T0)])
    assert cli("resolve", "--index", str(tmp_path / "root"), offline.ref) == 0
    assert outputs(capsys)[0] == f"{host}/client/x@{offline.digest}\n"


@pytest.mark.parametrize("args", [["--json", "REF"], ["REF", "--platform=linux/arm64"],
                                  ["--lock", "ligoenv.lock", "multi", "--json", "--platform", "linux/amd64"],
                                  ["--index", "ROOT", "--at", "2026-03-02", "REF"]])
def test_resolve_fast_path_and_typer_agree(cli: Cli, images: dict[str, Pushed], tmp_path: Path,
                                           capsys: Capture, args: list[str]) -> None:
    multi = images["multi"]
    write_index(tmp_path / "root", multi, [(multi.digest, T0)])
    assert cli("lock", multi.ref) == 0
    outputs(capsys)
    line = [{"REF": multi.ref, "ROOT": str(tmp_path / "root")}.get(a, a) for a in args]
    assert cli("resolve", *line) == 0
    fast = outputs(capsys)
    assert cli.typer("resolve", *line) == 0
    assert outputs(capsys) == fast


def test_file_system_errors_are_one_line(cli: Cli, images: dict[str, Pushed], capsys: Capture) -> None:
    assert cli("lock", "-o", "no/such/dir/ligoenv.lock", images["stable"].ref) == 1
    assert one_error_line(outputs(capsys)[1]) == (
        "cannot write lockfile no/such/dir/ligoenv.lock: No such file or directory")
    Path("readonly").mkdir(mode=0o500)
    Path("readonly/ligoenv.lock").mkdir()  # even root cannot replace a directory with a file
    assert cli("lock", "-o", "readonly/ligoenv.lock", images["stable"].ref) == 1
    assert one_error_line(outputs(capsys)[1]) == "cannot read lockfile readonly/ligoenv.lock: Is a directory"


def test_progress_is_one_line_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from ligoenv.cli.progress import progress_bar

    leader, follower = os.openpty()
    with open(follower, "w") as terminal:
        monkeypatch.setattr(sys, "stderr", terminal)
        update = progress_bar("pulling x", min_interval=0)
        assert update is not None
        for done in (5_000_000, 10_000_000, 10_000_000):
            update(done, 10_000_000)
    written = ""
    while not written.endswith("\n") and select.select([leader], [], [], 5)[0]:
        written += os.read(leader, 1000).decode()  # a terminal may hand it over in pieces
    os.close(leader)
    assert written == "\rpulling x 5.0/10.0 MB  50%\rpulling x 10.0/10.0 MB 100%\r\n"
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress_bar("pulling x") is None
