"""Arguments and options several subcommands share (imported only on the typer path)."""

from typing import Annotated

import typer

from ligoenv.cli.fastpath import INDEX_HELP, LOCK_HELP, PLATFORM_HELP

Ref = Annotated[str, typer.Argument(help="image reference or lockfile environment name", metavar="REF")]
Platform = Annotated[str | None, typer.Option("--platform", help=PLATFORM_HELP, metavar="OS/ARCH")]
Lock = Annotated[str | None, typer.Option("--lock", help=LOCK_HELP, metavar="FILE")]
Index = Annotated[str | None, typer.Option("--index", help=INDEX_HELP, metavar="LOCATION")]
Json = Annotated[bool, typer.Option("--json", help="print JSON")]
LockfileArg = Annotated[str | None, typer.Argument(
    help="lockfile [default: ligoenv.lock]", metavar="[LOCKFILE]", show_default=False)]
