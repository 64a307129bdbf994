"""Opening a TCP (or TLS) connection to a Gearman server, for client, worker and admin.

Server addresses live in the public ``gearshift.addresses``; what happens on the
connection once it is open lives in ``gearshift._async.connection``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

from gearshift.addresses import ServerAddress
from gearshift.errors import ConnectError, ConnectTimeout

__all__ = ["open_transport"]


def _set_keepalive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    # Linux lets us notice a dead peer in about a minute instead of two hours.
    for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        opt = getattr(socket, name, None)
        if opt is not None:
            sock.setsockopt(socket.IPPROTO_TCP, opt, value)


async def open_transport(
    address: ServerAddress,
    protocol: asyncio.Protocol,
    *,
    connect_timeout: float | None,
    keepalive: bool,
    tls: ssl.SSLContext | None = None,
) -> asyncio.BaseTransport:
    """Connect ``protocol`` to ``address`` (resolving the name each time), with TCP_NODELAY.

    With ``tls`` the whole connection is TLS (as gearmand's ``--ssl`` port is); the
    handshake counts against ``connect_timeout`` and the server's certificate is checked
    against the host name we dialled.

    Raises:
        ConnectTimeout: connecting (and the TLS handshake) took longer than ``connect_timeout``.
        ConnectError: the connection was refused, the name did not resolve, or the TLS
            handshake failed.
    """
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(connect_timeout):
            transport, _ = await loop.create_connection(
                lambda: protocol,
                address.host,
                address.port,
                ssl=tls,
                server_hostname=address.host if tls is not None else None,
            )
    except TimeoutError as exc:
        raise ConnectTimeout(f"connecting to {address} timed out") from exc
    except ssl.SSLError as exc:
        raise ConnectError(f"TLS handshake with {address} failed: {exc}") from exc
    except OSError as exc:
        raise ConnectError(f"cannot connect to {address}: {exc}") from exc
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if keepalive:
            _set_keepalive(sock)
    return transport
