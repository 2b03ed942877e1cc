"""Finishes new regular files on a few threads while the unpacker reads on: data, owner, mode,
times, close.

Only the work on an open descriptor moves here. Every change to the tree's names (create, link,
unlink, rename, whiteouts) stays on the thread that reads the layer, in the layer's order, so a
file handed over is already in place and nothing done to it afterwards depends on its contents.
The syscalls release the GIL, so they overlap with the parsing of the next headers.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass

THREADS = 2
PENDING = 32  # files handed over and not yet finished: bounds the chunks their data keeps alive
MAX_FILE = 256 << 10  # larger files are written by the reading thread, as they stream


@dataclass(frozen=True)
class FileFailure:
    """The first file that could not be finished."""

    parts: tuple[str, ...]
    error: OSError


class FilePool:
    """Threads that finish files opened (O_EXCL) by the caller: `drain()` after the last one, or
    `close()` to give up on those not yet finished."""

    def __init__(self, threads: int = THREADS) -> None:
        self.failure: FileFailure | None = None
        self._tasks: queue.SimpleQueue[tuple[object, ...] | None] = queue.SimpleQueue()
        self._room = threading.Semaphore(PENDING)
        self._stopped = False
        self._threads = [threading.Thread(target=self._run, name="ligoenv-files", daemon=True)
                         for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def submit(self, fd: int, parts: tuple[str, ...], data: tuple[bytes | memoryview, ...],
               owner: tuple[int, int] | None, mode: int | None, mtime_ns: int) -> None:
        """Write `data` to `fd`, set `owner` and `mode` (None: already right) and the times, then
        close it. The pool owns `fd` from now on."""
        self._room.acquire()
        self._tasks.put((fd, parts, data, owner, mode, mtime_ns))

    def drain(self) -> None:
        """Finish every file handed over, then stop the threads (see `failure`)."""
        for _ in self._threads:
            self._tasks.put(None)  # after every task: the queue is first in, first out
        for thread in self._threads:
            thread.join()
        self._threads = []

    def close(self) -> None:
        """Stop the threads; files not yet finished are closed as they are (the caller failed
        and removes the tree)."""
        self._stopped = True
        self.drain()

    def _run(self) -> None:
        while (task := self._tasks.get()) is not None:
            fd, parts, data, owner, mode, mtime_ns = task
            try:
                if self.failure is None and not self._stopped:
                    _finish(fd, data, owner, mode, mtime_ns)  # type: ignore[arg-type]
            except OSError as err:
                if self.failure is None:
                    self.failure = FileFailure(parts, err)  # type: ignore[arg-type]
            finally:
                os.close(fd)  # type: ignore[arg-type]
                self._room.release()


def _finish(fd: int, data: tuple[bytes | memoryview, ...], owner: tuple[int, int] | None,
            mode: int | None, mtime_ns: int) -> None:
    for chunk in data:
        done = os.write(fd, chunk)
        while done < len(chunk):
            done += os.write(fd, memoryview(chunk)[done:])
    if owner is not None:
        os.fchown(fd, *owner)  # before chmod: chown clears setuid bits
    if mode is not None:
        os.fchmod(fd, mode)
    os.utime(fd, ns=(mtime_ns, mtime_ns))
