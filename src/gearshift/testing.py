"""Run a gearshift server inside your own tests.

Async tests::

    from gearshift.testing import serve

    async def test_reverse():
        async with serve() as server:          # port 0 on 127.0.0.1, memory store
            client = AsyncClient([server.address])
            ...

Synchronous tests (the server runs its own event loop in a background thread)::

    from gearshift.testing import ServerThread

    def test_reverse():
        with ServerThread(job_retries=2) as server:
            with Client([server.address]) as client:
                ...

Keyword arguments are ``ServerConfig`` fields; ``queue_type`` defaults to the memory
store so that tests leave nothing behind.  The server is built as the command line
builds it (``gearshift.build.build_server``): with the HTTP listener when ``http=True``,
and the cluster when the store is clustered.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

from gearshift.build import build_server
from gearshift.server.config import ServerConfig
from gearshift.server.server import GearmanServer
from gearshift.store import Store

__all__ = ["RunningServer", "ServerThread", "serve"]


def _config(options: dict[str, Any]) -> ServerConfig:
    options.setdefault("port", 0)
    options.setdefault("listen", "127.0.0.1")
    options.setdefault("queue_type", "builtin")
    return ServerConfig(**options)


class RunningServer:
    """A started server: ``address`` is ``"127.0.0.1:PORT"``."""

    def __init__(self, server: GearmanServer) -> None:
        self.server = server
        host, port = server.addresses[0]
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"

    @property
    def scheduler(self) -> Any:
        """The server's scheduler, for white-box assertions."""
        return self.server.scheduler


@contextlib.asynccontextmanager
async def serve(*, store: Store | None = None, **options: Any) -> AsyncIterator[RunningServer]:
    """Start a server on a free port for the duration of the ``async with`` block.

    Args:
        store: a Store instance to use instead of the one ``queue_type`` names.
        **options: ``ServerConfig`` fields (``job_retries=2``, ``exceptions=True``...).
    """
    server = build_server(_config(options), store=store)
    await server.start()
    try:
        yield RunningServer(server)
    finally:
        await server.shutdown(False)


class ServerThread:
    """A server on its own event loop in a daemon thread; a sync context manager.

    Args:
        store: a Store instance to use instead of the one ``queue_type`` names.
        **options: ``ServerConfig`` fields.
    """

    def __init__(self, *, store: Store | None = None, **options: Any) -> None:
        self._config = _config(options)
        self._store = store
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.server: GearmanServer | None = None
        self.address = ""
        self.host = ""
        self.port = 0

    def start(self) -> ServerThread:
        """Start the thread and wait until the server listens."""
        self._thread = threading.Thread(target=self._run, name="gearshift-server", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        server = build_server(self._config, store=self._store)
        try:
            await server.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self.server = server
        self.host, self.port = server.addresses[0]
        self.address = f"{self.host}:{self.port}"
        self._ready.set()
        await server.serve_forever()

    def stop(self, graceful: bool = False, timeout: float = 30.0) -> None:
        """Shut the server down and join the thread."""
        loop, server = self._loop, self.server
        if loop is not None and server is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(server.request_shutdown, graceful)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
