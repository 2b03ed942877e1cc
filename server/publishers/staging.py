"""Staging directories where images are unpacked before publication, and their cleanup after a crash."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


class StagingArea:
    """Directories the worker unpacks into. Each has a lock file, taken *before* the directory
    is made and held while it is in use, so a directory whose lock is free belongs to a worker
    that died: cleaning removes it at once, and never one a live worker is still filling."""

    def __init__(self, root: Path, stale_after: timedelta = timedelta(0),
                 clock: Callable[[], datetime] | None = None) -> None:
        self.root = root
        self.stale_after = stale_after  # extra grace before cleaning; the lock alone is enough
        self._clock = clock or (lambda: datetime.now(UTC))
        self._locks: dict[Path, int] = {}
        root.mkdir(parents=True, exist_ok=True)

    def new(self) -> Path:
        fd, lock_name = tempfile.mkstemp(dir=self.root, prefix="stage-", suffix=".lock")
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = Path(lock_name[: -len(".lock")])
        path.mkdir(mode=0o755)
        os.chmod(path, 0o755)  # noqa: S103  (it becomes the root directory of a public image)
        self._locks[path] = fd
        return path

    def discard(self, path: Path) -> None:
        if os.path.lexists(path):
            shutil.rmtree(path, ignore_errors=True)
        fd = self._locks.pop(path, None)
        self._lock_path(path).unlink(missing_ok=True)
        if fd is not None:
            os.close(fd)

    def clean(self, now: datetime | None = None) -> list[Path]:
        """Remove staging directories no live worker holds (older than `stale_after`)."""
        cutoff = (now or self._clock()).timestamp() - self.stale_after.total_seconds()
        removed = []
        for path in sorted(self.root.glob("stage-*")):
            if path.suffix == ".lock" or path in self._locks or path.lstat().st_mtime > cutoff:
                continue
            try:
                fd = os.open(self._lock_path(path), os.O_RDWR | os.O_CREAT, 0o600)
            except FileNotFoundError:
                continue  # removed by another cleaner meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live worker in another process holds it
            finally:
                os.close(fd)
            self.discard(path)
            removed.append(path)
        return removed

    @staticmethod
    def _lock_path(path: Path) -> Path:
        return path.with_name(path.name + ".lock")

