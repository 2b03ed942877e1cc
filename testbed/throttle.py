"""A TCP proxy on loopback that relays to a server at a bounded rate, so that benchmarks can
time pulls as over a network link rather than at loopback speed."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

CHUNK = 64 * 1024


class ThrottledProxy:
    """Relays each connection to `upstream` ("host:port"). What the server sends back shares one
    link of `rate` bytes per second across all connections, as parallel downloads share a real
    one; what clients send goes through unthrottled."""

    def __init__(self, upstream: str, rate: float) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.rate = rate
        self._next_free = time.monotonic()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name="throttle-accept", daemon=True).start()

    def stop(self) -> None:
        self._closed.set()
        self._listener.close()

    def __enter__(self) -> ThrottledProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(self.upstream)
            except OSError:  # the server is gone: this client sees its connection closed
                client.close()
                continue
            for source, sink, paced in ((client, server, False), (server, client, True)):
                threading.Thread(target=self._relay, args=(source, sink, paced), daemon=True).start()

    def _relay(self, source: socket.socket, sink: socket.socket, paced: bool) -> None:
        try:
            while chunk := source.recv(CHUNK):
                if paced:
                    self._wait_for_link(len(chunk))
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()

    def _wait_for_link(self, size: int) -> None:
        """Sleep until the link has carried what was queued before these `size` bytes."""
        with self._lock:
            start = max(self._next_free, time.monotonic())
            self._next_free = start + size / self.rate
        delay = start + size / self.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
