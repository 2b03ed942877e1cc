"""Config errors a user can act on: each names the field, and never repeats a secret's value
(the message may go to a terminal, a log or a ticket)."""

from __future__ import annotations

from typing import Any

from ligoenv.store.schemas import field_path, validator

_SECRET_KEYS = {"secret", "password", "token"}


def config_schema_errors(document: dict[str, Any]) -> list[str]:
    """Every way `document` breaks the config schema, best first, each naming the field; the
    value of a secret is never repeated (the message may go to a terminal, a log, a ticket)."""
    errors = sorted(validator("server-config").iter_errors(document), key=lambda e: (len(e.path), e.message))
    return [f"{field_path(error.absolute_path)}: {_message(error)}" for error in errors]


def _message(error: Any) -> str:
    """jsonschema's message, or, when the value is or holds a secret, the reason without it."""
    message = str(error.message)
    if list(error.absolute_path) == ["queue", "url"] and isinstance(error.instance, str):
        from .queue.urls import redact_url  # here: the queue package imports SQLAlchemy

        return message.replace(repr(error.instance), repr(redact_url(error.instance)))
    in_secret = any(isinstance(key, str) and _is_secret(key) for key in error.absolute_path)
    if not in_secret and not _holds_secret(error.instance):
        return message
    kind, expected = error.validator, error.validator_value
    if kind == "type":
        types = [expected] if isinstance(expected, str) else expected
        return "must be " + " or ".join(f"{'an' if t[0] in 'aeiou' else 'a'} {t}" for t in types)
    if kind == "minLength":
        return "must not be empty" if expected == 1 else f"must be {expected} characters or more"
    if kind == "pattern":
        return f"must match {expected!r}"
    if kind == "enum":
        return f"must be one of {expected!r}"
    # Others (required, additionalProperties) name keys, not values; hide the value regardless.
    return message.replace(repr(error.instance), "***")


def _is_secret(key: str) -> bool:
    return key == "auth" or key.split("_")[0] in _SECRET_KEYS


def _holds_secret(value: Any) -> bool:
    """Whether a table (say, endpoints written as a table, not an array) has a secret inside."""
    if isinstance(value, dict):
        return any(_is_secret(str(key)) or _holds_secret(item) for key, item in value.items())
    return isinstance(value, list) and any(_holds_secret(item) for item in value)
