"""The one adapter over oras-py and requests: HTTP to a registry with timeouts, bounded retries and auth.

oras's TokenAuth answers bearer challenges (anonymous or with Basic credentials); Basic
challenges, retries, timeouts and error messages are ours. Nothing here logs a secret.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import requests
from oras.auth.token import TokenAuth
from oras.auth.utils import parse_auth_header

from ligoenv.oci.credentials import Credentials
from ligoenv.oci.errors import AuthError, RegistryError, RegistryUnavailable
from ligoenv.oci.hosts import hostname, is_loopback, plain_http
from ligoenv.oci.httperrors import error_text, reason, retry_after, url_path, without_query
from ligoenv.oci.responsebody import AnswerTooSlow, BodyStream, Clock, attempt_deadline, preload, read_upto
from ligoenv.oci.version import __version__

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class FileSlice:
    """`size` bytes of a file from `offset`: a blob inside an archive, uploaded without a copy."""

    path: Path
    offset: int
    size: int


Body = bytes | Path | FileSlice | None


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff: a dead registry fails in seconds, a busy one gets a few tries."""

    retries: int = 3
    base: float = 0.25
    cap: float = 2.0
    max_retry_after: float = 10.0
    budget: float = 15.0  # seconds a request may spend in all, tries and waits together
    timeout_retries: int = 1  # a timed-out try costs a whole timeout: one more at most

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        return min(self.cap, self.base * 2.0**attempt)

    def allows(self, attempt: int, timeouts: int, spent: float) -> bool:
        """Whether try number `attempt + 1` may follow, `timeouts` tries having timed out and
        `spent` seconds having passed (the coming wait included)."""
        return attempt < self.retries and timeouts <= self.timeout_retries and spent < self.budget

    def try_timeout(self, timeout: tuple[float, float], spent: float) -> tuple[float, float]:
        """(connect, read) timeouts of a try that follows `spent` seconds: never past the budget,
        so that a registry that accepts and never answers costs the budget, not two timeouts."""
        left = max(self.budget - spent, 0.001)
        return min(timeout[0], left), min(timeout[1], left)


class Pacer(Protocol):
    """Paces the requests to one registry that several threads share (e.g. a sync run)."""

    def wait(self) -> None:
        """Called before every request is sent; returns when it may go."""

    def pause(self, seconds: float) -> None:
        """The registry asked us to slow down (429, or 503 with Retry-After): hold every
        request for `seconds`, not only the one that was refused."""


class _Retry(Exception):
    """A failure worth another try: a connection that failed, or 408, 429 or a 5xx answer.

    A try that ran out of time gives `waiting`, what did not come ("no answer"), so that the
    last message can say how long we waited in all rather than how long the last try had.
    """

    def __init__(self, message: str, retry_after: float | None = None, repeated: bool = False,
                 timed_out: bool = False, waiting: str | None = None) -> None:
        super().__init__(message)
        self.message, self.retry_after, self.repeated = message, retry_after, repeated
        self.timed_out, self.waiting = timed_out or waiting is not None, waiting

    def final(self, attempts: int, waited: float) -> str:
        if self.repeated:
            return f"{self.message} {attempts} times: try again later"
        if self.waiting is not None:
            tries = f" ({attempts} tries)" if attempts > 1 else ""
            return f"{self.waiting} in {waited:.1f} s{tries}"
        return self.message


class _Session(requests.Session):
    """A requests session that bounds every call, oras's included: the default timeout, and a
    body that is not streamed (or is an error) must arrive whole within the read timeout."""

    def __init__(self, registry: str, timeout: tuple[float, float], clock: Clock, pool: int = 16) -> None:
        super().__init__()
        self.registry, self.default_timeout, self.clock = registry, timeout, clock
        self.headers["User-Agent"] = f"ligoenv/{__version__}"
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool, max_retries=0)
        self.mount("http://", adapter)
        self.mount("https://", adapter)
        self._environment: dict[tuple[str, str], Any] = {}

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any,
                                   cert: Any) -> Any:
        """requests scans the whole environment for proxy settings twice per request, a large
        share of a HEAD's cost; the environment is read once per host instead."""
        if proxies or verify is not None or cert is not None:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urllib.parse.urlsplit(str(url))
        key = (parts.scheme, parts.netloc)
        if key not in self._environment:
            self._environment[key] = super().merge_environment_settings(url, {}, stream, None, None)
        return {**self._environment[key], "stream": stream}

    def request(self, method: str | bytes, url: Any, *args: Any,
                **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.default_timeout
        stream = kwargs.get("stream", False)
        kwargs["stream"] = True  # requests would read the body with no limit on time: a trickle
        response = super().request(method, url, *args, **kwargs)  # could hang it forever
        if not stream or response.status_code >= 400:
            timeout = kwargs["timeout"]
            read_timeout = float(timeout[1] if isinstance(timeout, tuple) else timeout)
            # an upload took its own time: the answer's deadline starts when its headers came
            deadline = (self.clock() + read_timeout if kwargs.get("data") else
                        attempt_deadline(response, read_timeout, self.clock))
            preload(response, self.registry, read_timeout, deadline, self.clock)
        return response


class Transport:
    """HTTP to one registry. `request()` returns any response except auth failures and
    exhausted retries, which it raises as AuthError and RegistryUnavailable.

    Time is bounded: `connect_timeout` to connect; an answer (but a streamed body) must arrive
    whole within `timeout` of its request; a streamed body may take as long as it needs but not
    stall for `timeout`. A try that timed out is retried once at most, and none is retried
    once the request has spent the retry budget, tries and waits together.
    """

    def __init__(self, registry: str, *, host: str | None = None, insecure: bool | None = None,
                 timeout: float = 30.0, connect_timeout: float = CONNECT_TIMEOUT,
                 retry: RetryPolicy | None = None,
                 credentials: Credentials | Callable[[], Credentials | None] | None = None,
                 insecure_hosts: Iterable[str] = (), pacer: Pacer | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time, monotonic: Clock = time.monotonic) -> None:
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
        self._pacer = pacer
        self._sleep, self._clock, self._monotonic = sleep, clock, monotonic
        self._session = _Session(registry, self.timeout, monotonic)
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
        """A response whose body is read (under the deadline) unless `stream`; see `stream_body`."""
        url = self.url(path)
        attempt, timeouts, spent = 0, 0, 0.0
        started = self._monotonic()
        while True:
            began = self._monotonic()
            timeout = self.retry.try_timeout(self.timeout, spent)
            try:
                return self._authenticated(method, url, scope, headers, body, params, stream, timeout)
            except _Retry as failure:
                delay = self.retry.delay(attempt, failure.retry_after)
                timeouts += failure.timed_out
                spent += self._monotonic() - began + delay
                if not self.retry.allows(attempt, timeouts, spent):
                    waited = self._monotonic() - started
                    raise RegistryUnavailable(failure.final(attempt + 1, waited)) from None
                log.debug("retrying %s %s in %.2f s: %s", method, without_query(url), delay, failure)
            self._sleep(delay)
            attempt += 1

    def stream_body(self, response: requests.Response, what: str) -> BodyStream:
        """A streamed response's body, as it arrives: only a stall of `timeout` seconds ends it."""
        return BodyStream(response, self.registry, what, self.timeout[1], clock=self._monotonic)

    def read_body(self, response: requests.Response, what: str, limit: int) -> bytes:
        """A streamed response's whole body (at most `limit` bytes), within `timeout` seconds of
        the request, however slowly it trickles."""
        deadline = attempt_deadline(response, self.timeout[1], self._monotonic)
        return read_upto(BodyStream(response, self.registry, what, self.timeout[1], deadline=deadline,
                                    clock=self._monotonic), limit)

    def _authenticated(self, method: str, url: str, scope: str, headers: Mapping[str, str] | None,
                       body: Body, params: Mapping[str, str] | None, stream: bool,
                       timeout: tuple[float, float]) -> requests.Response:
        """One try, answering at most one authentication challenge."""
        response = self._once(method, url, scope, headers, body, params, stream, timeout)
        if response.status_code == 401:
            response.close()
            self._authenticate(response, scope)
            response = self._once(method, url, scope, headers, body, params, stream, timeout)
        if response.status_code in (401, 403):
            refused = self._refused(response, scope)
            response.close()
            raise refused
        return response

    def _once(self, method: str, url: str, scope: str, headers: Mapping[str, str] | None,
              body: Body, params: Mapping[str, str] | None, stream: bool,
              timeout: tuple[float, float]) -> requests.Response:
        try:
            response = self._send(method, url, scope, headers, body, params, stream, timeout)
        except requests.exceptions.SSLError as error:
            raise RegistryError(
                f"TLS with registry {self.registry} failed ({reason(error, timeout)}); "
                "if it serves plain HTTP, list it as an insecure registry") from None
        except (requests.ConnectionError, requests.Timeout) as error:
            missing = "no connection" if isinstance(error, requests.ConnectTimeout) else "no answer"
            raise _Retry(f"registry {self.registry} is unreachable: {reason(error, timeout)}",
                         waiting=f"registry {self.registry} is unreachable: {missing}"
                         if isinstance(error, requests.Timeout) else None) from None
        except AnswerTooSlow as error:  # an answer that stalled or came too slowly
            raise _Retry(error.message, waiting=error.waiting) from None
        except RegistryUnavailable as error:  # an answer that broke off: it cost time all the same
            raise _Retry(error.message, timed_out=True) from None
        status = response.status_code
        if _retryable(status):
            response.close()
            wait = retry_after(response.headers.get("Retry-After"), self._clock())
            if self._pacer is not None and (status == 429 or wait is not None):
                self._pacer.pause(self.retry.delay(0, wait))
            raise _Retry(f"registry {self.registry} answered {status} {response.reason} to {method} "
                         f"{url_path(url)}", wait, repeated=True)
        return response

    def _send(self, method: str, url: str, scope: str, headers: Mapping[str, str] | None,
              body: Body, params: Mapping[str, str] | None, stream: bool,
              timeout: tuple[float, float]) -> requests.Response:
        all_headers = dict(headers or {})
        if self._pacer is not None:
            self._pacer.wait()
        if _same_host(url, self.base_url):
            all_headers.update(self._auth_header(scope))
        with _opened(body) as data:
            return self._session.request(method, url, headers=all_headers, data=data, params=params,
                                         stream=stream, allow_redirects=True, timeout=timeout)

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
        oras_auth.session = _TokenService(self._session, self.registry, without_query(challenge.realm))
        oras_auth._tls_verify = True
        if credentials is not None:
            oras_auth.set_basic_auth(credentials.username, credentials.password)
        try:
            token = oras_auth.request_token(challenge)
        except (requests.ConnectionError, requests.Timeout) as error:
            raise RegistryUnavailable(f"token service of registry {self.registry} is unreachable: "
                                      f"{reason(error, self.timeout)}") from None
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
            raise AuthError(f"registry {self.registry} names the token service {without_query(realm)}, "
                            "which is not an HTTP URL")
        in_clear = parts.scheme == "http" and not is_loopback(parts.netloc)
        if in_clear and credentials is not None and parts.hostname not in self.insecure_hosts:
            raise AuthError(f"registry {self.registry} names the token service {without_query(url)}, "
                            f"which is plain HTTP: the credentials of {credentials.username!r} are not sent "
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


@contextmanager
def _opened(body: Body) -> Iterator[bytes | BinaryIO | _SliceReader | None]:
    # A file is reopened on every attempt, so a retried upload streams from the start again.
    if isinstance(body, Path):
        with body.open("rb") as handle:
            yield handle
    elif isinstance(body, FileSlice):
        with body.path.open("rb") as handle:
            handle.seek(body.offset)
            yield _SliceReader(handle, body.size)
    else:
        yield body


class _SliceReader:
    """Reads at most `size` bytes; its len() is what requests sends as Content-Length."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self._handle, self._left, self._size = handle, size, size

    def __len__(self) -> int:
        return self._size

    def read(self, n: int = -1) -> bytes:
        n = self._left if n is None or n < 0 else min(n, self._left)
        data = self._handle.read(n) if n else b""
        self._left -= len(data)
        return data


def _retryable(status: int) -> bool:
    return status in (408, 429) or (status >= 500 and status not in (501, 505))


def _same_host(url: str, base_url: str) -> bool:
    return url.startswith(base_url + "/") or url == base_url
