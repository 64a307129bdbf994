"""AsyncAdminClient: gearmand's text admin protocol, replies parsed into typed rows."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gearshift._async.closing import AsyncClosing
from gearshift._async.connection import Connection, Request, RequestLost, connect
from gearshift.addresses import ServerAddress, parse_servers
from gearshift.errors import ClosedError, ConnectionLost, GearmanTimeout
from gearshift.protocol.adminreplies import (
    AdminProtocol,
    AdminReply,
    ClusterMember,
    FunctionStatus,
    JobInfo,
    PriorityStatus,
    StoredJobInfo,
    StoreInfo,
    WorkerInfo,
    check_command,
    check_ok,
    check_token,
    maxqueue_command,
    parse_cluster,
    parse_error,
    parse_priority_status,
    parse_show_jobs,
    parse_show_store,
    parse_show_stored_jobs,
    parse_show_unique_jobs,
    parse_status,
    parse_workers,
)
from gearshift.tls import TLSArg, client_context

logger = logging.getLogger(__name__)


class _AdminConnection(Connection[AdminProtocol]):
    """An admin connection: each reply resolves the command it answers."""

    batch_writes = False  # one command at a time: nothing to batch

    def dispatch(self, event: AdminReply) -> None:
        tag = event.tag
        if isinstance(tag, Request):
            tag.resolve(event.lines)


class AsyncAdminClient(AsyncClosing):
    """Admin commands for one server over one connection, opened on first use.

    Commands are sent one at a time; concurrent callers queue behind a lock.

    Args:
        server: ``"host:port"`` (or a ServerAddress); None reads ``GEARMAN_SERVERS``
            and uses its first entry.
        connect_timeout: seconds allowed for connecting.
        timeout: seconds allowed for each reply; None waits forever.
        tls: as for AsyncClient: None, True, a CA path, TLSFiles or an SSLContext.
    """

    def __init__(
        self,
        server: str | ServerAddress | None = None,
        *,
        connect_timeout: float | None = 10.0,
        timeout: float | None = 30.0,
        tls: TLSArg = None,
    ) -> None:
        self.server = parse_servers(server)[0]
        self._tls = client_context(tls)
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._conn: _AdminConnection | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    async def aclose(self) -> None:
        """Close the connection; the client cannot be used afterwards."""
        self._closed = True
        conn = self._conn
        self._drop()
        if conn is not None:
            # Wait for the transport (a TLS one especially) to really close, so no
            # socket is left for the garbage collector to warn about.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await conn.wait_closed()

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    async def command(self, command: str) -> list[str]:
        """Send one admin command and return its reply lines (list replies without ``.``).

        ``ERR`` replies are returned as they are; the typed methods raise for them.

        Raises:
            ClosedError: the client was closed.
            ConnectError, ConnectTimeout: the server could not be reached.
            ConnectionLost: the server closed the connection before replying.
            GearmanTimeout: no complete reply within ``timeout``.
        """
        if self._closed:
            raise ClosedError("admin client is closed")
        check_command(command)  # before connecting
        async with self._lock:
            conn = self._conn
            if conn is None or conn.closed:
                conn = self._conn = await connect(
                    _AdminConnection(self.server, AdminProtocol()),
                    connect_timeout=self.connect_timeout,
                    keepalive=False,
                    tls=self._tls,
                )
            try:
                reply = conn.request(lambda tag: conn.core.command(command, tag=tag))
                async with asyncio.timeout(self.timeout):
                    lines: list[str] = await reply
                    return lines
            except TimeoutError as exc:
                self._drop()
                raise GearmanTimeout(f"no reply to {command!r} from {self.server}") from exc
            except RequestLost as exc:
                self._drop()
                raise ConnectionLost(f"admin {exc}") from exc
            except BaseException:
                self._drop()
                raise

    async def raw(self, command: str) -> list[str]:
        """Send any admin command; return the reply lines as the server wrote them."""
        return await self.command(command)

    async def status(self) -> list[FunctionStatus]:
        """``status``: per function, jobs queued+running, running, and workers."""
        return parse_status(await self.command("status"))

    async def priority_status(self) -> list[PriorityStatus]:
        """``prioritystatus``: per function, queued jobs by priority, and workers."""
        return parse_priority_status(await self.command("prioritystatus"))

    async def workers(self) -> list[WorkerInfo]:
        """``workers``: every connection with its client id and functions."""
        return parse_workers(await self.command("workers"))

    async def show_jobs(self) -> list[JobInfo]:
        """``show jobs``: every job the server holds."""
        return parse_show_jobs(await self.command("show jobs"))

    async def show_unique_jobs(self) -> list[str]:
        """``show unique jobs``: the unique id of every job."""
        return parse_show_unique_jobs(await self.command("show unique jobs"))

    async def show_stored_jobs(self, limit: int = 1000) -> list[StoredJobInfo]:
        """``show stored jobs N`` (gearshift): up to ``limit`` jobs from the durable queue."""
        return parse_show_stored_jobs(await self.command(f"show stored jobs {int(limit)}"))

    async def show_store(self) -> StoreInfo:
        """``show store`` (gearshift): the durable queue the server uses."""
        return parse_show_store(await self.command("show store"))

    async def cluster(self) -> list[ClusterMember]:
        """``cluster`` (gearshift): the servers sharing the store, with their leases.

        Raises:
            ServerError: the server's store is not clustered (``NO_CLUSTER``).
        """
        return parse_cluster(await self.command("cluster"))

    async def version(self) -> str:
        """``version``: the server's version string."""
        return check_ok(await self.command("version"))

    async def getpid(self) -> int:
        """``getpid``: the server's process id."""
        return int(check_ok(await self.command("getpid")))

    async def verbose(self) -> str:
        """``verbose``: the server's log level name."""
        return check_ok(await self.command("verbose"))

    async def cancel_job(self, handle: str) -> None:
        """``cancel job H``: fail the job's clients and drop it before it runs.

        Raises:
            UnknownJob: no such job.
        """
        check_ok(await self.command(f"cancel job {check_token(handle, 'handle')}"))

    async def create_function(self, function: str) -> None:
        """``create function F`` (get-or-create)."""
        check_ok(await self.command(f"create function {check_token(function, 'function')}"))

    async def drop_function(self, function: str) -> None:
        """``drop function F``.

        Raises:
            ServerError: the function is unknown or still has workers or running jobs.
        """
        check_ok(await self.command(f"drop function {check_token(function, 'function')}"))

    async def maxqueue(self, function: str, size: int | tuple[int, int, int] | None = None) -> None:
        """``maxqueue F [N | H N L]``: limit the queue (0 or less = unlimited, None = reset)."""
        check_ok(await self.command(maxqueue_command(check_token(function, "function"), size)))

    async def shutdown(self, graceful: bool = False) -> None:
        """``shutdown [graceful]``.

        gearmand since 1.1.15 answers ``ERR UNKNOWN_COMMAND`` (raised as InvalidCommand);
        gearshift and older servers stop.  The server may close the connection instead
        of answering, which counts as success.
        """
        try:
            lines = await self.command("shutdown graceful" if graceful else "shutdown")
        except ConnectionLost:
            return
        finally:
            self._drop()
        if lines and lines[0].startswith("ERR"):
            raise parse_error(lines[0])
