"""`ligoenv archive [LOCKFILE] -o FILE.tar`: every locked environment in one citable OCI archive."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from ligoenv.cli.common import Invocation, invocation, load_lockfile, make_resolver, out, print_json
from ligoenv.oci.errors import NotFound

if TYPE_CHECKING:
    import typer

HELP = """Write one OCI image layout tarball holding every locked environment's manifests, configs
and layers (each checked against its digest while written), the lockfile, a CITATION.cff and a
README on running it with ligoenv, skopeo, podman or apptainer.

The same lockfile always gives a byte-identical archive, so its sha256 (printed) can be cited.
Blobs come from the local cache when it has them, else from the registry.
"""


def run(inv: Invocation, lockfile_path: str | None, output: str, *, platforms: list[str],
        index: str | None = None, as_json: bool = False) -> int:
    from ligoenv.cli.common import parse_platform
    from ligoenv.cli.progress import progress_bar
    from ligoenv.client.archive import archive_lockfile
    from ligoenv.client.archive_records import ArchiveRecords
    from ligoenv.oci.cache import LayerCache

    settings = inv.settings(lockfile=lockfile_path, index=index)
    lockfile = load_lockfile(settings, strict=True)
    if lockfile is None:
        raise NotFound(f"no lockfile {settings.lockfile}: create one with `ligoenv lock REF...`")
    resolver = make_resolver(settings, lockfile)
    target = Path(output).absolute()
    summary = archive_lockfile(
        lockfile, target, cache=LayerCache(settings.cache / "layers"), client_for=resolver.client,
        platforms=[p for p in map(parse_platform, platforms) if p is not None],
        records=ArchiveRecords(settings.cache, inv.clock),
        progress=progress_bar(f"archiving to {target.name}"))
    if as_json:
        print_json({"archive": str(summary.path), "sha256": summary.sha256, "size": summary.size,
                    "blobs": summary.blobs,
                    "environments": {a.name: {"canonical": a.environment.canonical,
                                              "platforms": list(a.platforms)}
                                     for a in summary.environments}})
        return 0
    for archived in summary.environments:
        out(f"archived {archived.name}: {archived.environment.canonical} ({', '.join(archived.platforms)})")
    out(f"{summary.path}: {summary.size / 1e6:.1f} MB, {summary.blobs} blobs, {summary.sha256}")
    return 0


def register(app: "typer.Typer") -> None:
    import typer

    from ligoenv.cli import options

    @app.command("archive", help=HELP, short_help="Archive a lockfile's environments in one OCI tarball.")
    def archive(
        ctx: typer.Context,
        lockfile: options.LockfileArg = None,
        output: Annotated[str, typer.Option("-o", "--output", help="the archive to write",
                                            metavar="FILE.tar")] = "ligoenv-archive.tar",
        platform: Annotated[list[str] | None, typer.Option(
            "--platform", help="only these platforms [default: every locked one]",
            metavar="OS/ARCH")] = None,
        index: options.Index = None,
        as_json: options.Json = False,
    ) -> None:
        raise typer.Exit(run(invocation(ctx.obj), lockfile, output, platforms=platform or [],
                             index=index, as_json=as_json))
