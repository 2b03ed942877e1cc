"""Client settings and where each value came from: command line > environment > config file > default.

`ligoenv doctor` prints the provenance; everything else reads `Settings.get(name)`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ligoenv.errors import ConfigError

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


@dataclass(frozen=True)
class Settings:
    """Values and their sources; `source_of(name)` says e.g. `environment (LIGOENV_INDEX)`."""

    values: Mapping[str, Any]
    sources: Mapping[str, str]
    config_file: Path

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
        else:
            values[name], sources[name] = _default(name, environ), "default"
    _check(values, sources)
    return Settings(values, sources, path)


def config_path(environ: Mapping[str, str]) -> Path:
    if environ.get("LIGOENV_CONFIG"):
        return Path(environ["LIGOENV_CONFIG"])
    import platformdirs

    return Path(platformdirs.user_config_dir("ligoenv")) / "config.toml"


def _read_config(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    import tomllib

    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    unknown = sorted(set(data) - set(OPTIONS))
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown setting {unknown[0]!r}; known: {', '.join(OPTIONS)}"
        )
    for name, value in data.items():
        _check_type(OPTIONS[name], value, f"config file {path}")
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
    if values["runtime"] not in RUNTIME_CHOICES:
        raise ConfigError(
            f"runtime {values['runtime']!r} from {sources['runtime']} is not one of: "
            f"{', '.join(RUNTIME_CHOICES)}"
        )
