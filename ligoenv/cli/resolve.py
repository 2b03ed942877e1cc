"""`ligoenv resolve REF`: print `registry/repository@sha256:...` (lockfile, then index, then registry).

This is the hot path of scripts and job wrappers, so well-formed invocations are answered before
typer (and the pydantic it brings) is imported; anything unusual falls through to the typer
command, which owns help and error messages.
"""

from typing import TYPE_CHECKING, Any

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
from ligoenv.cli.fastpath import (
    INDEX_HELP,
    LOCK_HELP,
    CommandOption,
    split_args,
    switches,
    typer_parameters,
    valued,
    values,
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


OPTIONS = (
    CommandOption("platform", ("--platform",), "print this platform's manifest digest", "OS/ARCH"),
    CommandOption("at", ("--at",), AT_HELP, "DATETIME"),
    CommandOption("as_json", ("--json",), "print JSON", switch=True),
    CommandOption("lock", ("--lock",), LOCK_HELP, "FILE"),
    CommandOption("index", ("--index",), INDEX_HELP, "LOCATION"),
)


def fast_path(args: list[str], inv: Invocation) -> int | None:
    """Run `resolve` without typer when `args` are plainly well formed; None otherwise."""
    split = split_args(args, valued(OPTIONS), switches(OPTIONS))
    if split is None or split.after_separator is not None or len(split.positional) != 1:
        return None
    return run(inv, split.positional[0], **values(OPTIONS, split))


def register(app: "typer.Typer") -> None:
    import inspect

    import typer

    from ligoenv.cli import options as shared

    def resolve(ctx: typer.Context, ref: str, **options: Any) -> None:
        raise typer.Exit(run(invocation(ctx.obj), ref, **options))

    # typer reads the parameters from the signature: REF, then OPTIONS.
    resolve.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        inspect.Parameter("ref", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=shared.Ref),
        *typer_parameters(OPTIONS),
    ])
    app.command("resolve", help=HELP, short_help="Print the digest a reference means (now or --at).")(resolve)
