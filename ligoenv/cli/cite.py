"""`ligoenv cite [LOCKFILE]`: how to cite each locked environment, as plain text and BibTeX."""

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from ligoenv.cli.common import Invocation, invocation, load_lockfile, out
from ligoenv.client.archive_records import ArchiveRecord, ArchiveRecords
from ligoenv.oci.errors import NotFound

if TYPE_CHECKING:
    import typer

HELP = """Print a plain-text list and one BibTeX @misc entry per environment of the lockfile,
each naming the image by its digest, so a paper cites exactly the bits it ran.
"""
_LATEX_SPECIAL = re.compile(r"([\\{}_&%#$^~])")
_LATEX_REPLACEMENT = {"\\": r"\textbackslash{}", "^": r"\^{}", "~": r"\~{}"}


def run(inv: Invocation, lockfile_path: str | None = None, *, fmt: str = "all") -> int:
    settings = inv.settings(lockfile=lockfile_path)
    lockfile = load_lockfile(settings, strict=True)
    if lockfile is None or not lockfile.environments:
        raise NotFound(f"no environments to cite in {settings.lockfile}: lock some with `ligoenv lock`")
    environments = sorted(lockfile.environments.items())
    records = ArchiveRecords(settings.cache)
    archives = {name: records.available(env.digest) for name, env in environments}
    if fmt in ("all", "text"):
        out(f"Container environments pinned by digest in {settings.lockfile} ({lockfile.tool}):")
        for number, (name, env) in enumerate(environments, 1):
            out(f"[{number}] {name}: {env.canonical}")
            out(f"    resolved {_day(env)} from {env.source}; platforms: "
                f"{', '.join(sorted(env.platforms)) or 'unknown'}")
            archive = archives[name]
            if archive is not None:
                out(f"    archived in {_archived(archive)}")
    if fmt == "all":
        out()
    if fmt in ("all", "bibtex"):
        out("\n\n".join(bibtex(name, env, lockfile.tool, archives[name]) for name, env in environments))
    return 0


def _archived(record: ArchiveRecord) -> str:
    return f"{record.path} ({record.sha256})"


def _archive_note(record: ArchiveRecord) -> str:
    return f"; archived as {_latex(Path(record.path).name)} ({record.sha256})"


def bibtex(name: str, env: Any, tool: str, archive: ArchiveRecord | None = None) -> str:
    """A @misc entry whose key and URL carry the digest (and the archive's checksum, if any)."""
    key = re.sub(r"[^A-Za-z0-9_-]", "-", name) + f"-{env.digest.hex[:12]}"
    image = f"{env.registry}/{env.repository}" + (f":{env.tag}" if env.tag else "")
    fields = [
        ("title", f"{{{_latex(name)}}}: container image {_latex(image)}"),
        ("howpublished", f"\\url{{{env.registry}/{env.repository}@{env.digest}}}"),
        ("note", f"Image digest {env.digest}, resolved {_day(env)} from {_latex(env.source)} "
                 f"with {_latex(tool)}" + (_archive_note(archive) if archive else "")),
        ("year", str(env.resolved.year)),
    ]
    body = ",\n".join(f"  {field:<12} = {{{value}}}" for field, value in fields)
    return f"@misc{{{key},\n{body}\n}}"


def _latex(text: str) -> str:
    return _LATEX_SPECIAL.sub(lambda m: _LATEX_REPLACEMENT.get(m.group(1), "\\" + m.group(1)), text)


def _day(env: Any) -> str:
    from ligoenv.store.times import format_time

    return format_time(env.resolved, whole_seconds=True)


def register(app: "typer.Typer") -> None:
    import typer

    from ligoenv.cli import options

    @app.command("cite", help=HELP, short_help="Cite the lockfile's environments (text and BibTeX).")
    def cite(
        ctx: typer.Context,
        lockfile: options.LockfileArg = None,
        fmt: Annotated[str, typer.Option(
            "--format", help="what to print", metavar="all|text|bibtex")] = "all",
    ) -> None:
        if fmt not in ("all", "text", "bibtex"):
            raise typer.BadParameter("choose all, text or bibtex", param_hint="--format")
        raise typer.Exit(run(invocation(ctx.obj), lockfile, fmt=fmt))
