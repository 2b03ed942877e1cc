"""`ligoenv wait REF[@DIGEST]`: block until the image is published and indexed, then print its path."""

from typing import TYPE_CHECKING, Annotated

from ligoenv.cli.common import Invocation, invocation, make_resolver, note, out, parse_platform
from ligoenv.oci.errors import UsageError

if TYPE_CHECKING:
    import typer

HELP = """Wait until REF's digest is published: named by the publish index (as the tag's current
digest, when REF has a tag) with its tree complete and its tag link pointing at it. Then print
the tree's path (relative to the publish root when the index is a URL).

Without @DIGEST, the digest is what the registry says REF's tag means now. Exits non-zero with
one line on timeout, or at once when the server reports that publishing failed. For CI:
push, `ligoenv wait`, then submit jobs that use the published path.
"""


def run(inv: Invocation, ref_text: str, *, timeout: str = "10m", index: str | None = None,
        platform: str | None = None) -> int:
    from ligoenv.client.waiter import parse_duration, wait_published
    from ligoenv.oci.reference import Reference

    settings = inv.settings(index=index)
    if not settings.index:
        raise UsageError("wait needs a publish index: pass --index LOCATION or set LIGOENV_INDEX")
    try:
        seconds = parse_duration(timeout)
    except ValueError as error:
        raise UsageError(f"--timeout: {error}") from None
    ref = Reference.parse(ref_text)
    if ref.digest is None:
        ref = make_resolver(settings, None).from_registry(ref).reference
        note(f"waiting for {ref}")
    checked = wait_published(settings.index, ref, platform=parse_platform(platform), timeout=seconds)
    out(checked.path or ref.display())
    return 0


def register(app: "typer.Typer") -> None:
    import typer

    from ligoenv.cli import options

    @app.command("wait", help=HELP, short_help="Wait until an image is published, then print its path.")
    def wait(
        ctx: typer.Context,
        ref: Annotated[str, typer.Argument(help="image reference, optionally @DIGEST",
                                           metavar="REF[@DIGEST]")],
        timeout: Annotated[str, typer.Option("--timeout", help="give up after this long (90s, 10m, 1h)",
                                             metavar="DURATION")] = "10m",
        index: options.Index = None,
        platform: options.Platform = None,
    ) -> None:
        raise typer.Exit(run(invocation(ctx.obj), ref, timeout=timeout, index=index, platform=platform))
