"""The fast path: `resolve` and `run` answered before typer (and the 100 ms it costs) is imported.

Their options are declared once, as a table; `split_args` cuts a plain command line with it, and
the typer command that handles everything else is built from the same table, so the two parsers
cannot drift apart.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any


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


# Help texts of options several commands share (the typer declarations in options.py and the
# option tables of the fast-path commands).
PLATFORM_HELP = "[default: this machine's]"
INDEX_HELP = "publish index: a publish root, CVMFS mount or http(s) mirror"
LOCK_HELP = "lockfile [default: ligoenv.lock]"


@dataclass(frozen=True)
class SplitArgs:
    """A command line cut into options, positional arguments and what follows `--`."""

    options: dict[str, list[str]]
    positional: list[str]
    after_separator: list[str] | None  # None: there was no `--`

    def last(self, *names: str) -> str | None:
        values = [v for name in names for v in self.options.get(name, [])]
        return values[-1] if values else None

    def every(self, *names: str) -> list[str]:
        return [v for name in names for v in self.options.get(name, [])]


def split_args(args: list[str], valued: tuple[str, ...], flags: tuple[str, ...]) -> SplitArgs | None:
    """Cut `args` the way click would, or None when anything is unusual (help, unknown options).

    The fast paths use it to answer before typer is imported; None sends the command line to
    typer, which owns help texts and error messages.
    """
    options: dict[str, list[str]] = {}
    positional: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            return SplitArgs(options, positional, args[index + 1:])
        if arg.startswith("-") and arg != "-":
            name, equals, value = arg.partition("=")
            if name in flags and not equals:
                options.setdefault(name, []).append("")
            elif name in valued and (equals or index + 1 < len(args)):
                if not equals:
                    index += 1
                    value = args[index]
                options.setdefault(name, []).append(value)
            else:
                return None
        else:
            positional.append(arg)
        index += 1
    return SplitArgs(options, positional, None)
