"""One connection to one server: the part the client, the worker and the admin share.

How it works: a ``Connection`` is the asyncio protocol of its transport.  Each read goes
straight into the role's sans-IO core (``ClientProtocol``, ``WorkerProtocol`` or
``AdminProtocol``) and every event the core returns is handed to the role's
``dispatch``: no StreamReader, no reader task.  A role subclasses Connection and
supplies only what differs: its core and its ``dispatch`` (and, if it needs one, a
``connection_ended`` hook).  Connecting, writing, draining, what happens when the
connection is lost, and closing are written here, once.

Writing.  ``send`` either batches or writes at once, as the role's ``batch_writes``
says.  Batched (the client): packets sent during one loop pass are joined into one
``write()`` at the end of the pass, so tasks woken by one read (several results
arriving together) submit together: one system call, one server pass.  At once (the
worker, the admin): each packet is written when sent, so a long handler run on the
loop cannot hold back what another job already sent.  In both, ``cork()`` holds the
writes until ``uncork()``: a worker corks before a job's result and uncorks on the next
pass, after the slot the job freed has woken a grab loop, so the result and the next
GRAB_JOB leave in one write.

Requests.  ``request(build)`` makes a ``Request`` (the future the caller awaits, and
for a foreground submit its job) and passes it to the core as the request's tag; the
core hands the tag back with the reply, and ``dispatch`` resolves its future.

Loss.  When the connection ends (the server hung up, a read or write failed, the server
sent bytes the core refused, or we closed it) ``_end`` runs once, and decides what
everyone waiting on the connection gets:

- a request still without its reply (a submit before JOB_CREATED, a GRAB, a status,
  an echo, an admin command) fails with ``RequestLost``: nothing was acknowledged, so
  the client may send it to another server;
- a job attached after its acknowledgement (a foreground job after JOB_CREATED, a job
  the worker is running) is told ``ConnectionLost``: the client's job fails and is
  never resubmitted (the server may still run it); the worker's job runs on and its
  results are dropped (the server requeues it);
- when we close the connection with an error (``ClosedError`` when a client closes),
  both get that error instead.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar, cast

from gearshift._async import net
from gearshift.addresses import ServerAddress
from gearshift.errors import ConnectError, ConnectionLost, RemoteProtocolError

logger = logging.getLogger(__name__)

__all__ = ["HIGH_WATER", "Attached", "Connection", "Core", "Request", "RequestLost", "connect"]

#: Unwritten bytes above which ``drain()`` waits for the socket.  The transport pauses
#: us above this mark and resumes us below a quarter of it.
HIGH_WATER = 1 << 20


class RequestLost(ConnectionLost):
    """The connection ended before the request was answered: nothing was acknowledged,
    so the request may be sent to another server."""


class Core(Protocol):
    """What a connection needs of its sans-IO protocol core."""

    @property
    def pending_tags(self) -> list[object]:
        """Tags of the requests still waiting for their reply."""
        ...

    def receive_data(self, data: bytes) -> Sequence[object]:
        """Decode bytes from the server into events; RemoteProtocolError if they are bad."""
        ...

    def connection_lost(self) -> object:
        """Mark the connection dead: the core refuses to build packets afterwards."""
        ...


class Attached(Protocol):
    """A job attached to a connection after the server acknowledged it."""

    def _connection_lost(self, error: BaseException) -> None:
        """The connection ended while the job was attached to it."""
        ...


class Request:
    """The tag of a request: the future its reply resolves and, for a foreground
    submit, the job to attach when JOB_CREATED arrives."""

    __slots__ = ("future", "job")

    def __init__(self, future: asyncio.Future[Any], job: Attached | None = None) -> None:
        self.future = future
        self.job = job

    def resolve(self, value: object) -> None:
        """Set the reply, unless the caller stopped waiting."""
        if not self.future.done():
            self.future.set_result(value)

    def reject(self, error: BaseException) -> None:
        """Fail the request, unless the caller stopped waiting."""
        if not self.future.done():
            self.future.set_exception(error)
            # Retrieved: a caller that stopped waiting must not get "never retrieved".
            self.future.exception()


C = TypeVar("C", bound=Core)
Conn = TypeVar("Conn", bound="Connection[Any]")


class Connection(asyncio.Protocol, Generic[C]):
    """One connection to one server, with the role's sans-IO core ``core``.

    Subclasses implement ``dispatch`` and may set ``batch_writes`` and override
    ``connection_ended``.  Open one with ``connect``.

    Attributes:
        address: the server.
        core: the sans-IO protocol core; build packets with it, then ``send`` them.
        jobs: jobs attached after their acknowledgement, by handle (see ``attach``).
        closed: True once the connection ended, whoever ended it.
        ended: a future resolved when the connection ends.
        transport: the asyncio transport (set once connected).
    """

    #: Join the packets sent during one loop pass into one write (see the module doc).
    batch_writes = True

    transport: asyncio.WriteTransport

    def __init__(self, address: ServerAddress, core: C) -> None:
        loop = asyncio.get_running_loop()
        self.address = address
        self.core = core
        self.jobs: dict[bytes, list[Attached]] = {}
        self.closed = False
        self.ended: asyncio.Future[None] = loop.create_future()
        self._loop = loop
        self._unsent: list[bytes] | None = None
        self._unsent_bytes = 0
        self._corked = False
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._transport_closed: asyncio.Future[None] = loop.create_future()

    # -- the role's part ----------------------------------------------------------------

    @abstractmethod
    def dispatch(self, event: Any) -> None:
        """Act on one event of the core (resolve a request, update a job, ...)."""

    def connection_ended(self, error: BaseException | None, jobs: list[Attached]) -> None:
        """Called once, after the loss was handled; ``jobs`` were attached at the end."""

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.WriteTransport, transport)
        self.transport.set_write_buffer_limits(high=HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        # Called by the transport for every read: no buffer, no task in between.
        if self.closed:
            return
        try:
            events = self.core.receive_data(data)
        except RemoteProtocolError as exc:
            self._end(exc)
            return
        dispatch = self.dispatch
        for event in events:
            try:
                dispatch(event)
            except Exception:  # one bad event must not take the connection down
                logger.exception("error handling %r from %s", event, self.address)

    def eof_received(self) -> bool:
        self._end(None)
        return False  # the transport closes; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(exc)
        if not self._transport_closed.done():
            self._transport_closed.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- writing ------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Write ``data``: at the end of this loop pass (``batch_writes``), or now, or at
        ``uncork`` when corked.

        Raises:
            RequestLost: the connection has ended.
        """
        if self.closed:
            raise RequestLost(f"connection to {self.address} is closed")
        unsent = self._unsent
        if unsent is not None:
            unsent.append(data)
            self._unsent_bytes += len(data)
        elif self.batch_writes:
            self._unsent = [data]
            self._unsent_bytes = len(data)
            self._loop.call_soon(self._flush)
        else:
            self.transport.write(data)

    def _flush(self) -> None:
        unsent = self._unsent
        if unsent is None or self._corked:
            return
        self._unsent = None
        self._unsent_bytes = 0
        if unsent and not self.closed:
            # One write, not writelines: some CPython versions' writelines skip the
            # write-buffer check that pausing relies on (cpython gh-127655).  drain()
            # flushes early above HIGH_WATER, so the join copies at most about that much.
            self.transport.write(unsent[0] if len(unsent) == 1 else b"".join(unsent))

    def cork(self) -> None:
        """Hold every write until ``uncork``."""
        if not self._corked:
            self._corked = True
            if self._unsent is None:
                self._unsent = []

    def uncork(self) -> None:
        """Write what was held, in order, in one write."""
        if self._corked:
            self._corked = False
            self._flush()

    async def drain(self) -> None:
        """Wait while more than ``HIGH_WATER`` bytes are unwritten.

        Raises:
            RequestLost: the connection ended while waiting.
        """
        if self._unsent_bytes > HIGH_WATER:
            self._flush()  # hand a large batch to the transport now, then wait for it
        if self._paused:
            if self.closed:
                raise RequestLost(f"writing to {self.address} failed: connection closed")
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    # -- requests and jobs --------------------------------------------------------------

    def request(
        self, build: Callable[[Request], bytes], job: Attached | None = None
    ) -> asyncio.Future[Any]:
        """Send the packet ``build(tag)`` returns; return the future its reply resolves.

        Raises:
            RequestLost: the connection has ended.
        """
        if self.closed:
            raise RequestLost(f"connection to {self.address} is closed")
        future: asyncio.Future[Any] = self._loop.create_future()
        self.send(build(Request(future, job)))
        return future

    def attach(self, handle: bytes, job: Attached) -> None:
        """Keep ``job`` under ``handle`` until ``detach``; told if the connection ends."""
        jobs = self.jobs.get(handle)
        if jobs is None:
            self.jobs[handle] = [job]
        else:
            jobs.append(job)

    def detach(self, handle: bytes, job: Attached) -> bool:
        """Stop keeping ``job``; False if it was not attached."""
        jobs = self.jobs.get(handle)
        if not jobs or job not in jobs:
            return False
        jobs.remove(job)
        if not jobs:
            del self.jobs[handle]
        return True

    # -- ending -------------------------------------------------------------------------

    def close(self, error: BaseException | None = None) -> None:
        """Write what is held or batched, then close.

        Waiting requests and attached jobs get ``error`` (or RequestLost and
        ConnectionLost, as for a lost connection).
        """
        if self.closed:
            return
        self._corked = False
        self._flush()
        self._end(None, closing=error, graceful=True)

    async def wait_closed(self) -> None:
        """Wait until the transport has closed (a TLS one especially takes a pass or two)."""
        await asyncio.shield(self._transport_closed)

    def _end(
        self,
        error: BaseException | None,
        *,
        closing: BaseException | None = None,
        graceful: bool = False,
    ) -> None:
        """The connection is over: settle everything that waited on it, once."""
        if self.closed:
            return
        self.closed = True
        if error is not None:
            logger.warning("connection to %s failed: %s", self.address, error)
        reason = f"connection to {self.address} lost" + (f": {error}" if error else "")
        tags = self.core.pending_tags
        self.core.connection_lost()
        for tag in tags:
            if isinstance(tag, Request):
                tag.reject(closing or RequestLost(reason))
        attached = self.jobs
        self.jobs = {}
        running: list[Attached] = []
        for handle, jobs in attached.items():
            lost = closing or ConnectionLost(f"{reason} while job {handle.decode()} ran")
            for job in jobs:
                job._connection_lost(lost)
                running.append(job)
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(RequestLost(f"writing to {self.address} failed: {reason}"))
                waiter.exception()
        self._unsent = None
        self._unsent_bytes = 0
        transport = getattr(self, "transport", None)  # unset if it never connected
        if transport is not None:
            if graceful:
                transport.close()  # what was written still goes out
            else:
                transport.abort()
        self.ended.set_result(None)
        self.connection_ended(error, running)


async def connect(
    conn: Conn,
    *,
    connect_timeout: float | None,
    keepalive: bool,
    tls: ssl.SSLContext | None = None,
) -> Conn:
    """Open ``conn``'s connection to ``conn.address``; return ``conn``.

    Raises:
        ConnectTimeout: connecting took longer than ``connect_timeout``.
        ConnectError: the connect failed, or the server hung up before we could use
            the connection (a dead connection is a failed connect, so the caller
            retries or moves on to another server).
    """
    await net.open_transport(
        conn.address, conn, connect_timeout=connect_timeout, keepalive=keepalive, tls=tls
    )
    if conn.closed:
        raise ConnectError(f"{conn.address} closed the connection at once")
    return conn
