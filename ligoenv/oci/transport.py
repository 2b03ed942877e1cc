"""The one adapter over oras-py and requests: HTTP to a registry with timeouts, bounded retries and auth.

oras's TokenAuth answers bearer challenges (anonymous or with Basic credentials); Basic
challenges, retries, timeouts and error messages are ours. Nothing here logs a secret.
"""

from __future__ import annotations

import email.utils
import io
import ipaddress
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import requests
import urllib3.exceptions
from oras.auth.token import TokenAuth
from oras.auth.utils import parse_auth_header

from ligoenv import __version__
from ligoenv.errors import AuthError, RegistryError, RegistryUnavailable
from ligoenv.oci.auth import Credentials

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
Body = bytes | Path | None


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff: a dead registry fails in seconds, a busy one gets a few tries."""

    retries: int = 3
    base: float = 0.25
    cap: float = 2.0
    max_retry_after: float = 10.0
    budget: float = 15.0  # total seconds of sleeping per request

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        return min(self.cap, self.base * 2.0**attempt)


def is_loopback(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1, with or without a port.

    Only what is loopback without asking DNS: `*.localhost` may resolve to any address.
    """
    name = hostname(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def hostname(host: str) -> str:
    """`host[:port]` or `[v6]:port` without the port and brackets, in lower case."""
    name = host.lower()
    if name.startswith("["):
        return name[1:].split("]", 1)[0]
    return name.split(":", 1)[0] if name.count(":") == 1 else name


def plain_http(host: str, insecure: bool | None) -> bool:
    """Plain HTTP only when the caller says so, or (by default) for a loopback registry."""
    return is_loopback(host) if insecure is None else insecure


class _Retry(Exception):
    """A failure worth another try: a connection that failed, or 408, 429 or a 5xx answer."""

    def __init__(self, message: str, retry_after: float | None = None, repeated: bool = False) -> None:
        super().__init__(message)
        self.message, self.retry_after, self.repeated = message, retry_after, repeated

    def final(self, attempts: int) -> str:
        return f"{self.message} {attempts} times: try again later" if self.repeated else self.message


class _Session(requests.Session):
    """A requests session that applies a default timeout to every call, oras's included."""

    def __init__(self, timeout: tuple[float, float], pool: int = 16) -> None:
        super().__init__()
        self.default_timeout = timeout
        self.headers["User-Agent"] = f"ligoenv/{__version__}"
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool, max_retries=0)
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def request(self, method: str | bytes, url: Any, *args: Any,
                **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.default_timeout
        return super().request(method, url, *args, **kwargs)


class Transport:
    """HTTP to one registry. `request()` returns any response except auth failures and
    exhausted retries, which it raises as AuthError and RegistryUnavailable."""

    def __init__(self, registry: str, *, host: str | None = None, insecure: bool | None = None,
                 timeout: float = 30.0, connect_timeout: float = CONNECT_TIMEOUT,
                 retry: RetryPolicy | None = None,
                 credentials: Credentials | Callable[[], Credentials | None] | None = None,
                 insecure_hosts: Iterable[str] = (),
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self.host = host or registry
        self.scheme = "http" if plain_http(self.host, insecure) else "https"
        # where our credentials may travel in the clear (to a token service): hosts the user
        # listed as insecure, and this registry if it is one of them
        self.insecure_hosts = {hostname(h) for h in insecure_hosts} | (
            {hostname(self.host)} if insecure else set())
        self.base_url = f"{self.scheme}://{self.host}"
        self.retry = retry or RetryPolicy()
        self.timeout = (connect_timeout, timeout)
        self._credentials = credentials
        self._sleep, self._clock = sleep, clock
        self._session = _Session(self.timeout)
        self._lock = threading.Lock()
        self._tokens: dict[str, str] = {}  # by scope, e.g. "repository:lab/app:pull"
        self._basic = False  # the registry asked for Basic: send it up front from now on

    @property
    def credentials(self) -> Credentials | None:
        """Our credentials for this registry; a lookup function runs once, when first needed."""
        with self._lock:
            if callable(self._credentials):
                self._credentials = self._credentials()
            return self._credentials

    def close(self) -> None:
        self._session.close()

    def url(self, path: str) -> str:
        return path if "://" in path else f"{self.base_url}{path}"

    def request(self, method: str, path: str, *, scope: str = "", headers: Mapping[str, str] | None = None,
                body: Body = None, params: Mapping[str, str] | None = None,
                stream: bool = False) -> requests.Response:
        url = self.url(path)
        attempt, slept = 0, 0.0
        while True:
            try:
                return self._authenticated(method, url, scope, headers, body, params, stream)
            except _Retry as failure:
                delay = self.retry.delay(attempt, failure.retry_after)
                if attempt >= self.retry.retries or slept + delay > self.retry.budget:
                    raise RegistryUnavailable(failure.final(attempt + 1)) from None
                log.debug("retrying %s %s in %.2f s: %s", method, _safe(url), delay, failure)
            self._sleep(delay)
            slept += delay
            attempt += 1

    def _authenticated(self, method: str, url: str, scope: str, headers: Mapping[str, str] | None,
                       body: Body, params: Mapping[str, str] | None, stream: bool) -> requests.Response:
        """One try, answering at most one authentication challenge."""
        response = self._once(method, url, scope, headers, body, params, stream)
        if response.status_code == 401:
            response.close()
            self._authenticate(response, scope)
            response = self._once(method, url, scope, headers, body, params, stream)
        if response.status_code in (401, 403):
            refused = self._refused(response, scope)
            response.close()
            raise refused
        return response

    def _once(self, method: str, url: str, scope: str, headers: Mapping[str, str] | None,
              body: Body, params: Mapping[str, str] | None, stream: bool) -> requests.Response:
        try:
            response = self._send(method, url, scope, headers, body, params, stream)
        except requests.exceptions.SSLError as error:
            raise RegistryError(
                f"TLS with registry {self.registry} failed ({_reason(error, self.timeout)}); "
                "if it serves plain HTTP, list it as an insecure registry") from None
        except (requests.ConnectionError, requests.Timeout) as error:
            raise _Retry(f"registry {self.registry} is unreachable: {_reason(error, self.timeout)}") from None
        status = response.status_code
        if _retryable(status):
            response.close()
            raise _Retry(f"registry {self.registry} answered {status} {response.reason} to {method} "
                         f"{_path(url)}", _retry_after(response.headers.get("Retry-After"), self._clock()),
                         repeated=True)
        return response

    def _send(self, method: str, url: str, scope: str, headers: Mapping[str, str] | None,
              body: Body, params: Mapping[str, str] | None, stream: bool) -> requests.Response:
        all_headers = dict(headers or {})
        if _same_host(url, self.base_url):
            all_headers.update(self._auth_header(scope))
        with _opened(body) as data:
            return self._session.request(method, url, headers=all_headers, data=data, params=params,
                                         stream=stream, allow_redirects=True)

    def _auth_header(self, scope: str) -> dict[str, str]:
        with self._lock:
            token = self._tokens.get(scope)
        if token:
            return {"Authorization": f"Bearer {token}"}
        credentials = self.credentials if self._basic else None
        return {"Authorization": f"Basic {credentials.basic()}"} if credentials else {}

    def _authenticate(self, response: requests.Response, scope: str) -> None:
        challenge = response.headers.get("Www-Authenticate", "")
        kind = challenge.split(" ", 1)[0].lower()
        if kind == "basic":
            if self.credentials is None:
                raise AuthError(f"registry {self.registry} needs a login: run `docker login "
                                f"{self.registry}` (or set $REGISTRY_AUTH_FILE)")
            self._basic = True
        elif kind == "bearer":
            token = self._bearer_token(response)
            with self._lock:
                self._tokens[scope] = token
        else:
            raise AuthError(f"registry {self.registry} asks for unsupported authentication "
                            f"{kind or '(no challenge)'}")

    def _bearer_token(self, response: requests.Response) -> str:
        # oras's TokenAuth fetches an anonymous token, or one for our Basic credentials, from the
        # token service that we checked first.
        credentials = self.credentials
        challenge = parse_auth_header(response.headers.get("Www-Authenticate", ""))
        challenge.realm = self._token_realm(challenge.realm, credentials)
        oras_auth = TokenAuth()
        oras_auth.session = _TokenService(self._session, self.registry, _safe(challenge.realm))
        oras_auth._tls_verify = True
        if credentials is not None:
            oras_auth.set_basic_auth(credentials.username, credentials.password)
        try:
            token = oras_auth.request_token(challenge)
        except (requests.ConnectionError, requests.Timeout) as error:
            raise RegistryUnavailable(f"token service of registry {self.registry} is unreachable: "
                                      f"{_reason(error, self.timeout)}") from None
        if not token:
            raise self._refused(None, "")
        return str(token)

    def _token_realm(self, realm: str | None, credentials: Credentials | None) -> str:
        """The token service a bearer challenge names, checked before oras may send it our password."""
        if not realm:
            raise AuthError(f"registry {self.registry} asks for a bearer token but names no token "
                            "service (realm)")
        url = realm if "://" in realm else f"{self.scheme}://{realm}"
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AuthError(f"registry {self.registry} names the token service {_safe(realm)}, "
                            "which is not an HTTP URL")
        in_clear = parts.scheme == "http" and not is_loopback(parts.netloc)
        if in_clear and credentials is not None and parts.hostname not in self.insecure_hosts:
            raise AuthError(f"registry {self.registry} names the token service {_safe(url)}, which is "
                            f"plain HTTP: the credentials of {credentials.username!r} are not sent "
                            f"there in the clear; list {parts.hostname} as an insecure registry to "
                            "allow it")
        return url

    def _refused(self, response: requests.Response | None, scope: str) -> AuthError:
        what = f" to {scope.split(':')[1]}" if scope.count(":") >= 2 else ""
        text = error_text(response) if response is not None else ""
        detail = f" ({text})" if text else ""
        credentials = self.credentials
        if credentials is None:
            return AuthError(f"registry {self.registry} denied anonymous access{what}{detail}: check "
                             f"the name, or run `docker login {self.registry}`")
        return AuthError(f"registry {self.registry} refused the credentials of "
                         f"{credentials.username!r} from {credentials.source or 'config'}"
                         f"{what}{detail}: run `docker login {self.registry}` again")


class _TokenService:
    """The session oras fetches tokens through: an answer it cannot read is one AuthError."""

    def __init__(self, session: requests.Session, registry: str, realm: str) -> None:
        self._session, self._registry, self._realm = session, registry, realm

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", url, **kwargs)

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        response = self._session.request(method, url, **kwargs)
        if response.status_code == 200:
            try:
                answer = response.json()
            except ValueError:
                answer = None
            if not isinstance(answer, dict):  # oras would fail on it with an AttributeError
                raise AuthError(f"token service {self._realm} of registry {self._registry} answered "
                                "something other than a JSON object")
        return response


def error_text(response: requests.Response) -> str:
    """The registry's own error code and message, if the body carries the standard error list."""
    try:
        errors = response.json().get("errors") or []
        first = errors[0]
        return f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    except Exception:  # a body that is not the standard error list has nothing to add
        return ""


class ResponseStream(io.RawIOBase):
    """The body of a streamed response; a lost connection becomes RegistryUnavailable."""

    def __init__(self, response: requests.Response, registry: str, what: str) -> None:
        self._raw = response.raw
        self._raw.decode_content = True
        self._registry, self._what = registry, what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._raw.read(len(buffer))
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as error:
            raise RegistryUnavailable(f"registry {self._registry}: connection lost while reading "
                                      f"{self._what} ({type(error).__name__})") from None
        buffer[: len(data)] = data
        return len(data)


def buffered(response: requests.Response, registry: str, what: str) -> BinaryIO:
    return io.BufferedReader(ResponseStream(response, registry, what), buffer_size=1 << 16)


@contextmanager
def _opened(body: Body) -> Iterator[bytes | BinaryIO | None]:
    # A Path is reopened on every attempt, so a retried upload streams from the start again.
    if isinstance(body, Path):
        with body.open("rb") as handle:
            yield handle
    else:
        yield body


def _retryable(status: int) -> bool:
    return status in (408, 429) or (status >= 500 and status not in (501, 505))


def _retry_after(value: str | None, now: float) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


def _reason(error: BaseException, timeout: tuple[float, float]) -> str:
    """A few words for why a connection failed, found in the chain of wrapped exceptions."""
    if isinstance(error, requests.ConnectTimeout):
        return f"no connection within {timeout[0]:g} s"
    if isinstance(error, requests.ReadTimeout):
        return f"no answer within {timeout[1]:g} s"
    for cause in _chain(error):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror | urllib3.exceptions.NameResolutionError):
            return "host name not found"
        if isinstance(cause, ConnectionResetError):
            return "connection reset"
        if isinstance(cause, TimeoutError | socket.timeout):
            return "timed out"
    return type(error).__name__


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[Any] = [error]
    while todo:
        item = todo.pop(0)
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo.extend([*item.args, getattr(item, "reason", None), item.__cause__, item.__context__])


def _same_host(url: str, base_url: str) -> bool:
    return url.startswith(base_url + "/") or url == base_url


def _path(url: str) -> str:
    return "/" + url.split("://", 1)[-1].split("/", 1)[-1].split("?", 1)[0]


def _safe(url: str) -> str:
    # Upload URLs and redirects can carry signed query strings: log without them.
    return url.split("?", 1)[0]
