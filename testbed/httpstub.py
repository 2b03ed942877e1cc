"""Scripted HTTP servers on loopback for answers a real registry or mirror never gives: slow,
trickled, truncated or silent (`Stub` scripts replies by route, `Silent` never answers)."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    trickle: float = 0.0  # seconds between the body's bytes, sent one at a time
    length: bool = True  # False: no Content-Length, the body ends when the connection closes
    hold: float = 0.0  # seconds to keep the connection silent after the body
    wait: threading.Event | None = None  # answer only once this is set (or after 10 s)
    pause_at: int = 0  # with `resume`: send this many bytes of the body, then the rest once
    resume: threading.Event | None = None  # this is set (or after 10 s)


class Stub:
    """Scripted answers by (method, path); the last reply of a script repeats. Records requests,
    and the paths whose body the client hung up on before it was all sent (`aborted`)."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Reply]] = {}
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.aborted: list[str] = []
        self.hung_up = threading.Event()
        self.trickling = threading.Event()  # a trickled body has sent its first byte
        self.stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def on(self, method: str, path: str, *replies: Reply) -> None:
        self.routes[(method, path)] = list(replies)

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _reply(self, method: str, path: str, headers: dict[str, str]) -> Reply:
        self.seen.append((method, path, headers))
        script = self.routes.get((method, path.split("?")[0]))
        if not script:
            return Reply(404, {"Content-Type": "application/json"},
                         b'{"errors":[{"code":"NAME_UNKNOWN","message":"no such route"}]}')
        return script.pop(0) if len(script) > 1 else script[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self, with_body: bool) -> None:
                reply = stub._reply(self.command, self.path, dict(self.headers))
                if reply.wait is not None:
                    reply.wait.wait(10)
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                if not reply.length:
                    self.close_connection = True
                elif "Content-Length" not in reply.headers:  # a script may declare more than it sends
                    self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if with_body:
                    try:
                        self._body(reply)
                    except (BrokenPipeError, ConnectionResetError):
                        stub.aborted.append(self.path)
                        stub.hung_up.set()
                        self.close_connection = True

            def _body(self, reply: Reply) -> None:
                if reply.resume is not None:
                    self.wfile.write(reply.body[:reply.pause_at])
                    self.wfile.flush()
                    reply.resume.wait(10)
                    self.wfile.write(reply.body[reply.pause_at:])
                elif not reply.trickle:
                    self.wfile.write(reply.body)
                for byte in reply.body if reply.trickle else b"":
                    if stub.stopping.wait(reply.trickle):
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    stub.trickling.set()
                stub.stopping.wait(reply.hold)

            def do_GET(self) -> None:
                self._serve(True)

            def do_HEAD(self) -> None:
                self._serve(False)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


class Silent:
    """A registry that accepts connections and never answers; counts the connections."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.05)
        self.host = f"127.0.0.1:{self._socket.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                self.connections.append(self._socket.accept()[0])
            except TimeoutError:
                continue

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        for connection in [*self.connections, self._socket]:
            connection.close()
