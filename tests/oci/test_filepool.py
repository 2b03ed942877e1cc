"""FilePool: files finished on threads; the first failure is kept, the files after it are closed
unwritten, and no descriptor or thread outlives the pool."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from ligoenv.oci.filepool import FilePool


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_files_are_written_owned_moded_and_timed(tmp_path: Path) -> None:
    pool = FilePool()
    for i in range(100):
        fd = os.open(tmp_path / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        pool.submit(fd, (f"f{i}",), (b"abc", memoryview(b"defgh")[1:]), (os.geteuid(), os.getegid()),
                    0o640 if i % 2 else None, (1_600_000_000 + i) * 10**9)
    pool.drain()
    assert pool.failure is None
    info = (tmp_path / "f7").stat()
    assert (tmp_path / "f7").read_bytes() == b"abcefgh" and info.st_mode & 0o777 == 0o640
    assert info.st_mtime_ns == 1_600_000_007 * 10**9 and (tmp_path / "f8").stat().st_mode & 0o777 == 0o600
    assert [t for t in threading.enumerate() if t.name == "ligoenv-files"] == []


def test_the_first_failure_is_kept_and_later_files_are_closed_unwritten(tmp_path: Path) -> None:
    before = open_fds()
    pool = FilePool()
    read_only = os.open("/dev/null", os.O_RDONLY)  # writing to it fails: EBADF
    pool.submit(read_only, ("etc", "broken"), (b"data",), None, None, 0)
    for i in range(50):
        fd = os.open(tmp_path / f"later{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        pool.submit(fd, (f"later{i}",), (b"x",), None, None, 0)
    pool.close()
    assert pool.failure is not None and pool.failure.parts == ("etc", "broken")
    assert pool.failure.error.strerror == "Bad file descriptor"
    assert open_fds() == before
    assert [t for t in threading.enumerate() if t.name == "ligoenv-files"] == []
    assert (tmp_path / "later49").read_bytes() == b""  # given up, never half-written after
