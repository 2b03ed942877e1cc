"""Options declared once, as a table, for the commands answered before typer is imported.

The fast path (`split_args`) and the typer command are both built from the same table, so the
two parsers cannot drift apart: an option added to the table is known to both.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

if TYPE_CHECKING:
    from ligoenv.cli.common import SplitArgs


@dataclass(frozen=True)
class CommandOption:
    """One option: the keyword it is passed as, its spellings, and how it reads."""

    name: str  # the keyword argument of the command's function
    flags: tuple[str, ...]  # spellings, e.g. ("-B", "--bind")
    help: str
    metavar: str | None = None
    repeatable: bool = False  # may be given several times: a list
    switch: bool = False  # takes no value: a bool


def valued(table: Sequence[CommandOption]) -> tuple[str, ...]:
    """Every spelling of the options that take a value."""
    return tuple(flag for option in table if not option.switch for flag in option.flags)


def switches(table: Sequence[CommandOption]) -> tuple[str, ...]:
    """Every spelling of the options that take no value."""
    return tuple(flag for option in table if option.switch for flag in option.flags)


def values(table: Sequence[CommandOption], split: SplitArgs) -> dict[str, Any]:
    """The keyword arguments a fast-path command line gives, as typer would have given them."""
    found: dict[str, Any] = {}
    for option in table:
        if option.switch:
            found[option.name] = any(flag in split.options for flag in option.flags)
        elif option.repeatable:
            found[option.name] = split.every(*option.flags)
        else:
            found[option.name] = split.last(*option.flags)
    return found


def typer_parameters(table: Sequence[CommandOption]) -> list[inspect.Parameter]:
    """The table as keyword-only parameters of a typer command (imports typer)."""
    import typer

    parameters = []
    for option in table:
        kind: Any = bool if option.switch else list[str] | None if option.repeatable else str | None
        info = typer.Option(*option.flags, help=option.help, metavar=option.metavar)
        parameters.append(inspect.Parameter(
            option.name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[kind, info],
            default=False if option.switch else None))
    return parameters
