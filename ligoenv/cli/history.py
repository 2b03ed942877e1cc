"""`ligoenv history REF`: which digest a tag pointed at, and when, from the publish index."""

from typing import TYPE_CHECKING, Annotated

from ligoenv.cli.common import (
    Invocation,
    invocation,
    load_lockfile,
    out,
    parse_when,
    print_json,
    table,
)
from ligoenv.oci.errors import NotFound, UsageError

if TYPE_CHECKING:
    import typer

HELP = """Show the tag history of REF recorded in the publish index: digest, from, until, source.

A lockfile environment name stands for the reference it locked. --limit N shows the newest N
events, --since and --before keep those that started in that window: to page back, pass the
oldest FROM shown as the next --before. Only the history segments needed are read.
"""


def run(inv: Invocation, text: str, *, index: str | None = None, lock: str | None = None,
        as_json: bool = False, limit: int | None = None, since: str | None = None,
        before: str | None = None) -> int:
    from ligoenv.oci.reference import Reference
    from ligoenv.store.index import open_index_reader
    from ligoenv.store.times import format_time

    settings = inv.settings(index=index, lockfile=lock)
    lockfile = load_lockfile(settings)
    found = lockfile.find(text) if lockfile is not None else None
    ref = found[1].pinned() if found else Reference.parse(text)
    if ref.tag is None:
        # `latest` would be a guess: a digest has no history, only a tag has.
        raise UsageError(f"history shows what a tag meant; {ref.display()} is pinned by digest: "
                         "name its tag")
    if not settings.index:
        raise UsageError("history comes from a publish index: pass --index LOCATION or set LIGOENV_INDEX")
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be at least 1, not {limit}")
    repo = open_index_reader(settings.index).get(ref.registry, ref.repository)
    tag = ref.tag
    window = {"since": parse_when(since) if since else None,
              "before": parse_when(before) if before else None}
    events = repo.history(tag, limit=limit, **window)
    if not events:
        what = " in that window" if since or before else ""
        raise NotFound(f"index {settings.index} has no history for {ref.name}:{tag}{what}")
    rows = [{"digest": str(e.digest) if e.digest else None, "from": format_time(e.since),
             "until": format_time(e.until) if e.until else None, "source": e.source, "event": e.event}
            for e in events]
    if as_json:
        print_json({"reference": f"{ref.name}:{tag}", "history": rows})
        return 0
    out(table([[r["digest"] or "(untagged)", r["from"] or "", r["until"] or "now", r["source"] or ""]
               for r in rows],
              ["DIGEST", "FROM", "UNTIL", "SOURCE"]))
    return 0


def register(app: "typer.Typer") -> None:
    import typer

    from ligoenv.cli import options

    @app.command("history", help=HELP, short_help='Show which digest a tag pointed at, and when.')
    def history(
        ctx: typer.Context,
        ref: Annotated[str, typer.Argument(
            help="image reference (its tag) or environment name", metavar="REF")],
        index: options.Index = None,
        lock: options.Lock = None,
        as_json: options.Json = False,
        limit: Annotated[int | None, typer.Option(
            "--limit", help="show only the newest N events", metavar="N")] = None,
        since: Annotated[str | None, typer.Option(
            "--since", help="only events from this time on", metavar="TIME")] = None,
        before: Annotated[str | None, typer.Option(
            "--before", help="only events before this time (to page back)", metavar="TIME")] = None,
    ) -> None:
        raise typer.Exit(run(invocation(ctx.obj), ref, index=index, lock=lock, as_json=as_json,
                             limit=limit, since=since, before=before))
