"""The worker's small HTTP listener for /healthz, /readyz and /metrics (off unless asked for).

Workers have no web server of their own, so this is a plain threaded `http.server`. It binds
with SO_REUSEPORT: the `worker@N` instances of one machine, which share their counters through
PROMETHEUS_MULTIPROC_DIR, may all listen on one port, and whichever answers a scrape reports the
whole role.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import metrics
from .health import Check, readiness

log = logging.getLogger(__name__)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], checks: tuple[Check, ...],
                 collectors: tuple[Any, ...]) -> None:
        self.checks, self.collectors = checks, collectors
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        if hasattr(socket, "SO_REUSEPORT"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._send(200, "application/json", _json({"status": "ok"}))
        elif self.path == "/readyz":
            ready, body = readiness(self.server.checks)
            self._send(200 if ready else 503, "application/json", _json(body))
        elif self.path == "/metrics":
            self._send(200, metrics.CONTENT_TYPE, metrics.exposition(self.server.collectors))
        else:
            self._send(404, "application/json", _json({"error": "not found"}))

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("ops listener: " + format, *args)


class OpsListener:
    """Serves the ops routes at (`host`, `port`) in a background thread until `close()`."""

    def __init__(self, host: str, port: int, checks: Iterable[Check],
                 collectors: Iterable[Any] = ()) -> None:
        self._server = _Server((host, port), tuple(checks), tuple(collectors))
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="ops-listener",
                                        daemon=True)

    def start(self) -> OpsListener:
        self._thread.start()
        log.info("metrics and health at http://%s:%d/metrics", self._server.server_address[0],
                 self.port)
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()
