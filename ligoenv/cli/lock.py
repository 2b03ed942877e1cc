"""`ligoenv lock REF...`: pin references by digest into a lockfile a paper can cite."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from ligoenv.cli.common import Invocation, invocation, make_resolver, note, out, parse_platform
from ligoenv.oci.errors import UsageError

if TYPE_CHECKING:
    import typer

HELP = """Resolve each REF and write its digests into the lockfile (default ligoenv.lock).

Environments already in the file stay; a REF locked before keeps its name. Each environment is
named after the repository's last path component unless given with --name NAME=REF. With
--update, the arguments are environment names to re-resolve (none: all of them). Unchanged
pins keep their times, so re-locking the same inputs leaves the file byte for byte the same.
"""


def run(inv: Invocation, args: list[str], *, output: str | None = None, names: list[str] | None = None,
        platforms: list[str] | None = None, update: bool = False, index: str | None = None) -> int:
    from ligoenv.store.lockfile import assign_names, merged, read_lockfile, write_lockfile

    settings = inv.settings(lockfile=output, index=index)
    path = settings.lockfile
    existing = read_lockfile(path) if path.exists() else None
    wanted = [p for p in (parse_platform(text) for text in platforms or []) if p is not None]
    resolver = make_resolver(settings, None)  # a lockfile never answers for itself
    now = inv.clock()
    if update:
        requests = _update_requests(existing, args, names, path)
    else:
        if not args and not names:
            raise UsageError("nothing to lock: give references (or --name NAME=REF, or --update)")
        requests = assign_names(existing, [(None, a) for a in args] + [_named(n) for n in names or []])
    pinned = {}
    for name, reference in requests:
        keep = (wanted or _locked_platforms(existing, name)) if update else wanted
        pinned[name] = resolver.pin(reference, now, keep)
    lockfile = merged(existing, pinned, now)
    write_lockfile(path, lockfile)
    for name in pinned:
        env = lockfile.environments[name]
        state = "unchanged" if existing and existing.environments.get(name) == env else "locked"
        out(f"{state} {name} {env.canonical} ({env.source})")
    note(f"wrote {path}")
    return 0


def _named(text: str) -> tuple[str | None, str]:
    name, sep, reference = text.partition("=")
    if not sep or not name or not reference:
        raise UsageError(f"invalid --name {text!r}: expected NAME=REF")
    return name, reference


def _update_requests(existing: Any, args: list[str], names: list[str] | None,
                     path: Path) -> list[tuple[str, str]]:
    if existing is None:
        raise UsageError(f"--update needs an existing lockfile and {path} does not exist")
    if names:
        raise UsageError("--update re-resolves environments by name; --name adds new ones: "
                         "run them separately")
    chosen = args or sorted(existing.environments)
    return [(name, existing.environment(name).reference) for name in chosen]


def _locked_platforms(existing: Any, name: str) -> list[Any]:
    from ligoenv.oci.platform import Platform

    env = existing.environments.get(name) if existing else None
    return [Platform.parse(key) for key in sorted(env.platforms)] if env else []


def register(app: "typer.Typer") -> None:
    import typer

    from ligoenv.cli import options

    @app.command("lock", help=HELP, short_help='Pin references by digest into a lockfile.')
    def lock(
        ctx: typer.Context,
        args: Annotated[list[str] | None, typer.Argument(
            help="references to lock (environment names with --update)", metavar="REF...")] = None,
        output: Annotated[str | None, typer.Option(
            "-o", "--output", help="lockfile to write [default: ligoenv.lock]", metavar="FILE")] = None,
        names: Annotated[list[str] | None, typer.Option(
            "--name", help="lock REF under NAME (repeatable)", metavar="NAME=REF")] = None,
        platforms: Annotated[list[str] | None, typer.Option(
            "--platform", help="lock only this platform (repeatable) [default: all]",
            metavar="OS/ARCH")] = None,
        update: Annotated[bool, typer.Option(
            "--update", help="re-resolve the named environments, or all")] = False,
        index: options.Index = None,
    ) -> None:
        raise typer.Exit(run(invocation(ctx.obj), args or [], output=output, names=names,
                             platforms=platforms, update=update, index=index))
