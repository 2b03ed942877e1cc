"""`ligoenv resolve REF`: print `registry/repository@sha256:...` (lockfile, then index, then registry).

This is the hot path of scripts and job wrappers, so a plain argparse parser answers well-formed
invocations before typer (and the pydantic it brings) is imported; anything it does not
understand falls through to the typer command, which owns help and error messages.
"""

import argparse
from typing import TYPE_CHECKING, Annotated, Any

from ligoenv.cli.common import (
    Invocation,
    invocation,
    load_lockfile,
    make_resolver,
    out,
    parse_platform,
    parse_when,
    print_json,
)

if TYPE_CHECKING:
    import typer

HELP = """Print the digest REF means now, or at --at, as registry/repository@sha256:....

Answered from the lockfile (an environment whose name or reference matches), then the publish
index (--index or LIGOENV_INDEX: a publish root, CVMFS mount or http(s) mirror), then the
registry. With --platform, prints that platform's manifest digest instead of the top digest.
"""
AT_HELP = ("what the tag meant at this time, from the index history: 2026-03-01, 2026-03-01T12:00, "
           "2026-03-01T12:00Z or with an offset; times without an offset are UTC")


def run(inv: Invocation, ref: str, *, platform: str | None = None, at: str | None = None,
        as_json: bool = False, lock: str | None = None, index: str | None = None) -> int:
    settings = inv.settings(lockfile=lock, index=index)
    resolver = make_resolver(settings, load_lockfile(settings))
    wanted = parse_platform(platform)
    answer = resolver.resolve(ref, platform=wanted, at=parse_when(at) if at else None)
    if as_json:
        print_json(answer.to_json(wanted))
    else:
        out(answer.pinned(wanted))
    return 0


class _NotForUs(Exception):
    """The fast parser met something only the full command line understands."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise _NotForUs(message)


def fast_path(args: list[str], inv: Invocation) -> int | None:
    """Run `resolve` without typer when `args` are plainly well formed; None otherwise."""
    if any(arg in ("-h", "--help") or arg.startswith("--help") for arg in args):
        return None
    parser = _Parser(prog="ligoenv resolve", add_help=False, allow_abbrev=False, exit_on_error=False)
    parser.add_argument("ref")
    for name in ("--platform", "--at", "--lock", "--index"):
        parser.add_argument(name)
    parser.add_argument("--json", action="store_true")
    try:
        ns = parser.parse_args(args)
    except (_NotForUs, argparse.ArgumentError):
        return None
    if ns.ref.startswith("-"):
        return None
    return run(inv, ns.ref, platform=ns.platform, at=ns.at, as_json=ns.json, lock=ns.lock,
               index=ns.index)


def register(app: "typer.Typer") -> None:
    import typer

    from ligoenv.cli import options

    @app.command("resolve", help=HELP, short_help='Print the digest a reference means (now or --at).')
    def resolve(
        ctx: typer.Context,
        ref: options.Ref,
        platform: Annotated[str | None, typer.Option(
            help="print this platform's manifest digest", metavar="OS/ARCH")] = None,
        at: Annotated[str | None, typer.Option(help=AT_HELP, metavar="DATETIME")] = None,
        as_json: options.Json = False,
        lock: options.Lock = None,
        index: options.Index = None,
    ) -> None:
        raise typer.Exit(run(invocation(ctx.obj), ref, platform=platform, at=at, as_json=as_json,
                             lock=lock, index=index))
