"""Registry host names: `host[:port]` without its port, and which hosts are loopback.

The one loopback rule of ligoenv: the registry client uses it to allow plain HTTP, the server's
configuration to allow an unauthenticated endpoint or a queue token over http://.
"""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1, with or without a port.

    Only what is loopback without asking DNS: `*.localhost` may resolve to any address.
    """
    name = hostname(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def hostname(host: str) -> str:
    """`host[:port]` or `[v6]:port` without the port and brackets, in lower case."""
    name = host.lower()
    if name.startswith("["):
        return name[1:].split("]", 1)[0]
    return name.split(":", 1)[0] if name.count(":") == 1 else name


def plain_http(host: str, insecure: bool | None) -> bool:
    """Plain HTTP only when the caller says so, or (by default) for a loopback registry."""
    return is_loopback(host) if insecure is None else insecure
