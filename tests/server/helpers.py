"""Raw-socket peers for server tests: send packets and admin lines, read replies."""

from __future__ import annotations

import asyncio
import struct

from gearshift.protocol.codec import encode_request
from gearshift.protocol.packets import ARGC, RES, PacketType

T = PacketType
TIMEOUT = 10.0


class Raw:
    """One TCP connection speaking raw Gearman to a server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, address: str) -> Raw:
        host, port = address.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer)

    def send(self, ptype: int, *args: bytes) -> None:
        self.writer.write(encode_request(ptype, *args))

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def recv(self, within: float = TIMEOUT) -> tuple[int, tuple[bytes, ...]]:
        header = await asyncio.wait_for(self.reader.readexactly(12), within)
        magic, ptype, size = struct.unpack(">4sII", header)
        assert magic == RES, header
        body = await asyncio.wait_for(self.reader.readexactly(size), within) if size else b""
        argc = ARGC[ptype]
        args = tuple(body.split(b"\0", argc - 1)) if argc else ()
        return ptype, args

    async def expect(self, ptype: int, within: float = TIMEOUT) -> tuple[bytes, ...]:
        got, args = await self.recv(within)
        assert got == ptype, (T(got).name, args, "expected", T(ptype).name)
        return args

    async def call(self, ptype: int, *args: bytes) -> tuple[int, tuple[bytes, ...]]:
        self.send(ptype, *args)
        return await self.recv()

    async def nothing(self, wait: float = 0.3) -> None:
        """Assert that no packet arrives within ``wait`` seconds."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), wait)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected data {data!r}")

    async def admin(self, line: str, within: float = TIMEOUT) -> str:
        """Send an admin command; return its reply (list replies up to and incl. '.')."""
        self.writer.write(line.encode() + b"\r\n")
        first = await asyncio.wait_for(self.reader.readline(), within)
        text = first.decode()
        if text.startswith(("OK", "ERR")):
            return text
        while text != "." + "\n" and not text.endswith("\n.\n"):
            line_b = await asyncio.wait_for(self.reader.readline(), within)
            if not line_b:
                break
            text += line_b.decode()
        return text

    async def closed(self, within: float = TIMEOUT) -> bool:
        """True once the server has closed the connection (EOF or reset)."""
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), within)
                if not data:
                    return True
        except TimeoutError:  # before OSError: TimeoutError is one
            return False
        except (ConnectionError, OSError):
            return True

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def worker(address: str, *functions: bytes, client_id: bytes | None = None) -> Raw:
    w = await Raw.connect(address)
    if client_id is not None:
        w.send(T.SET_CLIENT_ID, client_id)
    for f in functions:
        w.send(T.CAN_DO, f)
    return w


async def wait_for(predicate, within: float = TIMEOUT) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)
