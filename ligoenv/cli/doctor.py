"""`ligoenv doctor`: what this machine can run, what it can reach, and the settings in effect."""

import os
from typing import TYPE_CHECKING, Annotated, Any

from ligoenv.cli.common import Invocation, invocation, load_lockfile, out, print_json
from ligoenv.errors import LigoenvError

if TYPE_CHECKING:
    import typer

HELP = """Report the container runtimes found, whether CVMFS is mounted, whether the publish index
and the registries (those of the lockfile, or --registry) answer, and every setting with where
its value came from (command line, environment, your config file, the site's config file, default).
"""


def run(inv: Invocation, *, registries: list[str] | None = None, index: str | None = None,
        as_json: bool = False) -> int:
    from ligoenv.config import OPTIONS

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
        from ligoenv.index import open_index_reader

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
    from ligoenv.errors import AuthError
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


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(value) or "(none)"
    return "(none)" if value is None else str(value)


def _runtimes(inv: Invocation) -> dict[str, Any]:
    """Where each runtime is, which ones `auto` cannot use (a docker client with no engine),
    and which one `auto` picks."""
    from ligoenv.errors import RuntimeNotFound
    from ligoenv.runtimes.select import RUNTIMES, runtime_named, select_runtime

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
