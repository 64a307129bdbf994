"""Helpers for client tests: raw sockets speaking the binary protocol, and waiting."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

from gearshift.protocol.codec import Decoder, Packet, encode_request


class RawConn:
    """A blocking raw-protocol connection, for setting up server state in tests."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.decoder = Decoder(allow_admin=False)
        self.pending: list[Packet] = []

    def send(self, ptype: int, *args: bytes) -> None:
        self.sock.sendall(encode_request(ptype, *args))

    def recv(self) -> Packet:
        while not self.pending:
            data = self.sock.recv(65536)
            assert data, "server closed the connection"
            self.pending.extend(p for p in self.decoder.feed(data) if isinstance(p, Packet))
        return self.pending.pop(0)

    def close(self) -> None:
        self.sock.close()


def wait_until(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


async def await_until(cond: Callable[[], bool | Awaitable[bool]], limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while True:
        result = cond()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
