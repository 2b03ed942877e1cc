"""`ligoenv path REF`: the published tree of an image, e.g. for HTCondor's MY.SingularityImage."""

from typing import TYPE_CHECKING

from ligoenv.cli.common import Invocation, invocation, load_lockfile, make_resolver, out, parse_platform
from ligoenv.errors import NotFound

if TYPE_CHECKING:
    import typer

HELP = """Print the path of REF's unpacked tree in the publish index (a CVMFS mount or publish root),
for the platform of this machine or --platform. It never moves: it is named by digest.

    MY.SingularityImage = "$(ligoenv path REF)"
"""


def run(inv: Invocation, ref: str, *, platform: str | None = None, lock: str | None = None,
        index: str | None = None) -> int:
    from ligoenv.oci.platform import Platform
    from ligoenv.runtimes.local import published_tree

    settings = inv.settings(lockfile=lock, index=index)
    resolver = make_resolver(settings, load_lockfile(settings))
    wanted = parse_platform(platform) or Platform.host()
    answer = resolver.resolve(ref, platform=wanted)
    tree = published_tree(resolver, answer, wanted)
    if tree is None:
        where = f"index {settings.index}" if settings.index else "no publish index (set LIGOENV_INDEX)"
        raise NotFound(f"{answer.pinned(wanted)} has no published tree on this machine: {where}")
    out(str(tree.path))
    return 0


def register(app: "typer.Typer") -> None:
    import typer

    from ligoenv.cli import options

    @app.command("path", help=HELP, short_help='Print the published tree of an image (HTCondor).')
    def path(
        ctx: typer.Context,
        ref: options.Ref,
        platform: options.Platform = None,
        lock: options.Lock = None,
        index: options.Index = None,
    ) -> None:
        raise typer.Exit(run(invocation(ctx.obj), ref, platform=platform, lock=lock, index=index))
