"""Authenticating webhook deliveries: shared secrets in headers or the URL, or an HMAC of the body.

Every comparison is constant-time, and no credential ever reaches a log or a response.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from ..config import AuthConfig, AuthType, Secret

_UNAUTHORIZED = "missing or invalid credentials for this endpoint"


def needs_body(auth: AuthConfig) -> bool:
    """HMAC signs the raw body, so it can only be checked once the (capped) body is read."""
    return auth.type is AuthType.HMAC


def check_request(auth: AuthConfig, headers: Headers, path_params: dict[str, str]) -> None:
    """Raise 401 unless the headers or URL carry the endpoint's secret (HMAC: the header exists)."""
    if auth.type is AuthType.NONE:
        return
    assert auth.secret is not None
    if auth.type is AuthType.URL_SECRET:
        _require(auth.secret.matches(path_params.get("secret", "")))
        return
    assert auth.header is not None
    given = headers.get(auth.header)
    _require(given is not None)
    assert given is not None
    if auth.type is AuthType.BEARER:
        scheme, _, token = given.partition(" ")
        _require(scheme.lower() == "bearer" and auth.secret.matches(token.strip()))
    elif auth.type in (AuthType.HEADER, AuthType.GITLAB):
        _require(auth.secret.matches(given))


def check_signature(auth: AuthConfig, headers: Headers, body: bytes) -> None:
    """Raise 401 unless the signature header is `sha256=<hex HMAC-SHA256 of body>`."""
    if auth.type is not AuthType.HMAC:
        return
    assert auth.secret is not None and auth.header is not None
    _require(signature_matches(auth.secret, headers.get(auth.header, ""), body))


def signature_matches(secret: Secret, header_value: str, body: bytes) -> bool:
    algorithm, _, given = header_value.strip().partition("=")
    if algorithm.lower() != "sha256":
        return False
    return hmac.compare_digest(given.lower().encode(), sign(secret.reveal(), body).encode())


def sign(secret: str, body: bytes) -> str:
    """The hex HMAC-SHA256 a sender puts after `sha256=` (CI scripts can do the same with openssl)."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _require(condition: bool) -> None:
    if not condition:
        raise HTTPException(401, _UNAUTHORIZED)
