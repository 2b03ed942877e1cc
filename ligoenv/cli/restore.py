"""`ligoenv restore FILE.tar [--to REGISTRY/PREFIX]`: an archive back into the cache or a registry."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from ligoenv.cli.common import Invocation, invocation, note, out, print_json

if TYPE_CHECKING:
    import typer

    from ligoenv.client.restore import RestoreSummary

HELP = """Verify every blob of an archive written by `ligoenv archive` (a damaged or altered archive is
refused, naming the blob), then either load it into the local cache, unpacking this machine's
image of each environment so that `ligoenv run --lock` works with no registry at all, or, with
--to, push every environment to another registry under its original digests.

The archive's lockfile is written to --lockfile (default ligoenv.lock) unless an identical one
is there already.
"""


def run(inv: Invocation, archive: str, *, to: str | None = None, lockfile: str | None = None,
        platform: str | None = None, as_json: bool = False) -> int:
    from ligoenv.cli.common import make_resolver, parse_platform
    from ligoenv.client.archive_records import ArchiveRecords
    from ligoenv.client.restore import restore_to_cache, restore_to_registry, write_restored_lockfile
    from ligoenv.oci.platform import Platform

    settings = inv.settings()
    path = Path(archive).absolute()
    records = ArchiveRecords(settings.cache, inv.clock)
    if to:
        summary = restore_to_registry(path, to, records=records,
                                      client_for=make_resolver(settings, None).client)
    else:
        summary = restore_to_cache(path, settings.cache, platform=parse_platform(platform) or Platform.host(),
                                   records=records, note=note)
    lockfile_out = Path(lockfile or "ligoenv.lock").absolute()
    written = write_restored_lockfile(summary, lockfile_out)
    if as_json:
        print_json(_json(summary, lockfile_out))
        return 0
    for item in summary.environments:
        where = item.pushed or (str(item.tree) if item.tree else "blobs cached")
        out(f"restored {item.name}: {item.environment.canonical} -> {where}")
    out(f"{path}: every blob verified ({summary.sha256}); lockfile "
        f"{'written to' if written else 'already at'} {lockfile_out}")
    return 0


def _json(summary: "RestoreSummary", lockfile: Path) -> dict[str, object]:
    return {"archive": str(summary.archive), "sha256": str(summary.sha256), "lockfile": str(lockfile),
            "environments": {item.name: {"canonical": item.environment.canonical,
                                         "platforms": [i.platform for i in item.images],
                                         "tree": str(item.tree) if item.tree else None,
                                         "pushed": item.pushed}
                             for item in summary.environments}}


def register(app: "typer.Typer") -> None:
    import typer

    from ligoenv.cli import options

    @app.command("restore", help=HELP, short_help="Restore an archive into the cache or a registry.")
    def restore(
        ctx: typer.Context,
        archive: Annotated[str, typer.Argument(help="archive written by `ligoenv archive`",
                                               metavar="FILE.tar")],
        to: Annotated[str | None, typer.Option(
            "--to", help="push to this registry instead, under PREFIX/<repository>",
            metavar="REGISTRY[/PREFIX]")] = None,
        lockfile: Annotated[str | None, typer.Option(
            "--lockfile", help="where to write the archive's lockfile [default: ligoenv.lock]",
            metavar="FILE")] = None,
        platform: options.Platform = None,
        as_json: options.Json = False,
    ) -> None:
        raise typer.Exit(run(invocation(ctx.obj), archive, to=to, lockfile=lockfile, platform=platform,
                             as_json=as_json))
