"""`ligoenv path REF`: the published tree of an image, e.g. for HTCondor's MY.SingularityImage."""

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ligoenv.cli.common import (
    Invocation,
    invocation,
    load_lockfile,
    make_resolver,
    out,
    parse_platform,
    print_json,
)
from ligoenv.oci.errors import NotFound, UsageError
from ligoenv.store.errors import PublishIndexError

if TYPE_CHECKING:
    import typer

    from ligoenv.client.resolve import Resolution, Resolver
    from ligoenv.client.trees import LocalTree

HELP = """Print the path of REF's unpacked tree in the publish index (a CVMFS mount or publish root),
for the platform of this machine. It never moves: it is named by digest.

With --platform OS/ARCH or --for-host, a tag that the index answers for prints instead its
per-platform link, .multiarch/<os>-<arch>/<registry>/<repo>:<tag> (--for-host: as `uname -m`
spells this machine, e.g. linux-x86_64), which follows the tag to each new push:

    MY.SingularityImage = "$(ligoenv path REF)"

With --json, also the digests, the tree's bind points (directories a runtime can bind host paths
onto) and its provenance (/.ligoenv/provenance.json: where and when it was published).
"""


def run(inv: Invocation, ref: str, *, platform: str | None = None, for_host: bool = False,
        lock: str | None = None, index: str | None = None, as_json: bool = False) -> int:
    from ligoenv.client.trees import published_tree
    from ligoenv.oci.platform import Platform

    if platform and for_host:
        raise UsageError("give --platform or --for-host, not both")
    settings = inv.settings(lockfile=lock, index=index)
    resolver = make_resolver(settings, load_lockfile(settings))
    wanted = parse_platform(platform) or Platform.host()
    answer = resolver.resolve(ref, platform=wanted)
    tree = published_tree(resolver, answer, wanted)
    if tree is None:
        where = f"index {settings.index}" if settings.index else "no publish index (set LIGOENV_INDEX)"
        raise NotFound(f"{answer.pinned(wanted)} has no published tree on this machine: {where}")
    follows_tag = answer.source.startswith("index:") and answer.reference.tag is not None
    link = _platform_link(resolver, answer, tree, platform, for_host) \
        if (platform or for_host) and follows_tag else None
    if as_json:
        print_json({**tree_report(resolver, answer, tree), "link": str(link) if link else None})
    elif link is not None:
        out(str(link))
    else:
        out(str(tree.path))
    return 0


def _platform_link(resolver: "Resolver", answer: "Resolution", tree: "LocalTree",
                   platform: str | None, for_host: bool) -> Path:
    """The tag's link under .multiarch/, once checked to lead where the index says it does."""
    from ligoenv.store import multiarch
    from ligoenv.store.index.reader import LocalIndexReader

    reader = resolver.index
    if not isinstance(reader, LocalIndexReader):
        raise NotFound("per-platform links are paths in a publish root or CVMFS mount; the index "
                       f"is {getattr(reader, 'location', 'none')}: set LIGOENV_INDEX to one")
    ref = answer.reference
    assert ref.tag is not None
    name = multiarch.host_dir_name() if for_host else multiarch.dir_name(platform or "")
    link = multiarch.platform_link(reader.root, ref.registry, ref.repository, ref.tag, name)
    if not link.is_symlink():
        raise NotFound(f"{link} does not exist: this publish root has no per-platform link for the "
                       "tag yet (published by an older server? publish the tag again)")
    if link.resolve() != tree.path.resolve():
        raise PublishIndexError(f"{link} does not lead to {tree.path}, the tree the index names "
                                f"for {ref.name}:{ref.tag}: the tag is moving; try again")
    return link


def tree_report(resolver: "Resolver", answer: "Resolution", tree: "LocalTree") -> dict[str, Any]:
    """What `path --json` prints: where the tree is, what it is, and what it says about itself.

    Bind points come from the tree's own provenance file, else from its index record (the
    record keeps the list of the first publication; a tree published again says what it has now).
    """
    from ligoenv.store.provenance import read_provenance

    provenance = read_provenance(tree.path)
    bind_points = provenance.get("bind_points") if provenance else None
    if not isinstance(bind_points, list):
        bind_points = _indexed_bind_points(resolver, answer, tree)
    return {"path": str(tree.path), "reference": str(answer.reference), "digest": str(answer.digest),
            "manifest": str(tree.manifest), "platform": tree.platform, "bind_points": bind_points,
            "provenance": provenance}


def _indexed_bind_points(resolver: "Resolver", answer: "Resolution", tree: "LocalTree") -> list[str] | None:
    from ligoenv.oci.errors import LigoenvError

    if resolver.index is None:
        return None
    ref = answer.reference
    try:
        record = resolver.index.get(ref.registry, ref.repository).record(tree.manifest)
    except LigoenvError:
        return None
    return list(record.bind_points) if record is not None and record.bind_points is not None else None


def register(app: "typer.Typer") -> None:
    import typer

    from ligoenv.cli import options

    @app.command("path", help=HELP, short_help='Print the published tree of an image (HTCondor).')
    def path(
        ctx: typer.Context,
        ref: options.Ref,
        platform: options.Platform = None,
        for_host: bool = typer.Option(False, "--for-host",
                                      help="the tag's per-platform link for this machine's "
                                           "`uname -m` (linux-x86_64, linux-aarch64)"),
        lock: options.Lock = None,
        index: options.Index = None,
        as_json: options.Json = False,
    ) -> None:
        raise typer.Exit(run(invocation(ctx.obj), ref, platform=platform, for_host=for_host,
                             lock=lock, index=index, as_json=as_json))
