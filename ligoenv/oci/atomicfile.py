"""Durable, atomic file replacement: the one way ligoenv writes its state files.

Write a temporary file in the same directory, flush and fsync it, rename it over the target,
then fsync the directory, so readers see the old file or the new one, never a torn one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename or link in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace `path` with `text` (UTF-8) atomically and durably. OSError is the caller's to word.

    A symlink (a lockfile kept in another repository, say) is followed: the file it points at
    is replaced and the link stays. The temporary file sits beside that real file, so the
    rename never crosses file systems.
    """
    path = path.resolve()
    directory = path.parent
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_dir(directory)
