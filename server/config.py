"""The server's configuration: one TOML file, checked against its schema, secrets resolved at load.

`load_config(path)` reads a file; `default_config(state_dir)` is what `ligoenv-server serve` runs
without one: everything under the state directory and one unauthenticated Distribution endpoint,
which is only allowed because the relay then listens on loopback.
"""

from __future__ import annotations

import enum
import hmac
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ligoenv.oci.errors import InvalidReference
from ligoenv.oci.hosts import is_loopback
from ligoenv.oci.platform import Platform
from ligoenv.oci.reference import Reference
from ligoenv.store.completion import BIND_POINTS, normal_bind_point
from ligoenv.store.errors import ConfigError

from .configerrors import config_schema_errors
from .jobs import source_name

CONFIG_ENV = "LIGOENV_SERVER_CONFIG"
STATE_DIR_ENV = "LIGOENV_STATE_DIR"
DEFAULT_BODY_LIMIT = 1024 * 1024
SIGNATURE_HEADER = "X-Ligoenv-Signature"
_RESERVED_PATHS = {"/healthz": "health check", "/readyz": "readiness check", "/metrics": "metrics"}
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
# Keys whose values are secrets, with their `_env` and `_file` forms (where a secret is often
# pasted by mistake); every value under an endpoint's `auth` is treated as one too.


@dataclass(frozen=True, repr=False)
class Secret:
    """A secret value resolved at load time; it prints as `***` so that it never reaches a log."""

    value: str
    origin: str = "inline"  # "inline", "env NAME" or "file PATH": says where, never what

    def reveal(self) -> str:
        return self.value

    def matches(self, candidate: str | bytes) -> bool:
        """Constant-time comparison, so that response times do not leak the secret."""
        given = candidate.encode() if isinstance(candidate, str) else candidate
        return hmac.compare_digest(given, self.value.encode())

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__


class EndpointKind(enum.StrEnum):
    DISTRIBUTION = "distribution"  # Distribution / CNCF registry / GitLab container registry
    DOCKERHUB = "dockerhub"
    HARBOR = "harbor"
    GENERIC = "generic"  # CI pipelines: {image, digest?} signed with HMAC-SHA256


class AuthType(enum.StrEnum):
    BEARER = "bearer"  # Authorization: Bearer <secret>
    HEADER = "header"  # a named header equals the secret
    GITLAB = "gitlab"  # X-Gitlab-Token: <secret>
    HMAC = "hmac"  # X-Ligoenv-Signature: sha256=<hex HMAC-SHA256 of the raw body>
    URL_SECRET = "url-secret"  # noqa: S105 (a name, not a password): secret in the URL path
    NONE = "none"  # only when the relay listens on loopback


# The header each auth type reads; `header` auth names its own, the others read none.
_AUTH_HEADERS = {AuthType.BEARER: "Authorization", AuthType.GITLAB: "X-Gitlab-Token",
                 AuthType.HMAC: SIGNATURE_HEADER}


@dataclass(frozen=True)
class AuthConfig:
    type: AuthType
    secret: Secret | None = None
    header: str | None = None  # the header that carries the credential, when there is one


@dataclass(frozen=True)
class EndpointConfig:
    name: str
    kind: EndpointKind
    path: str
    registry: str  # the name of a [registries.NAME] entry
    registry_host: str  # that entry's host: events are only ever fetched from it
    auth: AuthConfig
    allow: tuple[str, ...] = ()  # globs on repository or repository:tag; empty allows all
    platforms: tuple[Platform, ...] | None = None  # overrides publisher.platforms
    bind_points: tuple[str, ...] | None = None  # overrides publisher.bind_points

    @property
    def source(self) -> str:
        """The `source` of the publish requests this endpoint makes, e.g. `webhook:harbor/lab`."""
        return f"webhook:{self.kind}/{self.name}"


@dataclass(frozen=True)
class RelayConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    body_limit: int = DEFAULT_BODY_LIMIT
    endpoints: tuple[EndpointConfig, ...] = ()
    max_connections: int = 512  # open connections; past it, one still waiting for its head goes
    header_timeout: float = 10.0  # seconds a connection has to send a whole request head


@dataclass(frozen=True)
class QueueConfig:
    url: str  # sqlite:////abs/path.db, postgresql+psycopg://..., or http(s):// of a queue service
    token: Secret | None = None  # bearer token of a queue service
    max_attempts: int = 5
    lease_seconds: int = 60


@dataclass(frozen=True)
class RegistryConfig:
    name: str
    host: str  # canonical, e.g. "docker.io", "registry.gitlab.com", "127.0.0.1:5000"
    insecure: bool | None = None  # None: plain HTTP for loopback hosts only
    username: str | None = None
    password: Secret | None = None
    requests_per_second: float | None = None  # for bulk work (sync); None: [sync]'s default


@dataclass(frozen=True)
class PublisherConfig:
    root: Path  # where the publish tree is written (for cvmfs: the repository's mount)
    backend: str = "directory"  # "directory" | "cvmfs"
    repository: str | None = None  # cvmfs repository name
    cvmfs_server: str = "cvmfs_server"
    gateway: bool = False
    layout: str = "registry"  # "registry": <root>/<host>/<repo>; "osg": <root>/<repo>
    platforms: tuple[Platform, ...] = (Platform("linux", "amd64"),)
    keep_setuid: bool = False
    max_expanded_bytes: int = 64 * 1024**3  # an image bigger than this unpacked is refused
    bind_points: tuple[str, ...] = BIND_POINTS  # directories made in every tree for binds
    max_expansion_ratio: int = 2000  # a layer expanding more than this times its size is refused
    keep_ownership: bool = False  # True: published files keep the image's owners (root-run sites)
    # Publish by layer chain (clone the parent chain's tree, apply one layer); off: unpack and
    # publish each image whole (CVMFS: for gateway publishers on releases without template
    # transactions through the gateway)
    chains: bool = True

    @property
    def include_registry(self) -> bool:
        return self.layout == "registry"


@dataclass(frozen=True)
class WorkerConfig:
    cache_dir: Path
    concurrency: int = 1
    poll_interval: float = 2.0


@dataclass(frozen=True)
class SyncListConfig:
    """One list `sync` reconciles: an OSG docker_images.txt or a DUCC wishlist."""

    name: str  # jobs it makes have the source `sync:<name>`
    path: Path
    format: str = "auto"  # "auto" (by extension: .yaml/.yml is DUCC), "osg" or "ducc"
    untag_missing: bool = False  # a listed tag gone upstream is recorded as an untag


@dataclass(frozen=True)
class SyncConfig:
    lists: tuple[SyncListConfig, ...] = ()
    interval: float = 3600.0  # seconds between runs of `serve` and `worker`; 0: no timer
    jitter: float = 300.0  # up to this many seconds added to each wait, so sites do not align
    requests_per_second: float = 20.0  # to each registry, unless [registries.X] says otherwise
    concurrency: int = 8  # requests in flight, all registries together
    max_tags: int = 10000  # a wildcard over a repository with more tags fails


@dataclass(frozen=True)
class GcConfig:
    """Garbage collection policy ([gc]); see ligoenv_server.gcpolicy.GcPolicy."""

    grace_days: float = 30.0  # after a digest was last tagged
    keep_last: int = 3  # newest digests of each tag kept
    keep_tags: tuple[str, ...] = ()  # globs on tag or repository:tag: every digest kept
    max_trees: int = 1000  # removed per run at most (bounds one CVMFS transaction)
    pin_token: Secret | None = None  # bearer token POST /v1/pins needs; None: no pins by HTTP


@dataclass(frozen=True)
class LogConfig:
    format: str = "text"  # "text" | "json"
    level: str = "info"
    file: Path | None = None  # None: stderr (journald); a file is reopened on SIGHUP


@dataclass(frozen=True)
class ServerConfig:
    relay: RelayConfig
    queue: QueueConfig
    registries: dict[str, RegistryConfig]
    publisher: PublisherConfig
    worker: WorkerConfig
    log: LogConfig
    state_dir: Path
    sync: SyncConfig = SyncConfig()
    gc: GcConfig = GcConfig()

    def registry_by_host(self, host: str) -> RegistryConfig | None:
        """The configured registry a publish request names (requests carry the host)."""
        return next((r for r in self.registries.values() if r.host == host), None)

    def endpoint_for(self, source: str) -> EndpointConfig | None:
        """The endpoint a request from `source` came through (in either spelling), if any."""
        name = source_name(source)
        return next((e for e in self.relay.endpoints if e.source == name), None)

    def platforms_for(self, source: str) -> tuple[Platform, ...]:
        """The platforms to publish for a request from `source` (an endpoint may override)."""
        endpoint = self.endpoint_for(source)
        return endpoint.platforms if endpoint and endpoint.platforms else self.publisher.platforms

    def bind_points_for(self, source: str) -> tuple[str, ...]:
        """The bind points of trees published for a request from `source` (an endpoint may override)."""
        endpoint = self.endpoint_for(source)
        if endpoint is not None and endpoint.bind_points is not None:
            return endpoint.bind_points
        return self.publisher.bind_points


def load_config(path: Path | None, *, environ: Mapping[str, str] | None = None,
                secrets: bool = True) -> ServerConfig:
    """Read and check a config file; None means `$LIGOENV_SERVER_CONFIG`, else the defaults.

    `secrets=False` checks the file's structure without reading `*_env` variables or
    `*_file` files: such secrets are empty (for `check-config --no-secrets`, never to serve)."""
    env = os.environ if environ is None else environ
    if path is None:
        if not env.get(CONFIG_ENV):
            return default_config(default_state_dir(env), environ=env)
        path = Path(env[CONFIG_ENV])
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror or error}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    return _Builder(str(path), path.parent.resolve(), env, secrets).build(document)


def default_config(state_dir: Path, *, registry_host: str = "127.0.0.1:5000", host: str = "127.0.0.1",
                   port: int = 8080, environ: Mapping[str, str] | None = None) -> ServerConfig:
    """The embedded defaults: SQLite queue and directory publish root under `state_dir`, one
    Distribution endpoint at /hooks/distribution with no secret (refused off loopback)."""
    document = {
        "state_dir": str(state_dir.resolve()),
        "relay": {"host": host, "port": port, "endpoints": [{
            "name": "distribution", "kind": "distribution", "path": "/hooks/distribution",
            "registry": "local", "auth": {"type": "none"}}]},
        "registries": {"local": {"host": registry_host}},
    }
    env = os.environ if environ is None else environ
    return _Builder("built-in defaults", state_dir.resolve(), env).build(document)


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get(STATE_DIR_ENV):
        return Path(env[STATE_DIR_ENV])
    import platformdirs

    return platformdirs.user_state_path("ligoenv-server")


class _Builder:
    """Turns a schema-valid document into a ServerConfig; `label` starts every error message."""

    def __init__(self, label: str, base_dir: Path, environ: Mapping[str, str],
                 secrets: bool = True) -> None:
        self.label = label
        self.base_dir = base_dir
        self.environ = environ
        self.read_secrets = secrets

    def fail(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"{self.label}: {where}: {message}")

    def build(self, document: dict[str, Any]) -> ServerConfig:
        errors = config_schema_errors(document)
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise ConfigError(f"{self.label}: {errors[0]}{more}")
        state_dir = self.path(document.get("state_dir")) or default_state_dir(self.environ)
        registries = {name: self.registry(name, table)
                      for name, table in document.get("registries", {}).items()}
        relay = self.relay(document.get("relay", {}), registries)
        publisher = self.publisher(document.get("publisher", {}), state_dir)
        self.check_osg_names(relay, publisher)
        return ServerConfig(
            relay=relay,
            queue=self.queue(document.get("queue", {}), state_dir),
            registries=registries,
            publisher=publisher,
            worker=self.worker(document.get("worker", {}), state_dir),
            log=LogConfig(format=document.get("log", {}).get("format", "text"),
                          level=document.get("log", {}).get("level", "info").lower(),
                          file=self.path(document.get("log", {}).get("file"))),
            state_dir=state_dir,
            sync=self.sync(document.get("sync", {})),
            gc=self.gc(document.get("gc", {})),
        )

    def check_osg_names(self, relay: RelayConfig, publisher: PublisherConfig) -> None:
        """The osg layout drops the registry from link names: two registries that may publish
        the same repository would replace and remove each other's links."""
        if publisher.layout != "osg":
            return
        endpoints = relay.endpoints
        for i, first in enumerate(endpoints):
            for second in endpoints[i + 1:]:
                if first.registry_host != second.registry_host and \
                        _allowlists_may_meet(first.allow, second.allow):
                    raise self.fail("publisher.layout", (
                        f"'osg' leaves the registry out of link names, but endpoints "
                        f"{first.name} ({first.registry_host}) and {second.name} "
                        f"({second.registry_host}) may publish the same repository: give them "
                        "allowlists that cannot overlap, or use layout = \"registry\""))

    def sqlite_url(self, url: str | None) -> str | None:
        """`sqlite:///q.db` names a file relative to the config file, like every other path
        here (SQLAlchemy would take it relative to wherever each process started)."""
        prefix = "sqlite:///"
        if url is None or not url.startswith(prefix) or url.startswith(prefix + "/"):
            return url
        name, query = url[len(prefix):], ""
        if "?" in name:
            name, query = name.split("?", 1)
            query = "?" + query
        if not name or name == ":memory:":
            return url
        return f"{prefix}{self.base_dir / name}{query}"

    def path(self, text: str | None) -> Path | None:
        # Relative paths are relative to the config file, not to wherever the server started.
        return None if text is None else self.base_dir / Path(text).expanduser()

    def relay(self, table: dict[str, Any], registries: dict[str, RegistryConfig]) -> RelayConfig:
        relay = RelayConfig(host=table.get("host", "127.0.0.1"), port=table.get("port", 8080),
                            body_limit=table.get("body_limit", DEFAULT_BODY_LIMIT))
        endpoints = tuple(self.endpoint(f"relay.endpoints[{i}]", item, relay.host, registries)
                          for i, item in enumerate(table.get("endpoints", [])))
        for attribute in ("name", "path"):
            seen: set[str] = set()
            for i, endpoint in enumerate(endpoints):
                value = getattr(endpoint, attribute)
                if value in seen:
                    raise self.fail(f"relay.endpoints[{i}].{attribute}", f"{value!r} is used twice")
                seen.add(value)
        return RelayConfig(relay.host, relay.port, relay.body_limit, endpoints,
                           max_connections=table.get("max_connections", 512),
                           header_timeout=float(table.get("header_timeout", 10.0)))

    def endpoint(self, where: str, table: dict[str, Any], listen_host: str,
                 registries: dict[str, RegistryConfig]) -> EndpointConfig:
        kind = EndpointKind(table["kind"])
        path = table["path"]
        if table["registry"] not in registries:
            known = ", ".join(sorted(registries)) or "none are configured"
            raise self.fail(f"{where}.registry",
                            f"no [registries.{table['registry']}] section ({known})")
        reserved = _RESERVED_PATHS.get(path.rstrip("/"))
        if reserved:
            raise self.fail(f"{where}.path", f"{path.rstrip('/')} is the relay's own {reserved}")
        auth = self.auth(f"{where}.auth", table["auth"], listen_host)
        self.check_auth_fits(where, kind, path, auth)
        platforms = table.get("platforms")
        bind_points = table.get("bind_points")
        return EndpointConfig(
            name=table["name"], kind=kind, path=path, registry=table["registry"],
            registry_host=registries[table["registry"]].host, auth=auth,
            allow=tuple(table.get("allow", [])),
            platforms=self.platforms(f"{where}.platforms", platforms) if platforms else None,
            bind_points=None if bind_points is None
            else self.bind_points(f"{where}.bind_points", bind_points))

    def check_auth_fits(self, where: str, kind: EndpointKind, path: str, auth: AuthConfig) -> None:
        has_placeholder = "{secret}" in path
        if auth.type is AuthType.URL_SECRET and not has_placeholder:
            raise self.fail(f"{where}.path", "auth type 'url-secret' needs '{secret}' in the path")
        if has_placeholder and auth.type is not AuthType.URL_SECRET:
            raise self.fail(f"{where}.path", "'{secret}' in the path needs auth type 'url-secret'")
        if path.replace("{secret}", "").count("{"):
            raise self.fail(f"{where}.path", "the only placeholder allowed is '{secret}'")
        if kind is EndpointKind.DOCKERHUB and auth.type not in (AuthType.URL_SECRET, AuthType.NONE):
            raise self.fail(f"{where}.auth.type",
                            "Docker Hub cannot send headers: use 'url-secret' with '{secret}' in the path")

    def auth(self, where: str, table: dict[str, Any], listen_host: str) -> AuthConfig:
        auth_type = AuthType(table["type"])
        secret = self.secret(where, table, "secret")
        if auth_type is AuthType.NONE:
            if secret is not None:
                raise self.fail(where, "auth type 'none' takes no secret")
            if not is_loopback(listen_host):
                raise self.fail(f"{where}.type", "'none' is only allowed when relay.host is a "
                                f"loopback address (it is {listen_host!r}); configure a secret")
            return AuthConfig(auth_type)
        if secret is None:
            raise self.fail(where, f"auth type {auth_type.value!r} needs one of secret, "
                            "secret_env, secret_file")
        header = table.get("header")
        if auth_type is AuthType.HEADER and header is None:
            raise self.fail(f"{where}.header", "auth type 'header' needs the header name")
        if header is not None and auth_type not in (AuthType.HEADER, AuthType.HMAC):
            raise self.fail(f"{where}.header", f"auth type {auth_type.value!r} uses a fixed header")
        return AuthConfig(auth_type, secret, header or _AUTH_HEADERS.get(auth_type))

    def secret(self, where: str, table: dict[str, Any], key: str) -> Secret | None:
        """The one secret given as `key`, `key_env` or `key_file` in `table`, or None."""
        given = [k for k in (key, f"{key}_env", f"{key}_file") if k in table]
        if len(given) > 1:
            raise self.fail(where, f"give only one of {', '.join(given)}")
        if not given:
            return None
        name = given[0]
        if name == key:
            return Secret(table[key])
        if not self.read_secrets:
            return Secret("", f"{name} {table[name]} (not read)")
        if name.endswith("_env"):
            value = self.environ.get(table[name], "")
            if not value:
                raise self.fail(f"{where}.{name}", f"environment variable {table[name]} is not set")
            return Secret(value, f"env {table[name]}")
        path = self.path(table[name])
        assert path is not None
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise self.fail(f"{where}.{name}", f"cannot read {path}: {error.strerror}") from None
        if not value:
            raise self.fail(f"{where}.{name}", f"{path} is empty")
        return Secret(value, f"file {path}")

    def registry(self, name: str, table: dict[str, Any]) -> RegistryConfig:
        where = f"registries.{name}"
        host = table["host"]
        try:
            canonical = Reference.parse(f"{host}/probe").registry
        except InvalidReference:
            canonical = ""
        if canonical != host.lower() and host.lower() not in _HUB_ALIASES:
            raise self.fail(f"{where}.host", f"{host!r} is not a registry host (e.g. "
                            "'registry.gitlab.com', '127.0.0.1:5000', 'docker.io')")
        password = self.secret(where, table, "password")
        if (password is None) != ("username" not in table):
            raise self.fail(where, "give both username and a password (or neither)")
        return RegistryConfig(name, canonical, table.get("insecure"), table.get("username"), password,
                              table.get("requests_per_second"))

    def queue(self, table: dict[str, Any], state_dir: Path) -> QueueConfig:
        url = self.sqlite_url(table.get("url")) or f"sqlite:///{(state_dir / 'queue.db').resolve()}"
        token = self.secret("queue", table, "token")
        host = urlsplit(url).hostname or ""
        if token is not None and urlsplit(url).scheme == "http" and not is_loopback(host):
            raise self.fail("queue.url", f"plain http:// to {host} would send the token in clear; "
                            "use https:// (http:// is only allowed to a loopback host)")
        return QueueConfig(url=url, token=token,
                           max_attempts=table.get("max_attempts", 5),
                           lease_seconds=table.get("lease_seconds", 60))

    def publisher(self, table: dict[str, Any], state_dir: Path) -> PublisherConfig:
        backend = table.get("backend", "directory")
        repository = table.get("repository")
        if backend == "cvmfs" and repository is None:
            raise self.fail("publisher.repository", "the cvmfs backend needs the repository name")
        default_root = Path("/cvmfs", repository) if backend == "cvmfs" and repository \
            else state_dir / "publish"
        platforms = table.get("platforms", ["linux/amd64"])
        return PublisherConfig(
            root=self.path(table.get("root")) or default_root, backend=backend,
            repository=repository, cvmfs_server=table.get("cvmfs_server", "cvmfs_server"),
            gateway=table.get("gateway", False), layout=table.get("layout", "registry"),
            platforms=self.platforms("publisher.platforms", platforms),
            keep_setuid=table.get("keep_setuid", False),
            max_expanded_bytes=table.get("max_expanded_bytes", 64 * 1024**3),
            bind_points=self.bind_points("publisher.bind_points",
                                         table.get("bind_points", list(BIND_POINTS))),
            max_expansion_ratio=table.get("max_expansion_ratio", 2000),
            keep_ownership=table.get("keep_ownership", False),
            chains=table.get("chains", True))

    def worker(self, table: dict[str, Any], state_dir: Path) -> WorkerConfig:
        return WorkerConfig(cache_dir=self.path(table.get("cache_dir")) or state_dir / "cache",
                            concurrency=table.get("concurrency", 1),
                            poll_interval=float(table.get("poll_interval", 2.0)))

    def bind_points(self, where: str, items: list[str]) -> tuple[str, ...]:
        """Absolute paths inside the image, each once (`/gpfs/` and `/gpfs` are the same)."""
        points: list[str] = []
        for i, item in enumerate(items):
            try:
                point = normal_bind_point(item)
            except ValueError as error:
                raise self.fail(f"{where}[{i}]", str(error)) from None
            if point in points:
                raise self.fail(f"{where}[{i}]", f"{point!r} is listed twice")
            points.append(point)
        return tuple(points)

    def sync(self, table: dict[str, Any]) -> SyncConfig:
        lists = tuple(SyncListConfig(name=item["name"], path=self.path(item["path"]) or Path(),
                                     format=item.get("format", "auto"),
                                     untag_missing=item.get("untag_missing", False))
                      for item in table.get("lists", []))
        names = [item.name for item in lists]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise self.fail(f"sync.lists[{i}].name", f"{name!r} is used twice")
        defaults = SyncConfig()
        return SyncConfig(lists=lists, interval=float(table.get("interval", defaults.interval)),
                          jitter=float(table.get("jitter", defaults.jitter)),
                          requests_per_second=float(table.get("requests_per_second",
                                                              defaults.requests_per_second)),
                          concurrency=table.get("concurrency", defaults.concurrency),
                          max_tags=table.get("max_tags", defaults.max_tags))

    def gc(self, table: dict[str, Any]) -> GcConfig:
        defaults = GcConfig()
        return GcConfig(grace_days=float(table.get("grace_days", defaults.grace_days)),
                        keep_last=table.get("keep_last", defaults.keep_last),
                        keep_tags=tuple(table.get("keep_tags", ())),
                        max_trees=table.get("max_trees", defaults.max_trees),
                        pin_token=self.secret("gc", table, "pin_token"))

    def platforms(self, where: str, items: list[str]) -> tuple[Platform, ...]:
        try:
            return tuple(Platform.parse(item) for item in items)
        except InvalidReference as error:
            raise self.fail(where, str(error)) from None


def _allowlists_may_meet(first: tuple[str, ...], second: tuple[str, ...]) -> bool:
    """Whether some repository may pass both allowlists (empty: everything passes). Cautious:
    two globs whose literal beginnings are compatible are taken to meet."""
    if not first or not second:
        return True
    return any(_globs_may_meet(a.split(":", 1)[0], b.split(":", 1)[0])
               for a in first for b in second)


def _globs_may_meet(first: str, second: str) -> bool:
    wild = re.compile(r"[*?\[]")
    if not wild.search(first):
        return fnmatchcase(first, second)
    if not wild.search(second):
        return fnmatchcase(second, first)
    a, b = wild.split(first, maxsplit=1)[0], wild.split(second, maxsplit=1)[0]
    return a.startswith(b) or b.startswith(a)
