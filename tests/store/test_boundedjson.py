"""JSON depth is measured on the text, so a hostile document is refused before any parser recurses."""

from __future__ import annotations

import sys

import pytest

from ligoenv.store.boundedjson import MAX_DEPTH, TooDeep, loads, nesting_depth


@pytest.mark.parametrize(("text", "depth"), [
    ("1", 0), ('"[[["', 0), ("[]", 1), ('{"a": [1, {"b": "]]]"}]}', 3),
    ('["\\"[", [[]]]', 3), ('{"a\\\\": [[]]}', 3),
])
def test_depth_ignores_brackets_inside_strings(text: str, depth: int) -> None:
    assert nesting_depth(text) == depth


def test_a_document_deeper_than_the_recursion_limit_is_refused_unparsed() -> None:
    deep = "[" * (sys.getrecursionlimit() * 4) + "]" * (sys.getrecursionlimit() * 4)
    with pytest.raises(TooDeep, match=f"nested deeper than {MAX_DEPTH} levels"):
        loads(deep)
    assert loads(b'{"events": [{"target": {"tag": "v1"}}]}') == {"events": [{"target": {"tag": "v1"}}]}
    with pytest.raises(ValueError):
        loads("{not json")
