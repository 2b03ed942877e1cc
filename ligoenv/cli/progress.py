"""A one-line download progress report on stderr, shown only when stderr is a terminal."""

import sys
import threading
import time
from collections.abc import Callable

Progress = Callable[[int, int], None]


def progress_bar(label: str, min_interval: float = 0.1) -> Progress | None:
    """A callback for (bytes done, bytes total), or None when nobody is watching."""
    if not sys.stderr.isatty():
        return None
    lock = threading.Lock()
    last = [0.0]
    ended = [False]

    def update(done: int, total: int) -> None:
        with lock:
            now = time.monotonic()
            finished = total > 0 and done >= total
            if ended[0] or (not finished and now - last[0] < min_interval):
                return
            ended[0] = finished
            last[0] = now
            percent = 100 * done // total if total else 100
            sys.stderr.write(f"\r{label} {done / 1e6:.1f}/{total / 1e6:.1f} MB {percent:3d}%")
            if finished:
                sys.stderr.write("\n")
            sys.stderr.flush()

    return update
