"""Queue URLs shown to people: database and queue-service URLs with their secrets as `***`."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

# Query parameters that carry a credential (libpq reads `?password=`, for one).
_SECRET_PARAMETERS = ("pass", "token", "secret", "key")


def redact_url(url: str) -> str:
    """`url` fit for messages and logs: the password and secret query values become `***` and
    the fragment is dropped; scheme, user, host and path are kept as written."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url  # no authority, so no password (e.g. "not a url")
    # The last @ ends the user information even when an unescaped password holds / ? # or @:
    # splitting on those first would show part of it.
    userinfo, at, location = rest.rpartition("@")
    if at and ":" in userinfo:
        userinfo = f"{userinfo.partition(':')[0]}:***"
    location = location.partition("#")[0]
    address, question, query = location.partition("?")
    query = _redact_query(query)
    return f"{scheme}://{userinfo}{at}{address}{question if query else ''}{query}"


def _redact_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(_is_secret(name) for name, _ in pairs):
        return query  # as written, not re-encoded
    return urlencode([(name, "***" if _is_secret(name) else value) for name, value in pairs],
                     safe="*")


def _is_secret(name: str) -> bool:
    return any(word in name.lower() for word in _SECRET_PARAMETERS)
