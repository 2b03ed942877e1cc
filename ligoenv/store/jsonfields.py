"""Typed reads of decoded JSON from a file (a lockfile, an index file), every error naming the
field by its dotted path: `lockfile x is invalid: environments.gwpy.digest: expected a string`.

The schemas say what a valid file is; these readers are what the code relies on, so a file that
skipped validation (the cheap read of a lockfile, an index on a mirror) still fails on the field,
in one line, never with a KeyError or a TypeError.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from ligoenv.oci.digest import Digest
from ligoenv.oci.errors import LigoenvError

T = TypeVar("T")
Kind = type | tuple[type, ...]


class JsonFields:
    """Reads fields of `what` (a file's description, the start of every message), failing with
    `error`. `where` is the dotted path of the enclosing object, ending in `.` (or empty)."""

    def __init__(self, what: str, error: type[LigoenvError]) -> None:
        self.what = what
        self.error = error

    def fail(self, where: str, problem: str) -> LigoenvError:
        return self.error(f"{self.what}: {where}: {problem}")

    def get(self, obj: Any, key: str, kind: Kind, where: str = "") -> Any:
        """`obj[key]`, which must be there and of `kind` (a bool is no integer)."""
        if not isinstance(obj, dict):
            raise self.fail(where.rstrip(".") or "(top level)", "expected an object")
        if key not in obj:
            raise self.fail(f"{where}{key}", "missing")
        value = obj[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise self.fail(f"{where}{key}", f"expected {kind_name(kind)}")
        return value

    def optional(self, obj: Any, key: str, kind: Kind, where: str = "") -> Any:
        """`obj[key]` of `kind`, or None when it is absent or null."""
        if isinstance(obj, dict) and obj.get(key) is None:
            return None
        return self.get(obj, key, kind, where)

    def digest(self, text: Any, where: str) -> Digest:
        try:
            return Digest.parse(str(text))
        except LigoenvError:
            raise self.fail(where, f"{text!r} is not a digest") from None

    def time(self, text: Any, where: str) -> datetime:
        """An RFC 3339 time with its zone (`...Z` or an offset), in UTC."""
        try:
            when = datetime.fromisoformat(str(text))
        except ValueError:
            raise self.fail(where, f"{text!r} is not an RFC 3339 time") from None
        if when.tzinfo is None:
            raise self.fail(where, f"{text!r} has no time zone (expected ...Z)")
        return when.astimezone(UTC)

    def parsed(self, parse: Callable[[str], T], text: str, where: str) -> T:
        """`parse(text)`, its error (a LigoenvError or ValueError) reported against `where`."""
        try:
            return parse(text)
        except (LigoenvError, ValueError) as error:
            raise self.fail(where, str(error)) from None


def kind_name(kind: Kind) -> str:
    names = {str: "a string", dict: "an object", list: "an array", int: "an integer",
             type(None): "null"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)
