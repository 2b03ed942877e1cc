"""JSON from the network, refused when nested deeper than any document we accept needs.

Validators and parsers walk documents recursively: a body nested a thousand deep would reach
Python's recursion limit inside them. It is refused here, before anything else reads it.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64  # our deepest schema nests 6 levels; webhook senders' extra fields a few more


class TooDeep(ValueError):
    pass


def loads(raw: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """The document in `raw`; ValueError when it is not JSON or nests deeper than `max_depth`."""
    try:
        document = json.loads(raw)
    except RecursionError:
        raise TooDeep(f"JSON nested deeper than {max_depth} levels") from None
    if _deeper_than(document, max_depth):
        raise TooDeep(f"JSON nested deeper than {max_depth} levels")
    return document


def _deeper_than(document: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` deep (without recursing ourselves)."""
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > limit:
                return True
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children
                         if isinstance(child, dict | list))
    return False
