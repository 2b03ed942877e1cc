"""`ligoenv run REF -- CMD...`: run a command in an image, always by digest."""

import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

from ligoenv.cli.common import Invocation, invocation, load_lockfile, make_resolver, note, parse_platform
from ligoenv.cli.fastpath import (
    INDEX_HELP,
    PLATFORM_HELP,
    CommandOption,
    split_args,
    switches,
    typer_parameters,
    valued,
    values,
)
from ligoenv.oci.errors import UsageError

if TYPE_CHECKING:
    import typer

HELP = """Run CMD in the image REF (or an environment of a lockfile), pinned by digest.

--runtime auto prefers Apptainer/Singularity (on the published tree when the index has one on
this machine, else docker://REF@DIGEST), then Docker/Podman, then bubblewrap on a local copy
(pulled into the cache when missing). Put the command after --; without --, everything after
REF is the command, options included. The exit status is the command's.
"""


def run(inv: Invocation, args: list[str], *, lock: str | None = None,
        runtime: str | None = None, binds: list[str] | None = None, gpu: bool = False,
        env: list[str] | None = None, cleanenv: bool = False, platform: str | None = None,
        pwd: str | None = None, index: str | None = None, separator_at: int | None = None) -> int:
    from ligoenv.client.launch import prepare
    from ligoenv.client.runtimes.base import Bind, Host, RunRequest, parse_env

    settings = inv.settings(lockfile=lock, index=index, runtime=runtime)
    lockfile = load_lockfile(settings)
    reference, command = _split(args, separator_at, lock is not None, lockfile)
    request = RunRequest(
        reference=reference, command=tuple(command), cwd=os.getcwd(), runtime=settings.runtime,
        platform=parse_platform(platform), locked=lock is not None,
        binds=tuple(Bind.parse(b) for b in binds or []),
        env=tuple(parse_env(e) for e in env or []), gpu=gpu, cleanenv=cleanenv, workdir=pwd,
        stdin_open=_stdin_open(), tty=sys.stdin.isatty() and sys.stdout.isatty(),
        stdin_tty=sys.stdin.isatty(),
        host=inv.host or Host.current(),
    )
    resolver = make_resolver(settings, lockfile)
    chosen, plan = prepare(request, resolver, settings.cache, inv.which, _progress(), note,
                           inv.environ)
    return chosen.run(plan, inv.environ, executor=inv.executor, announce=note if inv.debug else None)


OPTIONS = (
    CommandOption("lock", ("--lock",), "run an environment of this lockfile", "FILE"),
    CommandOption("runtime", ("--runtime",), "[default: auto]",
                  "auto|apptainer|singularity|docker|podman|bwrap"),
    CommandOption("binds", ("-B", "--bind"), "bind a host path (repeatable)", "SRC[:DST[:ro]]",
                  repeatable=True),
    CommandOption("gpu", ("--gpu",), "give the container the NVIDIA GPUs", switch=True),
    CommandOption("env", ("--env",), "set K=V in the container (repeatable)", "K=V", repeatable=True),
    CommandOption("cleanenv", ("--cleanenv",), "do not pass the host environment", switch=True),
    CommandOption("platform", ("--platform",), PLATFORM_HELP, "OS/ARCH"),
    CommandOption("pwd", ("--pwd",), "working directory in the container [default: the current one]",
                  "DIR"),
    CommandOption("index", ("--index",), INDEX_HELP, "LOCATION"),
)
VALUED = valued(OPTIONS)
FLAGS = switches(OPTIONS)


def mark_command(args: list[str]) -> list[str]:
    """Without `--`, `args` of run with `--` put after the first positional argument (REF or
    NAME): what follows is the command, even what looks like an option. With a `--`, what
    precedes it is options, as it was. Unknown options before REF are left for typer to report."""
    if "--" in args:
        return args
    index = 0
    while index < len(args):
        arg = args[index]
        if not arg.startswith("-") or arg == "-":
            return [*args[: index + 1], "--", *args[index + 1:]]
        name, equals, _ = arg.partition("=")
        if name in VALUED and not equals:
            index += 1
        elif name not in (*VALUED, *FLAGS, "--debug"):
            return args
        index += 1
    return args


def fast_path(args: list[str], inv: Invocation) -> int | None:
    """Run without importing typer when the command line is plainly well formed; None otherwise.

    Every job of a workflow starts here, so the 100 ms typer costs are worth saving.
    """
    split = split_args(args, VALUED, FLAGS)
    if split is None or any(arg.startswith("-") for arg in split.positional):
        return None
    after = split.after_separator
    positional = split.positional + (after or [])
    return run(inv, positional, **values(OPTIONS, split),
               separator_at=None if after is None else len(split.positional))


def _split(args: list[str], separator_at: int | None, with_lock: bool,
           lockfile: Any) -> tuple[str, list[str]]:
    """(reference or environment name, command) from the positional arguments."""
    before = args if separator_at is None else args[:separator_at]
    after = [] if separator_at is None else args[separator_at:]
    if separator_at is None:
        before, after = args[:1], args[1:]
    if len(before) > 1:
        raise UsageError(f"unexpected arguments {before[1:]}: put the command after --")
    if before:
        return before[0], after
    if with_lock and lockfile is not None and len(lockfile.environments) == 1:
        return next(iter(lockfile.environments)), after
    if with_lock and lockfile is not None:
        names = ", ".join(sorted(lockfile.environments)) or "none"
        raise UsageError(f"{lockfile.where} has several environments: name one of {names}")
    raise UsageError("no image given: ligoenv run REF -- CMD... (or --lock FILE NAME -- CMD...)")


def _stdin_open() -> bool:
    import stat

    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return sys.stdin.isatty() or stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode)


def _progress() -> Any:
    from ligoenv.cli.progress import progress_bar

    return progress_bar("pulling")


def register(app: "typer.Typer") -> None:
    import inspect

    import typer

    def run_command(ctx: typer.Context, args: list[str] | None = None, **options: Any) -> None:
        inv = invocation(ctx.obj)
        positional = args or []
        separator_at = _separator_position(inv.args, positional)
        raise typer.Exit(run(inv, positional, **options, separator_at=separator_at))

    # typer reads the parameters from the signature: the positional arguments, then OPTIONS.
    arguments = Annotated[list[str] | None, typer.Argument(
        help="REF (or NAME with --lock), then -- and the command", metavar="[REF|NAME] -- CMD",
        show_default=False)]
    run_command.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        inspect.Parameter("args", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=arguments,
                          default=None),
        *typer_parameters(OPTIONS),
    ])
    app.command("run", help=HELP, short_help="Run a command in an image, by digest.")(run_command)


def _separator_position(raw: list[str], positional: list[str]) -> int | None:
    """How many positional arguments came before `--` on the command line (None: no `--`)."""
    if "--" not in raw:
        return None
    after = len(raw) - raw.index("--") - 1
    return len(positional) - after
