"""The server configuration: the documented example, the defaults, and clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from ligoenv.oci.platform import Platform
from ligoenv.store.errors import ConfigError
from ligoenv_server.config import (
    AuthType,
    EndpointKind,
    Secret,
    ServerConfig,
    default_config,
    load_config,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "server-config.example.toml"
EXAMPLE_ENV = {name: f"value-of-{name}" for name in (
    "LIGOENV_GITLAB_TOKEN", "LIGOENV_IGWN_TOKEN", "LIGOENV_HUB_PATH_SECRET",
    "LIGOENV_HARBOR_SECRET", "LIGOENV_CI_HMAC_SECRET", "LIGOENV_GITLAB_REGISTRY_TOKEN",
    "LIGOENV_PIN_TOKEN")}

MINIMAL = """
[registries.local]
host = "127.0.0.1:5000"

[[relay.endpoints]]
name = "local"
kind = "distribution"
path = "/hooks/distribution"
registry = "local"
auth = { type = "bearer", secret = "s3cret" }
"""


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> ServerConfig:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config(path, environ=environ or {})


def error_of(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text, environ)
    return str(raised.value)


def test_the_documented_example_parses() -> None:
    config = load_config(EXAMPLE, environ=EXAMPLE_ENV)
    assert [e.name for e in config.relay.endpoints] == ["gitlab", "igwn", "hub", "harbor", "ci"]
    hub = config.relay.endpoints[2]
    assert hub.kind is EndpointKind.DOCKERHUB and hub.auth.type is AuthType.URL_SECRET
    assert hub.registry_host == "docker.io"
    assert hub.auth.secret is not None and hub.auth.secret.reveal() == "value-of-LIGOENV_HUB_PATH_SECRET"
    assert config.relay.endpoints[0].auth.header == "X-Gitlab-Token"
    assert config.relay.endpoints[4].auth.header == "X-Ligoenv-Signature"
    assert config.publisher.backend == "cvmfs" and not config.publisher.include_registry
    assert config.publisher.root == Path("/cvmfs/singularity.opensciencegrid.org")
    assert config.registries["gitlab"].username == "ligoenv-bot"
    assert config.worker.cache_dir == Path("/var/cache/ligoenv-server")
    assert config.log.format == "json"
    both = (Platform("linux", "amd64"), Platform("linux", "arm64"))
    assert config.platforms_for("webhook:dockerhub/hub") == both
    assert config.platforms_for("dockerhub:hub") == both  # as jobs queued before spell it
    assert config.platforms_for("webhook:distribution/gitlab") == config.publisher.platforms
    assert [(item.name, item.path, item.untag_missing) for item in config.sync.lists] == \
        [("osg", Path("/etc/ligoenv/docker_images.txt"), False)]
    assert (config.sync.interval, config.sync.jitter, config.registries["dockerhub"].requests_per_second) \
        == (3600, 300, 10)
    assert (config.gc.grace_days, config.gc.keep_last, config.gc.keep_tags) == (30, 3, ("v*", "release-*"))
    assert config.gc.pin_token is not None and config.gc.pin_token.reveal() == "value-of-LIGOENV_PIN_TOKEN"


def test_sync_lists_are_relative_to_the_config_and_named_once(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL + '[[sync.lists]]\nname = "a"\npath = "lists/a.txt"\n')
    assert config.sync.lists[0].path == tmp_path.resolve() / "lists/a.txt"
    assert config.sync.requests_per_second == 20 and config.sync.concurrency == 8
    twice = MINIMAL + '[[sync.lists]]\nname = "a"\npath = "a"\n[[sync.lists]]\nname = "a"\npath = "b"\n'
    assert error_of(tmp_path, twice).endswith("sync.lists[1].name: 'a' is used twice")
    assert "sync" in error_of(tmp_path, MINIMAL + "[sync]\nrequests_per_second = 0\n")


def test_defaults_live_under_the_state_dir(tmp_path: Path) -> None:
    config = default_config(tmp_path / "state")
    state = (tmp_path / "state").resolve()
    assert config.queue.url == f"sqlite:///{state}/queue.db"
    assert config.publisher.root == state / "publish" and config.publisher.backend == "directory"
    assert config.worker.cache_dir == state / "cache"
    assert (config.relay.host, config.relay.port, config.relay.body_limit) == ("127.0.0.1", 8080, 1 << 20)
    [endpoint] = config.relay.endpoints
    assert (endpoint.path, endpoint.kind, endpoint.auth.type) == (
        "/hooks/distribution", EndpointKind.DISTRIBUTION, AuthType.NONE)
    assert endpoint.registry_host == "127.0.0.1:5000"


def test_defaults_refuse_an_unauthenticated_endpoint_off_loopback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'none' is only allowed when relay.host is a loopback"):
        default_config(tmp_path, host="0.0.0.0")
    assert default_config(tmp_path, host="::1").relay.host == "::1"


def test_no_path_means_the_environment_then_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text(MINIMAL)
    assert load_config(None, environ={"LIGOENV_SERVER_CONFIG": str(path)}).relay.endpoints[0].name == "local"
    config = load_config(None, environ={"LIGOENV_STATE_DIR": str(tmp_path / "st")})
    assert config.state_dir == (tmp_path / "st").resolve()


def test_minimal_file_gets_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, 'state_dir = "state"\n' + MINIMAL)
    assert config.state_dir == tmp_path / "state"
    assert config.queue.url == f"sqlite:///{tmp_path}/state/queue.db"
    assert (config.queue.max_attempts, config.queue.lease_seconds) == (5, 60)
    assert config.worker.concurrency == 1 and config.log.level == "info"
    assert config.publisher.platforms == (Platform("linux", "amd64"),)


def test_a_bad_value_names_the_key(tmp_path: Path) -> None:
    text = MINIMAL + """
[[relay.endpoints]]
name = "quay"
kind = "quay"
path = "/hooks/quay"
registry = "local"
auth = { type = "none" }
"""
    assert error_of(tmp_path, text) == (
        f"{tmp_path / 'config.toml'}: relay.endpoints[1].kind: 'quay' is not one of "
        "['distribution', 'dockerhub', 'harbor', 'generic']")


@pytest.mark.parametrize(("text", "expected"), [
    (MINIMAL + "[relay]\nprot = 80\n",
     "relay: Additional properties are not allowed ('prot' was unexpected)"),
    (MINIMAL.replace('host = "127.0.0.1:5000"', 'host = "127.0.0.1:5000"\ninsecur = true'),
     "registries.local: Additional properties are not allowed ('insecur' was unexpected)"),
    (MINIMAL + "[publisher]\nlayout = 'flat'\n",
     "publisher.layout: 'flat' is not one of ['registry', 'osg']"),
    (MINIMAL + "[worker]\nconcurrency = 0\n", "worker.concurrency: 0 is less than the minimum of 1"),
    (MINIMAL + "[relay]\nport = '8080'\n", "relay.port: '8080' is not of type 'integer'"),
    (MINIMAL + "[log]\nformat = 'xml'\n", "log.format: 'xml' is not one of ['text', 'json']"),
    ("colour = true\n" + MINIMAL,
     "(top level): Additional properties are not allowed ('colour' was unexpected)"),
])
def test_schema_errors_name_the_field(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error_of(tmp_path, text)


@pytest.mark.parametrize(("replace", "expected"), [
    ('registry = "local"', "relay.endpoints[0].registry: no [registries.other] section (local)"),
    ('auth = { type = "bearer", secret = "s3cret" }',
     "relay.endpoints[0].auth: auth type 'bearer' needs one of secret, secret_env, secret_file"),
    ('path = "/hooks/distribution"', "relay.endpoints[0].path: /healthz is the relay's own health check"),
])
def test_endpoint_errors(tmp_path: Path, replace: str, expected: str) -> None:
    substitutes = {'registry = "local"': 'registry = "other"',
                   'auth = { type = "bearer", secret = "s3cret" }': 'auth = { type = "bearer" }',
                   'path = "/hooks/distribution"': 'path = "/healthz"'}
    assert expected in error_of(tmp_path, MINIMAL.replace(replace, substitutes[replace]))


def endpoint(auth: str, *, kind: str = "distribution", path: str = "/hooks/x",
             host: str = "127.0.0.1") -> str:
    return f"""
[relay]
host = "{host}"

[registries.r]
host = "registry.example.org"

[[relay.endpoints]]
name = "x"
kind = "{kind}"
path = "{path}"
registry = "r"
auth = {auth}
"""


@pytest.mark.parametrize(("text", "expected"), [
    (endpoint('{ type = "none" }', host="0.0.0.0"),
     "relay.endpoints[0].auth.type: 'none' is only allowed when relay.host is a loopback address"),
    (endpoint('{ type = "none", secret = "x" }'), "auth type 'none' takes no secret"),
    (endpoint('{ type = "bearer", secret = "a", secret_env = "B" }'),
     "relay.endpoints[0].auth: give only one of secret, secret_env"),
    (endpoint('{ type = "bearer", secret_env = "UNSET_VAR" }'),
     "relay.endpoints[0].auth.secret_env: environment variable UNSET_VAR is not set"),
    (endpoint('{ type = "bearer", secret_file = "missing.secret" }'), "auth.secret_file: cannot read"),
    (endpoint('{ type = "header", secret = "a" }'), "auth.header: auth type 'header' needs the header name"),
    (endpoint('{ type = "gitlab", header = "X-Other", secret = "a" }'),
     "auth type 'gitlab' uses a fixed header"),
    (endpoint('{ type = "url-secret", secret = "a" }'),
     "auth type 'url-secret' needs '{secret}' in the path"),
    (endpoint('{ type = "bearer", secret = "a" }', path="/hooks/{secret}"),
     "'{secret}' in the path needs auth type 'url-secret'"),
    (endpoint('{ type = "url-secret", secret = "a" }', path="/hooks/{secret}/{name}"),
     "the only placeholder allowed is '{secret}'"),
    (endpoint('{ type = "bearer", secret = "a" }', kind="dockerhub"), "Docker Hub cannot send headers"),
])
def test_auth_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error_of(tmp_path, text)


def test_auth_none_is_fine_on_loopback(tmp_path: Path) -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.53"):
        assert load(tmp_path, endpoint('{ type = "none" }', host=host)).relay.endpoints[0].auth.secret is None


def test_secrets_from_env_and_files_never_print(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "hook").write_text("from-a-file\n")
    config = load(tmp_path, endpoint('{ type = "bearer", secret_file = "secrets/hook" }')
                  + '[queue]\nurl = "https://queue.example.org"\ntoken_env = "QT"\n', {"QT": "queue-token"})
    secret = config.relay.endpoints[0].auth.secret
    assert secret is not None and secret.reveal() == "from-a-file"
    assert secret.origin == f"file {tmp_path / 'secrets' / 'hook'}"
    assert config.queue.token == Secret("queue-token", "env QT")
    for text in (repr(config), str(config), repr(secret), f"{secret}"):
        assert "from-a-file" not in text and "queue-token" not in text
    assert str(secret) == repr(secret) == "***"
    assert secret.matches("from-a-file") and not secret.matches("from-a-fil")


@pytest.mark.parametrize(("text", "expected"), [
    (MINIMAL.replace('host = "127.0.0.1:5000"',
                     'host = "127.0.0.1:5000"\nusername = "u"\npassword = ["TOPSECRET-5"]'),
     "registries.local.password: must be a string"),
    (MINIMAL.replace('secret = "s3cret"', 'secret = { value = "TOPSECRET-5" }'),
     "relay.endpoints[0].auth.secret: must be a string"),
    (MINIMAL + '[queue]\nurl = "https://q.example"\ntoken = ""\n', "queue.token: must not be empty"),
    # The secret pasted where the name of its environment variable goes.
    (MINIMAL + '[queue]\nurl = "https://q.example"\ntoken_env = "TOPSECRET-5!"\n',
     "queue.token_env: must match '^[A-Za-z_][A-Za-z0-9_]*$'"),
    (MINIMAL.replace('type = "bearer"', 'type = "TOPSECRET-5"'),
     "relay.endpoints[0].auth.type: must be one of ['bearer', 'header', 'gitlab', 'hmac', "
     "'url-secret', 'none']"),
    (MINIMAL + '[queue]\nurl = "mysql://ligoenv:TOPSECRET-5@db/queue"\n',
     "queue.url: 'mysql://ligoenv:***@db/queue' does not match "
     "'^(sqlite|postgresql|postgresql\\\\+psycopg|http|https)://'"),
    # Endpoints written as a table, not an array of tables: the whole table is the value.
    (MINIMAL.replace("[[relay.endpoints]]", "[relay.endpoints]"), "relay.endpoints: must be an array"),
])
def test_schema_errors_never_show_a_secret(tmp_path: Path, text: str, expected: str) -> None:
    message = error_of(tmp_path, text)
    assert message == f"{tmp_path / 'config.toml'}: {expected}"
    assert "TOPSECRET" not in message and "s3cret" not in message


@pytest.mark.parametrize("url", ["http://queue.example.org:8081", "http://192.0.2.7:8081",
                                 "http://queue.example.org/", "http://[2001:db8::1]:8081"])
def test_a_queue_token_never_travels_in_clear(tmp_path: Path, url: str) -> None:
    text = MINIMAL + f'[queue]\nurl = "{url}"\ntoken = "queue-token"\n'
    message = error_of(tmp_path, text)
    assert ": queue.url: plain http:// to " in message and "use https://" in message
    assert "queue-token" not in message


@pytest.mark.parametrize("url", ["https://queue.example.org", "http://127.0.0.1:8081",
                                 "http://localhost:8081", "http://[::1]:8081"])
def test_a_queue_token_may_go_over_https_or_loopback(tmp_path: Path, url: str) -> None:
    text = MINIMAL + f'[queue]\nurl = "{url}"\ntoken = "queue-token"\n'
    assert load(tmp_path, text).queue.url == url


def test_empty_secret_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    assert "auth.secret_file: " in error_of(tmp_path, endpoint('{ type = "bearer", secret_file = "empty" }'))


def test_duplicate_names_and_paths(tmp_path: Path) -> None:
    second = MINIMAL[MINIMAL.index("[[relay.endpoints]]"):]
    assert "relay.endpoints[1].name: 'local' is used twice" in error_of(tmp_path, MINIMAL + second)
    renamed = second.replace('name = "local"', 'name = "other"')
    assert ("relay.endpoints[1].path: '/hooks/distribution' is used twice"
            in error_of(tmp_path, MINIMAL + renamed))


def test_registries(tmp_path: Path) -> None:
    text = MINIMAL + """
[registries.hub]
host = "index.docker.io"

[registries.gitlab]
host = "Registry.GitLab.com"
username = "bot"
password = "pw"
"""
    config = load(tmp_path, text)
    assert config.registries["hub"].host == "docker.io"
    assert config.registries["gitlab"].host == "registry.gitlab.com"
    assert config.registry_by_host("registry.gitlab.com") == config.registries["gitlab"]
    assert config.registry_by_host("quay.io") is None
    assert config.registries["local"].insecure is None
    bad_host = MINIMAL.replace('host = "127.0.0.1:5000"', 'host = "myregistry"')
    assert "registries.local.host: 'myregistry' is not a registry host" in error_of(tmp_path, bad_host)
    no_password = MINIMAL.replace('host = "127.0.0.1:5000"', 'host = "127.0.0.1:5000"\nusername = "u"')
    assert "registries.local: give both username and a password" in error_of(tmp_path, no_password)


def test_publisher(tmp_path: Path) -> None:
    cvmfs = MINIMAL + "[publisher]\nbackend = 'cvmfs'\n"
    assert "publisher.repository: the cvmfs backend needs" in error_of(tmp_path, cvmfs)
    config = load(tmp_path, MINIMAL + "[publisher]\nroot = 'pub'\n"
                  "platforms = ['linux/arm64/v8', 'linux/x86_64']\n")
    assert config.publisher.root == tmp_path / "pub"
    assert config.publisher.platforms == (Platform("linux", "arm64"), Platform("linux", "amd64"))
    assert config.publisher.include_registry


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*nope\.toml"):
        load_config(tmp_path / "nope.toml")
    assert error_of(tmp_path, "[relay\n").startswith(f"{tmp_path / 'config.toml'}: not valid TOML")


def test_bind_points_and_their_override(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL + '[publisher]\nbind_points = ["/gpfs/", "/project/./ligo"]\n')
    assert config.publisher.bind_points == ("/gpfs", "/project/ligo")
    assert config.bind_points_for("distribution:local") == ("/gpfs", "/project/ligo")
    override = MINIMAL.replace('auth = {', 'bind_points = ["/ceph"]\nauth = {')
    config = load(tmp_path, override)
    assert config.bind_points_for("distribution:local") == ("/ceph",)
    assert config.bind_points_for("cli") == config.publisher.bind_points == (
        "/cvmfs", "/srv", "/hdfs", "/gpfs", "/dev", "/proc", "/sys", "/tmp", "/var/tmp", "/home")


@pytest.mark.parametrize(("points", "message"), [
    ('["gpfs"]', "publisher.bind_points[0]: 'gpfs' is not an absolute path"),
    ('["/gpfs", "/data/../etc"]', "publisher.bind_points[1]: '/data/../etc' climbs out of the image"),
    ('["/gpfs", "/hdfs", "/gpfs/"]', "publisher.bind_points[2]: '/gpfs' is listed twice"),
    ('["/"]', "publisher.bind_points[0]: '/' is the image's root, not a mount point"),
    ('"/gpfs"', "publisher.bind_points"),
])
def test_bad_bind_points_name_the_key(tmp_path: Path, points: str, message: str) -> None:
    assert message in error_of(tmp_path, MINIMAL + f"[publisher]\nbind_points = {points}\n")


def test_bad_endpoint_bind_points_name_the_endpoint(tmp_path: Path) -> None:
    text = MINIMAL.replace('auth = {', 'bind_points = ["/ok", "relative"]\nauth = {')
    assert "relay.endpoints[0].bind_points[1]: 'relative' is not an absolute path" in error_of(tmp_path, text)


def two_registries(first_allow: str, second_allow: str, layout: str = "osg") -> str:
    return f"""
[publisher]
layout = "{layout}"
[registries.a]
host = "registry.a.example"
[registries.b]
host = "registry.b.example"
[[relay.endpoints]]
name = "a"
kind = "distribution"
path = "/a"
registry = "a"
auth = {{ type = "bearer", secret = "s3cret" }}
{first_allow}
[[relay.endpoints]]
name = "b"
kind = "harbor"
path = "/b"
registry = "b"
auth = {{ type = "header", header = "Authorization", secret = "s3cret" }}
{second_allow}
"""


@pytest.mark.parametrize(("first", "second"), [
    ("", ""), ('allow = ["lvk/*"]', ""), ('allow = ["lvk/*"]', 'allow = ["lvk/app:v1"]'),
    ('allow = ["lvk/a*"]', 'allow = ["lvk/*:nightly"]'), ('allow = ["x/app"]', 'allow = ["x/app"]'),
])
def test_osg_refuses_two_registries_that_may_publish_one_repository(
        tmp_path: Path, first: str, second: str) -> None:
    message = error_of(tmp_path, two_registries(first, second))
    assert message.endswith(
        "publisher.layout: 'osg' leaves the registry out of link names, but endpoints a "
        "(registry.a.example) and b (registry.b.example) may publish the same repository: give "
        'them allowlists that cannot overlap, or use layout = "registry"')
    load(tmp_path, two_registries(first, second, layout="registry"))


@pytest.mark.parametrize(("first", "second"), [
    ('allow = ["lvk/*"]', 'allow = ["virgo/*"]'), ('allow = ["lvk/app"]', 'allow = ["lvk/app2"]'),
    ('allow = ["lvk/app", "x/*"]', 'allow = ["lvk/b*", "y/*:v1"]'),
])
def test_osg_accepts_registries_whose_allowlists_cannot_meet(tmp_path: Path, first: str,
                                                             second: str) -> None:
    assert load(tmp_path, two_registries(first, second)).publisher.layout == "osg"


@pytest.mark.parametrize(("given", "expected"), [
    ("sqlite:///q.db", "sqlite:///{etc}/q.db"),
    ("sqlite:///state/q.db?timeout=5", "sqlite:///{etc}/state/q.db?timeout=5"),
    ("sqlite:////var/lib/q.db", "sqlite:////var/lib/q.db"),
])
def test_a_relative_sqlite_queue_is_relative_to_the_config_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str, expected: str) -> None:
    from ligoenv_server.queue import SqlQueue

    etc = tmp_path / "etc"
    etc.mkdir()
    monkeypatch.chdir(tmp_path)  # a relay and a worker started from different directories
    config = load(etc, MINIMAL + f'[queue]\nurl = "{given}"\n')
    assert config.queue.url == expected.format(etc=etc)
    if given == "sqlite:///q.db":
        with SqlQueue(config.queue.url) as queue:
            queue.ping()
        assert (etc / "q.db").is_file() and not (tmp_path / "q.db").exists()
