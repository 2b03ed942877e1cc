"""Serving HTTP to the network: the listening socket, connection bounds and header timeouts.

uvicorn's h11 server lets a connection that never finishes its request head live forever, and
accepts connections until the process runs out of file descriptors; a few hundred idle
sockets then lock webhooks out. Here each connection must finish its request head within
`header_timeout`, and past `max_connections` the connection that has waited longest for its
head makes room for the new one (or the new one is closed when every connection is busy).
"""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from ligoenv.store.errors import ConfigError

DEFAULT_MAX_CONNECTIONS = 512
DEFAULT_HEADER_TIMEOUT = 10.0
_NOFILE_CEILING = 1 << 20  # when the hard limit is "unlimited"


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_timeout: float = DEFAULT_HEADER_TIMEOUT  # seconds to send a whole request head


def raise_open_files_limit() -> int:
    """Raise the soft limit on open files to the hard one (systemd's soft default is 1024);
    returns the soft limit now in effect."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _NOFILE_CEILING if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass  # e.g. above the kernel's nr_open: keep what we have
    return soft


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or one ConfigError line naming what holds the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError as error:
        sock.close()
        where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        if error.errno == errno.EADDRINUSE:
            raise ConfigError(f"cannot listen on {where}: the port is in use "
                              f"({port_holder(port)}); stop it or choose another port") from None
        raise ConfigError(f"cannot listen on {where}: {error.strerror}") from None
    sock.set_inheritable(True)
    return sock


def port_holder(port: int) -> str:
    """'held by nginx (pid 812)' for the process listening on TCP `port`, as far as /proc tells."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in fds):
                name = Path(f"/proc/{pid}/comm").read_text().strip()
                return f"held by {name} (pid {pid})"
        except OSError:
            continue
    return "held by a process this user cannot see" if inodes else "held by another process"


def protocol_class(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol under `limits` (uvicorn.Config(http=...) takes a class)."""

    class Bounded(_BoundedH11):
        pass

    Bounded.limits = limits
    return Bounded


class _BoundedH11(H11Protocol):
    limits: ConnectionLimits = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._waiting_since = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()
        if len(self.connections) > self.limits.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._await_head()  # the next request on a kept-alive connection has the same time

    def handle_events(self) -> None:
        super().handle_events()
        if self._head_deadline is not None and not self._waiting_for_head():
            self._stop_waiting()

    def _await_head(self) -> None:
        self._stop_waiting()
        self._waiting_since = self.loop.time()
        self._head_deadline = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _stop_waiting(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _waiting_for_head(self) -> bool:
        return self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self._waiting_for_head() and not self.transport.is_closing():
            self.transport.close()

    def _make_room(self) -> None:
        """Close the connection that has waited longest for its head, this one if all others
        are busy with requests: a flood of idle sockets cannot lock out a real sender."""
        waiting = [c for c in self.connections
                   if isinstance(c, _BoundedH11) and c._head_deadline is not None and c is not self]
        oldest = min(waiting, key=lambda c: c._waiting_since, default=self)
        oldest._stop_waiting()
        oldest.transport.close()
        self.connections.discard(oldest)  # its connection_lost comes later, on the loop


def serve(asgi: Any, host: str, port: int, limits: ConnectionLimits) -> None:
    """Run `asgi` on host:port until SIGTERM/SIGINT, bounded by `limits`."""
    import uvicorn

    raise_open_files_limit()
    sock = bind(host, port)
    # log_config=None: uvicorn's access log goes through our handler, which redacts secrets.
    config = uvicorn.Config(asgi, log_config=None, access_log=False,
                            timeout_graceful_shutdown=None, http=protocol_class(limits),
                            timeout_keep_alive=5)
    uvicorn.Server(config).run(sockets=[sock])
