"""Words for what went wrong over HTTP: why a connection failed, the registry's own error text,
how long Retry-After says to wait, and URLs shown without their query strings."""

from __future__ import annotations

import email.utils
import socket
from collections.abc import Iterator
from typing import Any

import requests
import urllib3.exceptions


def error_text(response: requests.Response) -> str:
    """The registry's own error code and message, if the body carries the standard error list."""
    try:
        errors = response.json().get("errors") or []
        first = errors[0]
        return f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    except Exception:  # a body that is not the standard error list has nothing to add
        return ""


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date; `now` is wall time)."""
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


def reason(error: BaseException, timeout: tuple[float, float]) -> str:
    """A few words for why a connection failed, found in the chain of wrapped exceptions."""
    if isinstance(error, requests.ConnectTimeout):
        return f"no connection within {timeout[0]:g} s"
    if isinstance(error, requests.ReadTimeout):
        return f"no answer within {timeout[1]:g} s"
    for cause in chain(error):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror | urllib3.exceptions.NameResolutionError):
            return "host name not found"
        if isinstance(cause, ConnectionResetError):
            return "connection reset"
        if isinstance(cause, TimeoutError | socket.timeout):
            return "timed out"
    return type(error).__name__


def chain(error: BaseException) -> Iterator[BaseException]:
    """The error, its arguments, reasons, causes and contexts, each once."""
    seen: set[int] = set()
    todo: list[Any] = [error]
    while todo:
        item = todo.pop(0)
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo.extend([*item.args, getattr(item, "reason", None), item.__cause__, item.__context__])


def url_path(url: str) -> str:
    """`/v2/...` of a URL, without its query string."""
    return "/" + url.split("://", 1)[-1].split("/", 1)[-1].split("?", 1)[0]


def without_query(url: str) -> str:
    """For logs and messages: upload URLs and redirects can carry signed query strings."""
    return url.split("?", 1)[0]
