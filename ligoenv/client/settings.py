"""Client settings and where each value came from: command line > environment > the user's
config file > the site's config file > default.

The site file (`/etc/ligoenv/config.toml`, or platformdirs' site config directory) lets a
cluster give its researchers an index and a runtime without them setting anything; one that
cannot be read is a warning, never a failure. `ligoenv doctor` prints where each value came from;
everything else reads `Settings.get(name)`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ligoenv.store.errors import ConfigError

RUNTIME_CHOICES = ("auto", "apptainer", "singularity", "docker", "podman", "bwrap")


@dataclass(frozen=True)
class Option:
    """One setting: its environment variable and how to turn text into a value."""

    name: str
    env: str
    kind: str  # "str" | "list" (comma-separated in the environment, an array in TOML)
    help: str


OPTIONS: dict[str, Option] = {
    option.name: option
    for option in (
        Option("index", "LIGOENV_INDEX", "str",
               "publish index: a publish root, a CVMFS mount or an http(s) mirror"),
        Option("runtime", "LIGOENV_RUNTIME", "str", f"container runtime: {'|'.join(RUNTIME_CHOICES)}"),
        Option("lockfile", "LIGOENV_LOCKFILE", "str", "lockfile read by resolve/run/verify/cite"),
        Option("cache", "LIGOENV_CACHE", "str", "cache of layers and unpacked images"),
        Option("insecure_registries", "LIGOENV_INSECURE_REGISTRIES", "list",
               "registries reached over plain HTTP besides loopback ones"),
    )
}

DEFAULT_LOCKFILE = "ligoenv.lock"
SITE_CONFIG_ENV = "LIGOENV_SITE_CONFIG"  # a path, or empty for no site file
SITE_CONFIG = Path("/etc/ligoenv/config.toml")


@dataclass(frozen=True)
class Settings:
    """Values and their sources; `source_of(name)` says e.g. `environment (LIGOENV_INDEX)`."""

    values: Mapping[str, Any]
    sources: Mapping[str, str]
    config_file: Path
    site_file: Path | None = None  # the site config file in effect, if one exists
    warnings: tuple[str, ...] = ()  # a site file that could not be used, in words

    def get(self, name: str) -> Any:
        return self.values[name]

    def source_of(self, name: str) -> str:
        return self.sources[name]

    @property
    def index(self) -> str | None:
        value: str | None = self.values["index"]
        return value

    @property
    def runtime(self) -> str:
        return str(self.values["runtime"])

    @property
    def lockfile(self) -> Path:
        return Path(self.values["lockfile"])

    @property
    def lockfile_explicit(self) -> bool:
        """False when the lockfile is only the default name, which may well not exist."""
        return self.sources["lockfile"] != "default"

    @property
    def cache(self) -> Path:
        return Path(self.values["cache"])

    @property
    def insecure_registries(self) -> tuple[str, ...]:
        return tuple(self.values["insecure_registries"])


def load_settings(cli: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None,
                  config_file: Path | None = None) -> Settings:
    """Merge the layers; `cli` values that are None count as not given."""
    environ = os.environ if environ is None else environ
    path = config_file or config_path(environ)
    from_file = _read_config(path)
    site, from_site, warnings = _site_settings(environ)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, option in OPTIONS.items():
        given = (cli or {}).get(name)
        if given is not None:
            values[name], sources[name] = given, "command line"
        elif environ.get(option.env):
            values[name] = _from_text(option, environ[option.env])
            sources[name] = f"environment ({option.env})"
        elif name in from_file:
            values[name], sources[name] = from_file[name], f"config file ({path})"
        elif name in from_site:
            values[name], sources[name] = from_site[name], f"site config file ({site})"
        else:
            values[name], sources[name] = _default(name, environ), "default"
    _check(values, sources)
    return Settings(values, sources, path, site, warnings)


def config_path(environ: Mapping[str, str]) -> Path:
    if environ.get("LIGOENV_CONFIG"):
        return Path(environ["LIGOENV_CONFIG"])
    import platformdirs

    return Path(platformdirs.user_config_dir("ligoenv")) / "config.toml"


def site_config_files(environ: Mapping[str, str]) -> list[Path]:
    """Where a site file may be, first found wins: `$LIGOENV_SITE_CONFIG` alone when set (empty:
    none), else /etc/ligoenv/config.toml, then platformdirs' site config directories."""
    if SITE_CONFIG_ENV in environ:
        given = environ[SITE_CONFIG_ENV]
        return [Path(given)] if given else []
    import platformdirs

    found = platformdirs.site_config_dir("ligoenv", multipath=True).split(os.pathsep)
    return [SITE_CONFIG, *(Path(directory) / "config.toml" for directory in found)]


def _site_settings(environ: Mapping[str, str]) -> tuple[Path | None, dict[str, Any], tuple[str, ...]]:
    """The site file in effect, its settings, and a warning when it cannot be used (it then
    counts for nothing: a broken site file must not stop every command of every user)."""
    site = next((path for path in site_config_files(environ) if path.is_file()), None)
    if site is None:
        return None, {}, ()
    try:
        settings = _read_config(site, "site config file")
        if "runtime" in settings:
            _check_runtime(settings["runtime"], f"site config file ({site})")
    except ConfigError as error:
        return site, {}, (f"{error}; ignoring the site config file",)
    return site, settings, ()


def _read_config(path: Path, what: str = "config file") -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise ConfigError(f"cannot read {what} {path}: {error.strerror}") from None
    import tomllib

    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{what} {path} is not valid TOML: {error}") from None
    unknown = sorted(set(data) - set(OPTIONS))
    if unknown:
        raise ConfigError(
            f"{what} {path}: unknown setting {unknown[0]!r}; known: {', '.join(OPTIONS)}"
        )
    for name, value in data.items():
        _check_type(OPTIONS[name], value, f"{what} {path}")
    return data


def _check_type(option: Option, value: Any, where: str) -> None:
    if option.kind == "list":
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        if not ok:
            raise ConfigError(f"{where}: {option.name} must be a list of strings")
    elif not isinstance(value, str):
        raise ConfigError(f"{where}: {option.name} must be a string")


def _from_text(option: Option, text: str) -> Any:
    if option.kind == "list":
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def _default(name: str, environ: Mapping[str, str]) -> Any:
    if name == "runtime":
        return "auto"
    if name == "lockfile":
        return DEFAULT_LOCKFILE
    if name == "cache":
        import platformdirs

        return platformdirs.user_cache_dir("ligoenv")
    if name == "insecure_registries":
        return []
    return None


def _check(values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
    _check_runtime(values["runtime"], sources["runtime"])


def _check_runtime(runtime: str, source: str) -> None:
    if runtime not in RUNTIME_CHOICES:
        raise ConfigError(f"runtime {runtime!r} from {source} is not one of: {', '.join(RUNTIME_CHOICES)}")
