"""Entry point of the `ligoenv` command: wires the subcommands and turns errors into one line + exit code.

Only `sys` and the light core are imported up front: `resolve` and `run` are answered before
typer is imported (typer brings click and pydantic, about 100 ms) when their command line is
plain, and each subcommand imports what it needs when it runs.
"""

import sys
from typing import Any

from ligoenv.cli.common import Invocation
from ligoenv.oci.errors import LigoenvError
from ligoenv.oci.version import __version__

SUBCOMMANDS = ("resolve", "lock", "verify", "run", "pull", "history", "path", "doctor", "cite",
               "archive", "restore", "wait")
HELP = """Reproducible container environments: resolve, lock and run images by digest.

Errors print one line on stderr (`--debug` shows the traceback). Exit codes: 0 success,
1 error, 2 usage or configuration, 3 not found, 4 no container runtime.
"""


def main(argv: list[str] | None = None) -> None:
    raise SystemExit(run(sys.argv[1:] if argv is None else argv))


def run(args: list[str], inv: Invocation | None = None) -> int:
    """Run the command line `args`; returns the exit code. Never raises, except with --debug."""
    inv = inv or Invocation()
    args = _run_command_marked(args)
    separator = args.index("--") if "--" in args else len(args)
    # --debug is ours only among the options, never in the command `run` is given.
    inv.debug = inv.debug or "--debug" in args[:separator]
    args = [a for a in args[:separator] if a != "--debug"] + args[separator:]
    inv.args = list(args)
    try:
        code = _fast_path(args, inv)
        if code is None:
            code = typer_main(args, inv)
        return code
    except LigoenvError as error:
        if inv.debug:
            raise
        return _fail(error.message, error.exit_code)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except OSError as error:
        if inv.debug:
            raise
        where = f": {error.filename}" if error.filename else ""
        return _fail(f"{error.strerror or error}{where}", 1)
    except Exception as error:
        if inv.debug:
            raise
        # A bug: say what happened in one line, and how to see the rest.
        return _fail(f"unexpected {type(error).__name__}: {error} (run with --debug for the traceback)", 1)


def _run_command_marked(args: list[str]) -> list[str]:
    """`run REF CMD...` without `--` as `run REF -- CMD...`: as with `docker run`, what follows
    the image is the command's, options (even --debug) included."""
    position = next((i for i, arg in enumerate(args) if not arg.startswith("-")), None)
    if position is None or args[position] != "run":
        return args
    from ligoenv.cli.run import mark_command

    return args[: position + 1] + mark_command(args[position + 1:])


def _fast_path(args: list[str], inv: Invocation) -> int | None:
    """`resolve` and `run` are answered without typer when their command line is plain."""
    rest = args
    if not rest or rest[0] not in ("resolve", "run"):
        return None
    options = rest[: rest.index("--")] if "--" in rest else rest
    if any(arg in ("-h", "--help") for arg in options):
        return None
    import importlib

    module: Any = importlib.import_module(f"ligoenv.cli.{rest[0]}")
    code: int | None = module.fast_path(rest[1:], inv)
    return code


def typer_main(args: list[str], inv: Invocation) -> int:
    """The full command line through typer (the fast paths fall back to it)."""
    import typer
    from typer._click.exceptions import ClickException, NoArgsIsHelpError

    command = typer.main.get_command(build_app())
    try:
        result = command.main(args, prog_name="ligoenv", standalone_mode=False, obj=inv)
    except NoArgsIsHelpError as error:
        sys.stderr.write(error.format_message().rstrip() + "\n")
        return 2
    except ClickException as error:
        return _fail(_one_line(error.format_message()), 2 if error.exit_code == 1 else error.exit_code)
    except typer.Abort:
        return _fail("aborted", 130)
    return result if isinstance(result, int) else 0


def build_app() -> Any:
    """The typer application with every subcommand registered."""
    import importlib

    import typer

    app = typer.Typer(name="ligoenv", help=HELP, add_completion=False, no_args_is_help=True,
                      pretty_exceptions_enable=False, rich_markup_mode=None,
                      context_settings={"help_option_names": ["-h", "--help"]})

    def show_version(value: bool) -> None:
        if value:
            sys.stdout.write(f"ligoenv {__version__}\n")
            raise typer.Exit(0)

    @app.callback()
    def _global(
        debug: bool = typer.Option(False, "--debug", help="show tracebacks of errors"),
        version: bool = typer.Option(False, "--version", help="print the version and exit",
                                     is_eager=True, callback=show_version),
    ) -> None:
        pass  # --debug is read before parsing, so that parse errors can be debugged too

    for name in SUBCOMMANDS:
        importlib.import_module(f"ligoenv.cli.{name}").register(app)
    return app


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"ligoenv: error: {_one_line(message)}\n")
    return code


if __name__ == "__main__":
    main()
