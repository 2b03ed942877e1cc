"""Running a runtime's command line: exec (exit status and signals pass straight through), or as a child
that the signals a terminal or a batch system sends are forwarded to."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence

from ligoenv.store.errors import RuntimeNotFound

Executor = Callable[[Sequence[str], Mapping[str, str]], int]


def exec_command(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Replace this process with `argv`, so exit status and signals pass straight through."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(argv[0], list(argv), dict(env))  # noqa: S606 (argv, never a shell)
    except OSError as error:
        raise RuntimeNotFound(f"cannot execute {argv[0]}: {error.strerror}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def run_command(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Run `argv` as a child when exec is not possible; its exit status becomes ours."""
    try:
        process = subprocess.Popen(list(argv), env=dict(env))
    except OSError as error:
        raise RuntimeNotFound(f"cannot execute {argv[0]}: {error.strerror}") from None
    return wait_forwarding_signals(process, lambda: process.pid)


def wait_forwarding_signals(process: subprocess.Popen[bytes], target: Callable[[], int]) -> int:
    """Wait for `process`, passing the signals a terminal or a batch system sends to the pid
    `target()` names, so the command can clean up. A death by signal gives 128 + its number,
    as a shell reports it."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, lambda number, _: _send(target(), number))
                    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        code = process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


def _send(pid: int, number: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, number)

