"""Running a test's function in a forked child, so that what it changes for itself (a resource
limit, the user it runs as) never reaches the test process."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any


def in_child(function: Callable[[], Any], prepare: Callable[[], None] | None = None) -> Any:
    """`function`'s result (JSON-able), run in a forked child after `prepare`; what either
    raises comes back as an AssertionError naming it."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            if prepare is not None:
                prepare()
            payload = {"result": function()}
        except BaseException as err:
            payload = {"error": f"{type(err).__name__}: {err}"}
        os.write(write_end, json.dumps(payload).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        payload = json.loads(pipe.read())
    os.waitpid(pid, 0)
    if "error" in payload:
        raise AssertionError(payload["error"])
    return payload["result"]
