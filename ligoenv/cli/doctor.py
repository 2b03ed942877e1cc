"""`ligoenv doctor`: what this machine can run, what it can reach, and the settings in effect."""

import os
from typing import TYPE_CHECKING, Annotated, Any

from ligoenv.cli.common import Invocation, invocation, load_lockfile, out, print_json
from ligoenv.oci.errors import LigoenvError

if TYPE_CHECKING:
    import typer

HELP = """Report the container runtimes found, whether CVMFS is mounted, whether the publish index
and the registries (those of the lockfile, or --registry) answer, the bind points of the
lockfile's published trees (and binds in APPTAINER_BIND they lack), and every setting with where
its value came from (command line, environment, your config file, the site's config file, default).
"""


def run(inv: Invocation, *, registries: list[str] | None = None, index: str | None = None,
        as_json: bool = False) -> int:
    from ligoenv.client.settings import OPTIONS

    settings = inv.settings(index=index)
    report: dict[str, Any] = {
        **_runtimes(inv),
        "cvmfs": _cvmfs(),
        "index": _index(settings.index),
        "registries": {host: _registry(host, settings.insecure_registries)
                       for host in registries or _lockfile_registries(settings)},
        "settings": {name: {"value": _text(settings.get(name)), "source": settings.source_of(name)}
                     for name in OPTIONS},
        "config_file": str(settings.config_file),
        "trees": _trees(settings, inv.environ),
        "site_config_file": str(settings.site_file) if settings.site_file else None,
        "warnings": list(settings.warnings),
    }
    if as_json:
        print_json(report)
    else:
        _print(report)
    return 0


def _cvmfs() -> str:
    if os.path.ismount("/cvmfs"):
        return "mounted at /cvmfs"
    if os.path.isdir("/cvmfs"):
        repositories = sorted(os.listdir("/cvmfs"))
        return f"/cvmfs exists ({', '.join(repositories) or 'empty; autofs mounts on access'})"
    return "not available (no /cvmfs)"


def _index(location: str | None) -> str:
    if not location:
        return "none configured (set LIGOENV_INDEX or index in the config file)"
    if location.startswith(("http://", "https://")):
        from ligoenv.store.index import open_index_reader

        try:
            open_index_reader(location).get("docker.io", "library/ligoenv-doctor-probe")
        except LigoenvError as error:
            return f"{location}: {error}"
        return f"{location}: reachable"
    from pathlib import Path

    root = Path(location.removeprefix("file://")).expanduser()
    if not root.is_dir():
        return f"{location}: no such directory"
    has_index = (root / ".ligoenv" / "index").is_dir()
    return f"{location}: {'a publish root' if has_index else 'a directory without .ligoenv/index'}"


def _registry(host: str, insecure: tuple[str, ...]) -> str:
    from ligoenv.oci.errors import AuthError
    from ligoenv.oci.reference import Reference
    from ligoenv.oci.registry import client_for

    try:
        ref = Reference.parse(f"{host}/ligoenv/doctor")
        with client_for(ref, insecure, timeout=5.0, retries=0) as client:
            status = client.ping()
    except AuthError:
        return "reachable (needs credentials: docker login)"
    except LigoenvError as error:
        return str(error)
    return f"reachable (HTTP {status})"


def _lockfile_registries(settings: Any) -> list[str]:
    try:
        lockfile = load_lockfile(settings)
    except LigoenvError:
        return ["docker.io"]
    if lockfile is None or not lockfile.environments:
        return ["docker.io"]
    return sorted({env.registry for env in lockfile.environments.values()})


def _trees(settings: Any, environ: Any) -> dict[str, Any]:
    """Each lockfile environment published on this machine: its tree, its bind points, and the
    binds asked for in APPTAINER_BIND/SINGULARITY_BIND that have no directory to go onto."""
    from ligoenv.cli.common import make_resolver
    from ligoenv.cli.path import tree_report
    from ligoenv.client.trees import published_tree
    from ligoenv.oci.platform import Platform

    try:
        lockfile = load_lockfile(settings)
    except LigoenvError:
        return {}
    if lockfile is None or not settings.index:
        return {}
    resolver = make_resolver(settings, lockfile)
    host = Platform.host()
    found: dict[str, Any] = {}
    for name in sorted(lockfile.environments):
        try:
            answer = resolver.resolve(name, platform=host)
            tree = published_tree(resolver, answer, host)
        except LigoenvError:
            continue
        if tree is None:
            continue
        points = tree_report(resolver, answer, tree)["bind_points"] or []
        missing = [dest for dest in _bind_destinations(environ)
                   if dest not in points and not (tree.path / dest.lstrip("/")).is_dir()]
        found[name] = {"path": str(tree.path), "bind_points": points, "binds_without_mount_point": missing}
    return found


def _bind_destinations(environ: Any) -> list[str]:
    """Where the binds of APPTAINER_BIND (SINGULARITY_BIND, *_BINDPATH) go: `src[:dest[:opts]]`."""
    out: list[str] = []
    for variable in ("APPTAINER_BIND", "APPTAINER_BINDPATH", "SINGULARITY_BIND", "SINGULARITY_BINDPATH"):
        for item in environ.get(variable, "").split(","):
            source, _, rest = item.strip().partition(":")
            destination = rest.partition(":")[0] or source
            if destination.startswith("/") and destination not in out:
                out.append(destination)
    return out


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(value) or "(none)"
    return "(none)" if value is None else str(value)


def _runtimes(inv: Invocation) -> dict[str, Any]:
    """Where each runtime is, which ones `auto` cannot use (a docker client with no engine),
    and which one `auto` picks."""
    from ligoenv.client.runtimes.select import RUNTIMES, runtime_named, select_runtime
    from ligoenv.store.errors import RuntimeNotFound

    unusable = [name for name in RUNTIMES if inv.which(name)
                and not runtime_named(name, inv.which).ready(inv.environ)]
    try:
        auto: str | None = select_runtime("auto", inv.which, inv.environ).name
    except RuntimeNotFound:
        auto = None
    return {"runtimes": {name: inv.which(name) for name in RUNTIMES}, "unusable_runtimes": unusable,
            "auto_runtime": auto}


def _print(report: dict[str, Any]) -> None:
    out(f"runtimes (auto picks: {report['auto_runtime'] or 'none'}):")
    for name, path in report["runtimes"].items():
        note = "  (no engine to talk to: set DOCKER_HOST or start Docker)" \
            if name in report["unusable_runtimes"] else ""
        out(f"  {name:<12} {path or 'not found'}{note}")
    out(f"cvmfs:        {report['cvmfs']}")
    out(f"index:        {report['index']}")
    out("registries:")
    for host, state in report["registries"].items():
        out(f"  {host}: {state}")
    for name, tree in report["trees"].items():
        out(f"tree of {name}: {tree['path']}")
        points = " ".join(tree["bind_points"]) or "unknown (published before they were recorded)"
        out(f"  bind points: {points}")
        for destination in tree["binds_without_mount_point"]:
            out(f"  warning: {destination} (APPTAINER_BIND) has no directory in this tree: "
                "Apptainer cannot bind it without OverlayFS")
    site = report["site_config_file"] or "none"
    out(f"settings (config file {report['config_file']}, site config file {site}):")
    for name, item in report["settings"].items():
        out(f"  {name:<20} {item['value']}  [{item['source']}]")
    for warning in report["warnings"]:
        out(f"warning: {warning}")


def register(app: "typer.Typer") -> None:
    import typer

    from ligoenv.cli import options

    @app.command("doctor", help=HELP, short_help='Check runtimes, CVMFS, index, registries and settings.')
    def doctor(
        ctx: typer.Context,
        registries: Annotated[list[str] | None, typer.Option(
            "--registry", help="check this registry host (repeatable)", metavar="HOST")] = None,
        index: options.Index = None,
        as_json: options.Json = False,
    ) -> None:
        raise typer.Exit(run(invocation(ctx.obj), registries=registries, index=index, as_json=as_json))
