"""GrowingBlob: a download read while it is written, its end only once it has finished well."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ligoenv.oci.growing import DownloadFailed, GrowingBlob, GrowingReader


@pytest.fixture()
def download(tmp_path: Path) -> Iterator[tuple[GrowingBlob, int, GrowingReader]]:
    """A blob whose download has started: the blob, the fd its downloader writes to, and a
    reader following it."""
    fd, _ = tempfile.mkstemp(dir=tmp_path)  # read-write, as download_blob's temp file
    blob = GrowingBlob()
    blob.started(fd)
    reader = blob.follow()
    assert reader is not None
    yield blob, fd, reader
    blob.close()
    os.close(fd)


def write(blob: GrowingBlob, fd: int, data: bytes) -> None:
    os.write(fd, data)
    blob.grew(len(data))


def test_a_reader_gets_what_has_arrived_and_the_end_only_once_it_finished(
        download: tuple[GrowingBlob, int, GrowingReader]) -> None:
    blob, fd, reader = download
    write(blob, fd, b"first ")
    assert reader.read(100) == b"first "  # what is there, without waiting for 100 bytes
    assert reader.read(0) == b""
    got: list[bytes] = []
    waiting = threading.Thread(target=lambda: got.append(reader.read(100)))
    waiting.start()
    write(blob, fd, b"second")
    waiting.join(10)
    assert got == [b"second"]
    ended: list[bytes] = []
    waiting = threading.Thread(target=lambda: ended.append(reader.read(100)))
    waiting.start()
    waiting.join(0.2)
    assert waiting.is_alive() and ended == []  # no end until the download has finished
    blob.finished(ok=True)
    waiting.join(10)
    assert ended == [b""]


def test_a_failed_download_fails_its_reader_even_with_bytes_unread(
        download: tuple[GrowingBlob, int, GrowingReader]) -> None:
    blob, fd, reader = download
    write(blob, fd, b"tampered")
    blob.finished(ok=False)
    blob.finished(ok=True)  # the first report stands
    with pytest.raises(DownloadFailed, match="the download failed"):
        reader.read(100)


def test_an_abandoned_reader_stops_waiting(download: tuple[GrowingBlob, int, GrowingReader]) -> None:
    _blob, _fd, reader = download
    failed: list[BaseException] = []

    def read() -> None:
        try:
            reader.read(100)
        except DownloadFailed as error:
            failed.append(error)

    waiting = threading.Thread(target=read)
    waiting.start()
    reader.abandon()
    waiting.join(10)
    assert not waiting.is_alive() and len(failed) == 1


def test_a_blob_finished_before_anyone_followed_it_is_read_from_the_cache() -> None:
    blob = GrowingBlob()
    blob.finished(ok=True)  # in the cache already: nothing was downloaded
    assert blob.follow() is None
