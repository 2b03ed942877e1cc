"""Arguments and options several subcommands share (imported only on the typer path)."""

from typing import Annotated

import typer

Ref = Annotated[str, typer.Argument(help="image reference or lockfile environment name", metavar="REF")]
Platform = Annotated[str | None, typer.Option(
    "--platform", help="[default: this machine's]", metavar="OS/ARCH")]
Lock = Annotated[str | None, typer.Option(
    "--lock", help="lockfile [default: ligoenv.lock]", metavar="FILE")]
Index = Annotated[str | None, typer.Option(
    "--index", help="publish index: a publish root, CVMFS mount or http(s) mirror", metavar="LOCATION")]
Json = Annotated[bool, typer.Option("--json", help="print JSON")]
LockfileArg = Annotated[str | None, typer.Argument(
    help="lockfile [default: ligoenv.lock]", metavar="[LOCKFILE]", show_default=False)]
