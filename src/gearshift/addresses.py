"""Gearman server addresses: parsing server lists, and telling a loopback peer.

Dependency-free (no asyncio, no sockets), so that the server, the clients and the
command line can all use it.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_PORT",
    "SERVERS_ENV",
    "ServerAddress",
    "ServersArg",
    "is_loopback",
    "parse_servers",
]

DEFAULT_PORT: Final = 4730
#: Environment variable holding a default server list, as libgearman reads it.
SERVERS_ENV: Final = "GEARMAN_SERVERS"


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """One server's host and port; ``str()`` gives ``host:port``."""

    host: str
    port: int = DEFAULT_PORT

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> ServerAddress:
        """Parse ``host``, ``host:port``, ``[v6]:port`` or ``v6``.

        Raises:
            ValueError: an empty host or a port that is not a number in 1..65535.
        """
        text = text.strip()
        host, port = text, ""
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        elif text.count(":") == 1:
            host, _, port = text.partition(":")
        if not host:
            raise ValueError(f"no host in server address {text!r}")
        if not port:
            return cls(host)
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad port in server address {text!r}")
        return cls(host, int(port))


ServersArg = str | ServerAddress | tuple[str, int] | Iterable[str | ServerAddress | tuple[str, int]]


def parse_servers(servers: ServersArg | None) -> list[ServerAddress]:
    """Normalise a server list.

    Accepts ``"h1:4730,h2:4731"``, a list of such strings, ``(host, port)`` tuples or
    ServerAddress objects.  None (or an empty list) reads ``GEARMAN_SERVERS`` and falls
    back to ``127.0.0.1:4730``.  Duplicates are dropped, order is kept.
    """
    if servers is None or (not isinstance(servers, str | tuple) and not servers):
        servers = os.environ.get(SERVERS_ENV) or "127.0.0.1:4730"
    items: list[ServerAddress] = []
    if isinstance(servers, ServerAddress):
        items.append(servers)
    elif isinstance(servers, tuple) and len(servers) == 2 and isinstance(servers[1], int):
        items.append(ServerAddress(str(servers[0]), servers[1]))
    else:
        entries = [servers] if isinstance(servers, str) else list(servers)
        for entry in entries:
            if isinstance(entry, ServerAddress):
                items.append(entry)
            elif isinstance(entry, tuple):
                items.append(ServerAddress(str(entry[0]), int(entry[1])))
            else:
                items.extend(ServerAddress.parse(p) for p in str(entry).split(",") if p.strip())
    if not items:
        raise ValueError("empty server list")
    return list(dict.fromkeys(items))


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback addresses (``::ffff:127.0.0.1``).

    A zone suffix (``fe80::1%eth0``) is ignored; a name that is not an address is not
    loopback.
    """
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback
