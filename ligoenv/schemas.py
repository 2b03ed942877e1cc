"""Load the JSON Schemas shipped in the wheel and validate documents against them.

jsonschema is imported only when validating, so that fast paths (resolving from a lockfile)
do not pay for it.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from ligoenv.errors import LigoenvError


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
    import jsonschema

    validator_class = jsonschema.validators.validator_for(load_schema(name))
    return validator_class(load_schema(name), format_checker=validator_class.FORMAT_CHECKER)


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
