"""Credentials from docker config files and helpers, and logins against the real registry
(htpasswd Basic auth, and bearer tokens from a token service)."""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

import pytest

from ligoenv.oci.credentials import Credentials, find_credentials
from ligoenv.oci.digest import Digest
from ligoenv.oci.errors import AuthError, RegistryUnavailable
from ligoenv.oci.manifest import OCI_MANIFEST
from ligoenv.oci.reference import Reference
from ligoenv.oci.registry import RegistryClient
from ligoenv.oci.transport import Transport
from testbed.httpstub import Reply, Stub
from testbed.images import build_busybox_image, push_image
from testbed.tokenserver import TokenServer
from tests.oci.conftest import PASSWORD, USER, LoginRegistry, inline_auth, write_docker_config

REG = "registry.example.org"


def env_for(**values: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], **values}


# -- reading config files ------------------------------------------------------------------


def test_inline_base64_auth_from_docker_config(tmp_path: Path) -> None:
    write_docker_config(tmp_path / "d", {"auths": {REG: inline_auth()}})
    found = find_credentials(REG, env=env_for(DOCKER_CONFIG=str(tmp_path / "d")), home=tmp_path)
    assert found is not None
    assert (found.username, found.password) == (USER, PASSWORD)
    assert str(tmp_path / "d" / "config.json") in found.source


def test_username_and_password_fields(tmp_path: Path) -> None:
    write_docker_config(tmp_path / ".docker", {"auths": {REG: {"username": "bob", "password": "pw"}}})
    found = find_credentials(REG, env=env_for(), home=tmp_path)
    assert found is not None and (found.username, found.password) == ("bob", "pw")


@pytest.mark.parametrize("key", ["https://index.docker.io/v1/", "index.docker.io", "docker.io"])
def test_docker_hub_keys(tmp_path: Path, key: str) -> None:
    write_docker_config(tmp_path / ".docker", {"auths": {key: inline_auth("hubuser", "hubpw")}})
    found = find_credentials("docker.io", env=env_for(), home=tmp_path)
    assert found is not None and found.username == "hubuser"


def test_key_with_scheme_and_path_matches_the_host(tmp_path: Path) -> None:
    write_docker_config(tmp_path / ".docker", {"auths": {f"https://{REG}/v2/": inline_auth()}})
    assert find_credentials(REG, env=env_for(), home=tmp_path) is not None
    assert find_credentials("other.example.org", env=env_for(), home=tmp_path) is None


def test_registry_auth_file_comes_first(tmp_path: Path) -> None:
    write_docker_config(tmp_path / "podman", {"auths": {REG: inline_auth("first", "x")}})
    write_docker_config(tmp_path / ".docker", {"auths": {REG: inline_auth("last", "y")}})
    env = env_for(REGISTRY_AUTH_FILE=str(tmp_path / "podman" / "config.json"))
    found = find_credentials(REG, env=env, home=tmp_path)
    assert found is not None and found.username == "first"


def test_later_file_used_when_earlier_has_nothing_for_the_registry(tmp_path: Path) -> None:
    write_docker_config(tmp_path / "podman", {"auths": {"elsewhere.org": inline_auth("no", "x")}})
    write_docker_config(tmp_path / ".docker", {"auths": {REG: inline_auth("yes", "y")}})
    env = env_for(REGISTRY_AUTH_FILE=str(tmp_path / "podman" / "config.json"))
    found = find_credentials(REG, env=env, home=tmp_path)
    assert found is not None and found.username == "yes"


def test_no_config_means_anonymous(tmp_path: Path) -> None:
    assert find_credentials(REG, env=env_for(), home=tmp_path) is None


def test_malformed_auth_names_the_file(tmp_path: Path) -> None:
    path = write_docker_config(tmp_path / ".docker", {"auths": {REG: {"auth": "bm90LWJhc2U2NA"}}})
    with pytest.raises(AuthError, match=f"malformed 'auth' value in {path}"):
        find_credentials(REG, env=env_for(), home=tmp_path)


def test_unreadable_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / ".docker" / "config.json"
    path.parent.mkdir()
    path.write_text("{not json")
    with pytest.raises(AuthError, match=f"cannot read registry credentials from {path}"):
        find_credentials(REG, env=env_for(), home=tmp_path)


def test_secret_is_not_in_repr() -> None:
    assert PASSWORD not in repr(Credentials(USER, PASSWORD, "here"))


# -- credential helpers (a stand-in docker-credential-test on PATH) ------------------------


def test_cred_helper_for_one_registry(tmp_path: Path, helper_path: Path) -> None:
    helper_path.write_text(json.dumps({REG: ["helped", "token123"]}))
    write_docker_config(tmp_path / ".docker", {"credHelpers": {REG: "test"}})
    found = find_credentials(REG, home=tmp_path)
    assert found is not None and (found.username, found.password) == ("helped", "token123")
    assert found.source == "docker-credential-test"


def test_creds_store_is_asked_with_docker_hub_server_url(tmp_path: Path, helper_path: Path) -> None:
    helper_path.write_text(json.dumps({"https://index.docker.io/v1/": ["hub", "pw"]}))
    write_docker_config(tmp_path / ".docker", {"credsStore": "test"})
    found = find_credentials("docker.io", home=tmp_path)
    assert found is not None and found.username == "hub"
    calls = (helper_path.parent / "helper-calls").read_text().split()
    assert calls == ["https://index.docker.io/v1/"]


def test_helper_without_credentials_means_anonymous(tmp_path: Path, helper_path: Path) -> None:
    write_docker_config(tmp_path / ".docker", {"credsStore": "test"})
    assert find_credentials(REG, home=tmp_path) is None


def test_missing_helper_is_named(tmp_path: Path) -> None:
    write_docker_config(tmp_path / ".docker", {"credHelpers": {REG: "nosuchhelper"}})
    with pytest.raises(AuthError, match=r"docker-credential-nosuchhelper .* is not on PATH"):
        find_credentials(REG, env=env_for(), home=tmp_path)


def test_helper_that_hangs_is_stopped(tmp_path: Path, helper_path: Path) -> None:
    write_docker_config(tmp_path / ".docker", {"credHelpers": {"slow": "test"}})
    with pytest.raises(AuthError, match=r"did not answer within 0\.5 s"):
        find_credentials("slow", home=tmp_path, timeout=0.5)


# -- Basic auth (htpasswd) against the real registry ---------------------------------------


def test_basic_auth_without_credentials_says_how_to_log_in(basic_registry: LoginRegistry) -> None:
    ref = Reference.parse(f"{basic_registry.host}/lab/app:v1")
    with RegistryClient(basic_registry.host) as client, pytest.raises(AuthError) as caught:
        client.resolve(ref)
    assert str(caught.value) == (f"registry {basic_registry.host} needs a login: run `docker login "
                                 f"{basic_registry.host}` (or set $REGISTRY_AUTH_FILE)")


def test_basic_auth_with_docker_config(basic_registry: LoginRegistry, no_user_credentials: Path) -> None:
    write_docker_config(no_user_credentials / ".docker", {"auths": {basic_registry.host: inline_auth()}})
    image = build_busybox_image("basic")
    with RegistryClient(basic_registry.host) as client:
        for layer in image.layers:
            client.push_blob("lab/app", layer.blob)
        client.push_blob("lab/app", image.config_bytes())
        pushed = client.push_manifest("lab/app", "basic", image.manifest_bytes(), OCI_MANIFEST)
        assert client.resolve(Reference.parse(f"{basic_registry.host}/lab/app:basic")) == pushed
        assert "basic" in client.list_tags("lab/app")


def test_basic_auth_with_credential_helper(basic_registry: LoginRegistry, no_user_credentials: Path,
                                           helper_path: Path) -> None:
    helper_path.write_text(json.dumps({basic_registry.host: [USER, PASSWORD]}))
    write_docker_config(no_user_credentials / ".docker", {"credHelpers": {basic_registry.host: "test"}})
    with RegistryClient(basic_registry.host) as client:
        client.push_blob("lab/helped", b"helped blob")


def test_basic_auth_wrong_password(basic_registry: LoginRegistry, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    credentials = Credentials(USER, "wrong-password", "test config")
    with RegistryClient(basic_registry.host, credentials=credentials) as client, \
            pytest.raises(AuthError) as caught:
        client.list_tags("lab/app")
    message = str(caught.value)
    assert message.startswith(f"registry {basic_registry.host} refused the credentials of 'alice' "
                              "from test config")
    assert message.endswith(f"run `docker login {basic_registry.host}` again")
    assert "wrong-password" not in message + caplog.text
    assert credentials.basic() not in caplog.text


# -- bearer tokens (oras TokenAuth) against the real registry ------------------------------


def test_anonymous_token_for_a_public_repository(token_registry: LoginRegistry,
                                                 token_server: TokenServer) -> None:
    credentials = Credentials(USER, PASSWORD, "test")
    pushed = push_with(token_registry.host, "public/app", "v1", credentials)
    token_server.requests.clear()
    with RegistryClient(token_registry.host) as client:
        assert client.resolve(Reference.parse(f"{token_registry.host}/public/app:v1")) == pushed
    assert token_server.requests == [{"scope": "repository:public/app:pull", "user": None, "ok": True,
                                      "service": "ligoenv-test-registry"}]


def test_anonymous_token_refused_for_a_private_repository(token_registry: LoginRegistry) -> None:
    with RegistryClient(token_registry.host) as client, pytest.raises(AuthError) as caught:
        client.resolve(Reference.parse(f"{token_registry.host}/private/app:v1"))
    assert str(caught.value).startswith(f"registry {token_registry.host} denied anonymous access to "
                                        "private/app")
    assert str(caught.value).endswith(f"run `docker login {token_registry.host}`")


def test_token_with_credentials_pushes_and_pulls(token_registry: LoginRegistry, token_server: TokenServer,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token_server.requests.clear()
    credentials = Credentials(USER, PASSWORD, "test")
    pushed = push_with(token_registry.host, "private/app", "v1", credentials)
    with RegistryClient(token_registry.host, credentials=credentials) as client:
        ref = Reference.parse(f"{token_registry.host}/private/app:v1")
        assert client.fetch_manifest(ref).digest == pushed
    assert {r["user"] for r in token_server.requests} == {USER}
    assert any("push" in r["scope"] for r in token_server.requests)
    assert PASSWORD not in caplog.text and credentials.basic() not in caplog.text


def test_token_service_refuses_wrong_password(token_registry: LoginRegistry) -> None:
    credentials = Credentials(USER, "nope", "test")
    with RegistryClient(token_registry.host, credentials=credentials) as client, \
            pytest.raises(AuthError, match="refused the credentials of 'alice'"):
        client.resolve(Reference.parse(f"{token_registry.host}/private/app:v1"))


def push_with(host: str, repository: str, tag: str, credentials: Credentials) -> Digest:
    return push_image(host, repository, tag, build_busybox_image(tag), credentials=credentials)


# -- challenges from a stub: a token service that never answers, and 403 -------------------


def test_token_request_has_a_timeout(stub: Stub) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts connections into the backlog, never answers
    realm = f"http://127.0.0.1:{silent.getsockname()[1]}/token"
    stub.on("GET", "/v2/lab/app/tags/list",
            Reply(401, {"Www-Authenticate": f'Bearer realm="{realm}",service="stub"'}))
    transport = Transport(stub.host, timeout=0.3)
    try:
        with RegistryClient(stub.host, transport=transport) as client, \
                pytest.raises(RegistryUnavailable) as caught:
            client.list_tags("lab/app")
    finally:
        silent.close()
    assert str(caught.value) == (f"token service of registry {stub.host} is unreachable: "
                                 "no answer within 0.3 s")


def test_forbidden_is_an_auth_error_with_the_registry_reason(stub: Stub) -> None:
    stub.on("GET", "/v2/lab/app/tags/list",
            Reply(403, {"Content-Type": "application/json"},
                  b'{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}'))
    with RegistryClient(stub.host, anonymous=True) as client, pytest.raises(AuthError) as caught:
        client.list_tags("lab/app")
    assert str(caught.value) == (f"registry {stub.host} denied anonymous access to lab/app (DENIED: "
                                 f"requested access to the resource is denied): check the name, or run "
                                 f"`docker login {stub.host}`")


# -- token challenges that must not be followed, or cannot be ------------------------------


def challenge(stub: Stub, value: str) -> None:
    stub.on("GET", "/v2/lab/app/tags/list", Reply(401, {"Www-Authenticate": value}))
    stub.on("GET", "/token", Reply(200, {"Content-Type": "application/json"}, b'{"token": "t0k3n"}'))


def token_requests(stub: Stub) -> list[dict[str, str]]:
    return [headers for _, path, headers in stub.seen if path.startswith("/token")]


def test_credentials_never_go_to_a_plain_http_token_service_elsewhere(stub: Stub) -> None:
    # 0.0.0.0 reaches this machine but is not a loopback name: it stands for a host on the network
    realm = f"http://0.0.0.0:{stub.host.split(':')[1]}/token"
    challenge(stub, f'Bearer realm="{realm}",service="stub"')
    credentials = Credentials(USER, PASSWORD, "test")
    with RegistryClient(stub.host, credentials=credentials) as client, pytest.raises(AuthError) as caught:
        client.list_tags("lab/app")
    assert str(caught.value) == (
        f"registry {stub.host} names the token service {realm}, which is plain HTTP: the credentials "
        f"of 'alice' are not sent there in the clear; list 0.0.0.0 as an insecure registry to allow it")
    assert token_requests(stub) == []


def test_plain_http_token_service_on_a_host_listed_as_insecure(stub: Stub) -> None:
    realm = f"http://0.0.0.0:{stub.host.split(':')[1]}/token"
    challenge(stub, f'Bearer realm="{realm}",service="stub"')
    credentials = Credentials(USER, PASSWORD, "test")
    with RegistryClient(stub.host, credentials=credentials, insecure_registries=["0.0.0.0:1"]) as client, \
            pytest.raises(AuthError, match="refused the credentials of 'alice'"):
        client.list_tags("lab/app")  # the stub keeps answering 401, even to the token
    [headers] = token_requests(stub)
    assert headers["Authorization"] == f"Basic {credentials.basic()}"


def test_anonymous_token_from_a_plain_http_service_is_fine(stub: Stub) -> None:
    challenge(stub, f'Bearer realm="http://0.0.0.0:{stub.host.split(":")[1]}/token",service="stub"')
    with RegistryClient(stub.host, anonymous=True) as client, pytest.raises(AuthError, match="denied"):
        client.list_tags("lab/app")
    [headers] = token_requests(stub)
    assert "Authorization" not in headers


@pytest.mark.parametrize(("value", "message"), [
    ('Bearer service="stub",scope="repository:lab/app:pull"',
     "asks for a bearer token but names no token service (realm)"),
    ('Bearer realm="ftp://host/token"', "names the token service ftp://host/token, which is not an HTTP URL"),
])
def test_unusable_bearer_challenge_is_one_auth_error(stub: Stub, value: str, message: str) -> None:
    challenge(stub, value)
    with RegistryClient(stub.host, anonymous=True) as client, pytest.raises(AuthError) as caught:
        client.list_tags("lab/app")
    assert str(caught.value) == f"registry {stub.host} {message}"


@pytest.mark.parametrize("answer", [b"[]", b'"t0k3n"', b"null", b"{not json"])
def test_token_service_answer_that_is_not_a_json_object(stub: Stub, answer: bytes) -> None:
    realm = f"http://{stub.host}/token"
    challenge(stub, f'Bearer realm="{realm}",service="stub"')
    stub.on("GET", "/token", Reply(200, {"Content-Type": "application/json"}, answer))
    with RegistryClient(stub.host, anonymous=True) as client, pytest.raises(AuthError) as caught:
        client.list_tags("lab/app")
    assert str(caught.value) == (f"token service {realm} of registry {stub.host} answered something "
                                 "other than a JSON object")

