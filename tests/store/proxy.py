"""A TCP proxy a test controls: put it between a store and its database, then cut it."""

from __future__ import annotations

import asyncio
import contextlib

from tests.procs import free_port


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target_port``; ``cut()`` breaks it, ``restore()`` heals it.

    ``freeze()`` / ``thaw()`` stop and resume forwarding without closing anything.

    While cut, the listener is closed (new connections are refused) and every open
    connection is reset, which is what a database restart or a pulled cable looks like
    to the store.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.accepted = 0

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._conns.update((writer, up_writer))
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self._tasks.update(pumps)
        await asyncio.gather(*pumps, return_exceptions=True)
        self._tasks.difference_update(pumps)
        for w in (writer, up_writer):
            self._conns.discard(w)
            w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()

    async def cut(self) -> None:
        """Refuse new connections and reset the open ones."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for w in list(self._conns):
            w.transport.abort()
        self._conns.clear()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            # Since 3.12 this also waits for the handlers, which end now.
            await server.wait_closed()

    async def restore(self) -> None:
        """Accept connections again, on the same port."""
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.port, reuse_address=True
            )

    def freeze(self) -> None:
        """Keep every connection open but stop forwarding: a silent network partition."""
        self._flowing.clear()

    def thaw(self) -> None:
        """Forward again (what was held back is delivered)."""
        self._flowing.set()

    async def close(self) -> None:
        await self.cut()
