"""`ligoenv verify [LOCKFILE]`: is the lockfile valid, and is every pinned digest still available?"""

from typing import TYPE_CHECKING, Any

from ligoenv.cli.common import Invocation, invocation, load_lockfile, make_resolver, out, print_json
from ligoenv.client.archive_records import ArchiveRecords
from ligoenv.client.lockpins import check_pins
from ligoenv.oci.errors import NotFound, RegistryError

if TYPE_CHECKING:
    import typer

HELP = """Check the lockfile against its schema and that every pinned digest can still be fetched
(from the publish index, else with a HEAD to the registry, else from an archive that
`ligoenv archive` wrote or `ligoenv restore` read on this machine), and that each platform's
pinned manifest is the locked index's own entry for that platform.

Tags that moved since locking are reported for information (exit 0). Exits 3 naming each pinned
digest that is gone.
"""


def run(inv: Invocation, lockfile_path: str | None = None, *, index: str | None = None,
        as_json: bool = False) -> int:
    settings = inv.settings(lockfile=lockfile_path, index=index)
    lockfile = load_lockfile(settings, strict=True)
    if lockfile is None:
        raise NotFound(f"no lockfile {settings.lockfile}: create one with `ligoenv lock REF...`")
    resolver = make_resolver(settings, None)
    records = ArchiveRecords(settings.cache)
    pins = resolver.pins()
    results, gone = [], []
    for name, env in sorted(lockfile.environments.items()):
        result = _check(resolver, records, name, env)
        if result["available"] not in (None, "archive"):  # the index, or the registry
            check_pins(name, env, resolver, settings.cache)
        result["pinned"] = _pinned(pins, env)
        results.append(result)
        if result["available"] is None:
            gone.append(f"{name} ({env.pinned().pinned_str()})")
    if as_json:
        print_json({"lockfile": str(settings.lockfile), "environments": results})
    else:
        for result in results:
            out(_line(result))
    if gone:
        raise NotFound(f"{len(gone)} pinned digest(s) no longer available: {', '.join(gone)}")
    return 0


def _check(resolver: Any, records: ArchiveRecords, name: str, env: Any) -> dict[str, Any]:
    pinned = env.pinned()
    archive = records.available(env.digest)
    try:
        where = resolver.where_available(pinned)
    except NotFound:
        where = None
    except RegistryError:
        if archive is None:
            raise
        where = None  # out of reach; the archive still holds it
    try:
        current = resolver.current(pinned) if env.tag else None
        moved = env.tag is not None and current != env.digest
    except RegistryError:
        if archive is None:
            raise
        current, moved = None, False
    return {"name": name, "canonical": env.canonical,
            "available": where or ("archive" if archive else None),
            "archive": archive.path if archive else None,
            "tag": env.tag, "moved": moved, "current": str(current) if current else None}


def _pinned(pins: Any, env: Any) -> list[dict[str, str]]:
    """The pins that keep `env`'s digests in the publish root (the top-level digest's first)."""
    digests = [env.digest, *(pin.manifest for pin in env.platforms.values())]
    found = {(p.label, p.by): p for digest in digests for p in pins.of(digest)}
    return [{"label": p.label, "by": p.by, "why": p.why} for p in found.values()]


def _line(result: dict[str, Any]) -> str:
    if result["available"] is None:
        return f"gone   {result['name']}: {result['canonical']} is no longer available"
    if result["available"] == "archive":
        return (f"ok     {result['name']}: {result['canonical']} is available only from the "
                f"archive {result['archive']} (`ligoenv restore` it)")
    line = f"ok     {result['name']}: {result['canonical']} ({result['available']})"
    if result["moved"]:
        now = result["current"] or "nothing (tag deleted)"
        line += f"; tag {result['tag']} has moved to {now}"
    if result.get("pinned"):
        first = result["pinned"][0]
        line += f"; pinned: kept ({first['by']}: {first['why']})"
    return line


def register(app: "typer.Typer") -> None:
    import typer

    from ligoenv.cli import options

    @app.command("verify", help=HELP, short_help="Check that a lockfile's digests are still available.")
    def verify(
        ctx: typer.Context,
        lockfile: options.LockfileArg = None,
        index: options.Index = None,
        as_json: options.Json = False,
    ) -> None:
        raise typer.Exit(run(invocation(ctx.obj), lockfile, index=index, as_json=as_json))
