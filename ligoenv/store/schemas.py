"""Load the JSON Schemas shipped in the wheel and validate documents against them.

jsonschema is imported only when validating, so that fast paths (resolving from a lockfile)
do not pay for it.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

from ligoenv.oci.errors import LigoenvError


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The schema `name` (e.g. `lockfile`, `index`, `webhooks/harbor`) as a dict."""
    # `schemas/` at the top of the repository ships as the data package `ligoenv.schemafiles`.
    path = resources.files("ligoenv.schemafiles").joinpath(f"{name}.schema.json")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def schema_errors(document: Any, name: str) -> list[str]:
    """Every way `document` breaks schema `name`, each naming the field, best first."""
    errors = sorted(validator(name).iter_errors(document), key=lambda e: (len(e.path), e.message))
    return [f"{field_path(error.absolute_path)}: {error.message}" for error in errors]


@cache
def validator(name: str) -> Any:
    """One validator per schema: building one costs more than validating a webhook body."""
    validator_class = strict_validator_class(load_schema(name))
    return validator_class(load_schema(name), format_checker=validator_class.FORMAT_CHECKER)


def strict_validator_class(schema: dict[str, Any]) -> Any:
    """The validator class for `schema`, with `pattern` read as JSON Schema means it.

    Schema patterns are ECMA-262 regular expressions, where `$` ends the string; Python's `$`
    also matches before a final newline, so `^[a-z]+$` would pass "v1\n" on to a parser.
    """
    import jsonschema

    base = jsonschema.validators.validator_for(schema)

    def pattern(validator: Any, regex: str, instance: Any, _schema: Any) -> Any:
        if validator.is_type(instance, "string") and not _ecma_regex(regex).search(instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {regex!r}")

    return jsonschema.validators.extend(base, {"pattern": pattern})


@cache
def _ecma_regex(regex: str) -> re.Pattern[str]:
    """`regex` with each `$` outside a character class made to match at the very end only."""
    out, escaped, in_class = [], False, False
    for char in regex:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "[":
            in_class = True
        elif char == "]":
            in_class = False
        elif char == "$" and not in_class:
            char = r"\Z"
        out.append(char)
    return re.compile("".join(out), re.ASCII)  # ECMA's \d and \w are ASCII only


def validate(document: Any, name: str, error_class: type[LigoenvError], what: str) -> None:
    """Raise `error_class` naming the first bad field when `document` breaks schema `name`."""
    errors = schema_errors(document, name)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise error_class(f"{what}: {errors[0]}{more}")


def field_path(path: Any) -> str:
    """`relay.endpoints[1].kind` for a jsonschema error's absolute path."""
    parts = [f"[{p}]" if isinstance(p, int) else str(p) for p in path]
    return ".".join(parts).replace(".[", "[") or "(top level)"
