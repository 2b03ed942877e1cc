"""`ligoenv pull REF`: an unpacked, verified copy of the image in the cache or a directory."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from ligoenv.cli.common import (
    Invocation,
    invocation,
    load_lockfile,
    make_resolver,
    note,
    out,
    parse_platform,
)

if TYPE_CHECKING:
    import typer

HELP = """Pull REF by digest and unpack it, ready for Apptainer (as a sandbox) or bubblewrap.

Into the user cache (<cache>/images/<hex of the platform's manifest digest>) unless --output
names a directory. Prints the path of the tree.
"""


def run(inv: Invocation, ref: str, *, output: str | None = None, platform: str | None = None,
        lock: str | None = None, index: str | None = None) -> int:
    from ligoenv.cli.progress import progress_bar
    from ligoenv.client.trees import cached_tree, pull_tree
    from ligoenv.oci.platform import Platform

    settings = inv.settings(lockfile=lock, index=index)
    resolver = make_resolver(settings, load_lockfile(settings))
    wanted = parse_platform(platform) or Platform.host()
    answer = resolver.resolve(ref, platform=wanted)
    progress = progress_bar(f"pulling {answer.reference.name}")
    if output is None:
        tree = cached_tree(resolver, answer, wanted, settings.cache, progress)
        if not tree.pulled:
            note(f"{answer.pinned(wanted)} is already in the cache")
        out(str(tree.path))
        return 0
    if not answer.platforms:
        answer = resolver.from_registry(answer.reference, wanted)
    key, manifest = answer.platform_digest(wanted)
    target = Path(output).absolute()
    pull_tree(resolver, answer, Platform.parse(key), manifest, target, settings.cache, progress)
    out(str(target))
    return 0


def register(app: "typer.Typer") -> None:
    import typer

    from ligoenv.cli import options

    @app.command("pull", help=HELP, short_help='Pull and unpack an image into the cache or a directory.')
    def pull(
        ctx: typer.Context,
        ref: options.Ref,
        output: Annotated[str | None, typer.Option(
            "-o", "--output", help="unpack into this new directory", metavar="DIR")] = None,
        platform: options.Platform = None,
        lock: options.Lock = None,
        index: options.Index = None,
    ) -> None:
        raise typer.Exit(run(invocation(ctx.obj), ref, output=output, platform=platform, lock=lock,
                             index=index))
