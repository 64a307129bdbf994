"""TCP connections shared by the asyncio client, worker and admin.

Server addresses live in ``gearshift.addresses`` (re-exported here for old imports).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Iterable

from gearshift.addresses import (
    DEFAULT_PORT,
    SERVERS_ENV,
    ServerAddress,
    ServersArg,
    parse_servers,
)
from gearshift.errors import ConnectError, ConnectTimeout, RemoteProtocolError

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PORT",
    "READ_SIZE",
    "SERVERS_ENV",
    "DirectProtocol",
    "ServerAddress",
    "ServersArg",
    "feed",
    "open_connection",
    "open_direct",
    "parse_servers",
]

#: Read size for socket reads, and the StreamReader's buffer limit.  Large enough that a
#: 1 MiB payload arrives in a few reads without the transport pausing and resuming on the
#: way: against 64 KiB it cut the client + worker CPU of a 1 MiB echo job by 35-40 %
#: (``python -m benchmarks.library``).  Small packets are unaffected: a read returns what
#: is there.
READ_SIZE = 1 << 20


def _set_keepalive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    # Linux lets us notice a dead peer in about a minute instead of two hours.
    for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        opt = getattr(socket, name, None)
        if opt is not None:
            sock.setsockopt(socket.IPPROTO_TCP, opt, value)


async def open_connection(
    address: ServerAddress,
    *,
    connect_timeout: float | None,
    keepalive: bool,
    tls: ssl.SSLContext | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to ``address`` (resolving its name each time), with TCP_NODELAY.

    With ``tls`` the whole connection is TLS (as gearmand's ``--ssl`` port is); the
    handshake counts against ``connect_timeout`` and the server's certificate is checked
    against the host name we dialled.

    Raises:
        ConnectTimeout: connecting (and the TLS handshake) took longer than ``connect_timeout``.
        ConnectError: the connection was refused, the name did not resolve, or the TLS
            handshake failed.
    """
    reader = asyncio.StreamReader(limit=READ_SIZE)
    writer = await _connect(
        address,
        asyncio.StreamReaderProtocol(reader),
        reader,
        connect_timeout=connect_timeout,
        keepalive=keepalive,
        tls=tls,
    )
    return reader, writer


class DirectProtocol(asyncio.StreamReaderProtocol):
    """Hands every read straight to a callback: no StreamReader buffer, no reader task.

    Writing still goes through an ``asyncio.StreamWriter`` (with ``drain``).  Reads that
    arrive before ``attach`` are kept and handed over by it.
    """

    def __init__(self) -> None:
        #: Only for the StreamWriter, which asks it for errors in ``drain``.
        self.reader = asyncio.StreamReader(limit=READ_SIZE)
        super().__init__(self.reader)
        self._on_data: Callable[[bytes], None] | None = None
        self._on_lost: Callable[[Exception | None], None] | None = None
        self._early: list[bytes] = []
        self._lost_with: tuple[Exception | None] | None = None

    def attach(
        self, on_data: Callable[[bytes], None], on_lost: Callable[[Exception | None], None]
    ) -> None:
        """Deliver ``on_data(bytes)`` per read and ``on_lost(error)`` once at the end.

        Delivery starts on the next loop pass, as it would through a reader task: the
        caller finishes setting itself up first, even if the connection already ended.
        """
        asyncio.get_running_loop().call_soon(self._start, on_data, on_lost)

    def _start(
        self, on_data: Callable[[bytes], None], on_lost: Callable[[Exception | None], None]
    ) -> None:
        self._on_data = on_data
        early, self._early = self._early, []
        for data in early:
            on_data(data)
        if self._lost_with is not None:
            on_lost(self._lost_with[0])
        else:
            self._on_lost = on_lost

    def data_received(self, data: bytes) -> None:
        if self._on_data is None:
            self._early.append(data)
        else:
            self._on_data(data)

    def eof_received(self) -> bool:
        super().eof_received()
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._on_lost is None:
            self._lost_with = (exc,)
        else:
            on_lost, self._on_lost = self._on_lost, None
            on_lost(exc)


def feed(
    receive: Callable[[bytes], Iterable[object]],
    data: bytes,
    dispatch: Callable[[object], None],
    address: ServerAddress,
) -> RemoteProtocolError | None:
    """Decode one read with ``receive`` and hand each event to ``dispatch``.

    Returns the protocol error that ends the connection, if the bytes were bad.  An
    event whose handling raises is logged and the others are still dispatched: one bad
    event must not take the connection down.
    """
    try:
        events = receive(data)
    except RemoteProtocolError as exc:
        return exc
    for event in events:
        try:
            dispatch(event)
        except Exception:
            logger.exception("error handling %r from %s", event, address)
    return None


async def open_direct(
    address: ServerAddress,
    *,
    connect_timeout: float | None,
    keepalive: bool,
    tls: ssl.SSLContext | None = None,
) -> tuple[DirectProtocol, asyncio.StreamWriter]:
    """Like ``open_connection``, but reads go to ``DirectProtocol.attach``'s callback."""
    protocol = DirectProtocol()
    writer = await _connect(
        address,
        protocol,
        protocol.reader,
        connect_timeout=connect_timeout,
        keepalive=keepalive,
        tls=tls,
    )
    return protocol, writer


async def _connect(
    address: ServerAddress,
    protocol: asyncio.StreamReaderProtocol,
    reader: asyncio.StreamReader,
    *,
    connect_timeout: float | None,
    keepalive: bool,
    tls: ssl.SSLContext | None,
) -> asyncio.StreamWriter:
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
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if keepalive:
            _set_keepalive(sock)
    return writer
