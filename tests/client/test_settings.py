"""Client settings with a site-wide config file: precedence, where it is found, and a broken one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ligoenv.client.settings
from ligoenv.client.settings import load_settings
from testbed.clientkit import Cli

Capture = pytest.CaptureFixture[str]
SITE = 'index = "/cvmfs/site.example.org"\nruntime = "apptainer"\ncache = "/scratch/ligoenv"\n' \
       'insecure_registries = ["registry.site:5000"]\n'


def test_every_layer_in_order(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(SITE)
    user = tmp_path / "user.toml"
    user.write_text('runtime = "docker"\ncache = "/home/me/cache"\n')
    environ = {"LIGOENV_SITE_CONFIG": str(site), "LIGOENV_CONFIG": str(user),
               "LIGOENV_CACHE": "/env/cache"}
    settings = load_settings({"lockfile": "cli.lock"}, environ)
    options = ligoenv.client.settings.OPTIONS
    assert {name: (settings.get(name), settings.source_of(name)) for name in options} == {
        "lockfile": ("cli.lock", "command line"),
        "cache": ("/env/cache", "environment (LIGOENV_CACHE)"),
        "runtime": ("docker", f"config file ({user})"),
        "index": ("/cvmfs/site.example.org", f"site config file ({site})"),
        "insecure_registries": (["registry.site:5000"], f"site config file ({site})"),
    }
    assert (settings.site_file, settings.warnings) == (site, ())


def test_where_the_site_file_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    etc = tmp_path / "etc" / "ligoenv" / "config.toml"
    xdg = tmp_path / "xdg"
    monkeypatch.setattr(ligoenv.client.settings, "SITE_CONFIG", etc)
    monkeypatch.setenv("XDG_CONFIG_DIRS", f"{tmp_path / 'none'}:{xdg}")
    assert load_settings({}, {}).site_file is None

    (xdg / "ligoenv").mkdir(parents=True)
    (xdg / "ligoenv" / "config.toml").write_text('runtime = "bwrap"\n')
    assert load_settings({}, {}).site_file == xdg / "ligoenv" / "config.toml"  # platformdirs' dirs

    etc.parent.mkdir(parents=True)
    etc.write_text('runtime = "podman"\n')
    settings = load_settings({}, {})
    assert (settings.site_file, settings.runtime) == (etc, "podman")  # /etc/ligoenv comes first

    assert load_settings({}, {"LIGOENV_SITE_CONFIG": ""}).site_file is None  # none at all
    chosen = tmp_path / "chosen.toml"
    chosen.write_text('runtime = "docker"\n')
    assert load_settings({}, {"LIGOENV_SITE_CONFIG": str(chosen)}).runtime == "docker"


@pytest.mark.parametrize(("content", "reason"), [
    ("index = [", "is not valid TOML"),
    ('colour = "blue"', "unknown setting 'colour'"),
    ("insecure_registries = 5", "insecure_registries must be a list of strings"),
    ('runtime = "rkt"', "runtime 'rkt' from site config file"),
    (b"\xff\xfe", "is not valid TOML"),
])
def test_a_broken_site_file_is_one_warning_and_counts_for_nothing(
        tmp_path: Path, content: str | bytes, reason: str) -> None:
    site = tmp_path / "site.toml"
    site.write_bytes(content if isinstance(content, bytes) else content.encode())
    settings = load_settings({}, {"LIGOENV_SITE_CONFIG": str(site), "LIGOENV_CONFIG": "/none.toml"})
    assert len(settings.warnings) == 1
    assert reason in settings.warnings[0] and str(site) in settings.warnings[0]
    assert settings.warnings[0].endswith("; ignoring the site config file")
    assert {settings.source_of(name) for name in ligoenv.client.settings.OPTIONS} == {"default"}


def test_doctor_names_the_site_file(cli: Cli, tmp_path: Path, capsys: Capture) -> None:
    site = tmp_path / "site.toml"
    site.write_text(SITE)
    cli.environ["LIGOENV_SITE_CONFIG"] = str(site)
    assert cli("doctor", "--json", "--registry", "127.0.0.1:9") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["site_config_file"] == str(site) and report["warnings"] == []
    assert report["settings"]["index"] == {"value": "/cvmfs/site.example.org",
                                           "source": f"site config file ({site})"}
    assert cli("doctor", "--registry", "127.0.0.1:9") == 0
    text = capsys.readouterr().out
    assert f"site config file {site}):" in text
    assert f"runtime              apptainer  [site config file ({site})]" in text


def test_commands_run_with_a_broken_site_file(cli: Cli, tmp_path: Path, capsys: Capture) -> None:
    site = tmp_path / "site.toml"
    site.write_text("index = [")
    cli.environ["LIGOENV_SITE_CONFIG"] = str(site)
    assert cli("doctor", "--json", "--registry", "127.0.0.1:9") == 0
    out, err = capsys.readouterr()
    assert err.count("\n") == 1
    assert err.startswith(f"ligoenv: warning: site config file {site} is not valid TOML")
    assert json.loads(out)["warnings"] == [err.removeprefix("ligoenv: warning: ").rstrip("\n")]
