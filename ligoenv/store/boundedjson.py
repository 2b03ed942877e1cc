"""JSON from outside (webhooks, queue requests, index files), refused when nested deeper than
any document we accept needs.

Python's json parser and the validators recurse: a document nested a thousand deep would reach
the interpreter's recursion limit inside them (and a garbage collection that happens to run a
finaliser down there fails too). So the depth is measured on the text first, without recursing,
and a document that is too deep is never parsed.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 64  # our deepest schema nests 6 levels; webhook senders' extra fields a few more

# Strings (whose brackets do not count) and runs of anything that is no bracket or quote.
_NOT_NESTING = re.compile(r'"(?:[^"\\]|\\.)*"|[^\[\]{}"]+')


class TooDeep(ValueError):
    pass


def nesting_depth(text: str) -> int:
    """How deep arrays and objects nest in JSON `text` (0 for a scalar)."""
    depth = deepest = 0
    for char in _NOT_NESTING.sub("", text):
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def loads(raw: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """The document in `raw`; ValueError when it is not JSON or nests deeper than `max_depth`."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    if nesting_depth(text) > max_depth:
        raise TooDeep(f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(raw)
    except RecursionError:  # not reached after the check above; kept as a last guard
        raise TooDeep(f"JSON nested deeper than {max_depth} levels") from None
