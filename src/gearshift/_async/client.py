"""AsyncClient: submit jobs to one or more Gearman servers and follow their progress.

How it works: the client keeps at most one connection per server, opened on first use.
Each is a ``gearshift._async.connection.Connection`` around a ``ClientProtocol`` (the
sans-IO core), which does the reading, the batched writing and the loss handling; the
client adds only its dispatch: a JOB_CREATED resolves the submit that was waiting for
it and attaches the foreground ``AsyncJob`` to its handle, WORK_* packets go to the
jobs attached to their handle.  Thousands of jobs can be in flight on one connection.

Routing and failover: a job goes to the servers in the order ``routing`` gives
(by default a rendezvous hash of (function, unique), so the same unique always reaches
the same server and coalesces there).  If connecting fails, or the connection drops
before JOB_CREATED, the next server is tried.  Once JOB_CREATED has arrived the job is
the server's; losing the connection then fails the job with ConnectionLost and nothing
is resubmitted (the job may still run).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar, overload

from gearshift._async.closing import AsyncClosing
from gearshift._async.connection import Attached, Connection, Request, RequestLost, connect
from gearshift._async.job import AsyncJob, JobHandle
from gearshift.addresses import ServerAddress, ServersArg, parse_servers
from gearshift.codecs import Codec, get_codec
from gearshift.errors import (
    ClosedError,
    ConnectError,
    ConnectionLost,
    GearmanTimeout,
    JobTimeout,
    ServerDraining,
    ServerUnavailable,
)
from gearshift.protocol.client import (
    ClientEvent,
    ClientProtocol,
    EchoReply,
    JobCreated,
    JobStatus,
    OptionAccepted,
    RequestFailed,
    ServerErrorReceived,
    StatusReply,
    WorkUpdate,
    check_submit,
)
from gearshift.protocol.packets import Priority
from gearshift.tls import TLSArg, client_context

logger = logging.getLogger(__name__)

__all__ = ["AsyncClient", "JobRequest", "PhpTaskNames"]

T = TypeVar("T")
R = TypeVar("R")


class _ConnectAbandoned(Exception):
    """The task connecting to a server was cancelled; whoever waited on it retries."""


class _ClientConnection(Connection[ClientProtocol]):
    """A client connection: replies resolve their requests, WORK_* packets go to the
    jobs attached to their handle.  Writes made in one loop pass share one write."""

    def __init__(
        self, address: ServerAddress, on_ended: Callable[[_ClientConnection], None]
    ) -> None:
        super().__init__(address, ClientProtocol())
        self._on_ended = on_ended

    def dispatch(self, event: ClientEvent) -> None:
        if isinstance(event, WorkUpdate):
            jobs = self.jobs.get(event.handle)
            if not jobs:
                return
            if event.final:
                del self.jobs[event.handle]
            for attached in list(jobs):
                assert isinstance(attached, AsyncJob)
                attached._update(event)
        elif isinstance(event, JobCreated):
            tag = event.tag
            assert isinstance(tag, Request)
            job = tag.job
            if tag.future.done():  # the submitter gave up waiting
                if job is not None:
                    self.core.forget(event.handle)
                return
            handle = JobHandle(event.handle.decode("utf-8", "replace"), self.address)
            if job is not None:
                assert isinstance(job, AsyncJob)
                self.attach(event.handle, job)
                job._created(handle, functools.partial(self._detach_job, event.handle, job))
            tag.future.set_result(handle)
        elif isinstance(event, ServerErrorReceived):
            logger.warning("%s sent an unsolicited error: %s", self.address, event.error)
        else:
            tag = event.tag
            assert isinstance(tag, Request)
            if isinstance(event, RequestFailed):
                tag.reject(event.error)
            elif isinstance(event, StatusReply):
                tag.resolve(event.status)
            elif isinstance(event, EchoReply):
                tag.resolve(event.data)
            elif isinstance(event, OptionAccepted):
                tag.resolve(event.option)

    def _detach_job(self, handle: bytes, job: AsyncJob[Any]) -> None:
        if self.detach(handle, job):
            self.core.forget(handle)

    def connection_ended(self, error: BaseException | None, jobs: list[Attached]) -> None:
        self._on_ended(self)


@dataclass(frozen=True, slots=True)
class JobRequest:
    """One job for ``submit_many``: what ``submit_job`` / ``submit_background`` take."""

    function: str | bytes
    data: Any = None
    unique: str | bytes | None = None
    priority: Priority = Priority.NORMAL


class PhpTaskNames:
    """PHP's ``addTask*`` names, the same on AsyncClient and the blocking Client: each
    adds one task with ``add_task``, which the class mixing this in defines."""

    add_task: Callable[..., None]

    def add_task_high(
        self, function: str | bytes, data: Any = None, unique: str | None = None
    ) -> None:
        """PHP ``addTaskHigh``."""
        self.add_task(function, data, unique=unique, priority=Priority.HIGH)

    def add_task_low(
        self, function: str | bytes, data: Any = None, unique: str | None = None
    ) -> None:
        """PHP ``addTaskLow``."""
        self.add_task(function, data, unique=unique, priority=Priority.LOW)

    def add_task_background(
        self, function: str | bytes, data: Any = None, unique: str | None = None
    ) -> None:
        """PHP ``addTaskBackground``."""
        self.add_task(function, data, unique=unique, background=True)

    def add_task_high_background(
        self, function: str | bytes, data: Any = None, unique: str | None = None
    ) -> None:
        """PHP ``addTaskHighBackground``."""
        self.add_task(function, data, unique=unique, priority=Priority.HIGH, background=True)

    def add_task_low_background(
        self, function: str | bytes, data: Any = None, unique: str | None = None
    ) -> None:
        """PHP ``addTaskLowBackground``."""
        self.add_task(function, data, unique=unique, priority=Priority.LOW, background=True)


def _option_packet(proto: ClientProtocol, option: bytes, tag: object) -> bytes:
    return proto.option(option, tag=tag)


def _submit_packet(
    proto: ClientProtocol,
    function: bytes,
    data: bytes,
    unique: bytes,
    priority: Priority,
    background: bool,
    when: int | None,
    tag: object,
) -> bytes:
    return proto.submit(
        function, data, unique=unique, priority=priority, background=background, when=when, tag=tag
    )


def _bytes(value: str | bytes, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"{what} must be str or bytes, not {type(value).__name__}")


def _epoch(when: datetime | float | int) -> int:
    if isinstance(when, datetime):
        return int(when.timestamp())
    return int(when)


class AsyncClient(AsyncClosing, PhpTaskNames, Generic[T]):
    """Submit jobs and query them, over one connection per server.

    Args:
        servers: ``"h1:4730,h2:4730"``, a list of addresses, or None for
            ``GEARMAN_SERVERS`` (default ``127.0.0.1:4730``).
        client_id: sent with SET_CLIENT_ID on every connection (shown by ``workers``).
        codec: payload codec: None (bytes), ``"json"``, ``"text"``, ``"pickle"`` or a
            Codec object; data is encoded with it and results decoded.
        timeout: default seconds ``submit()`` and ``job.result()`` wait; None = forever.
        connect_timeout: seconds allowed to connect to one server.
        routing: ``"hash"`` (rendezvous hash of function and unique; jobs without a
            unique go round-robin), ``"round_robin"`` or ``"failover"`` (in list order).
        keepalive: enable TCP keepalive on connections.
        exceptions: send OPTION_REQ ``exceptions`` so WORK_EXCEPTION reaches us.
        retry_interval: seconds a server that failed is tried only after the others.
        tls: None (plaintext), True (system CAs), a CA file path, ``gearshift.tls.TLSFiles``
            (CA plus client certificate) or an ``ssl.SSLContext``.
    """

    @overload
    def __init__(
        self: AsyncClient[bytes],
        servers: ServersArg | None = None,
        *,
        client_id: str | None = None,
        codec: None = None,
        timeout: float | None = None,
        connect_timeout: float | None = 10.0,
        routing: str = "hash",
        keepalive: bool = True,
        exceptions: bool = True,
        retry_interval: float = 5.0,
        tls: TLSArg = None,
    ) -> None: ...

    @overload
    def __init__(
        self: AsyncClient[R],
        servers: ServersArg | None = None,
        *,
        client_id: str | None = None,
        codec: Codec[R],
        timeout: float | None = None,
        connect_timeout: float | None = 10.0,
        routing: str = "hash",
        keepalive: bool = True,
        exceptions: bool = True,
        retry_interval: float = 5.0,
        tls: TLSArg = None,
    ) -> None: ...

    @overload
    def __init__(
        self: AsyncClient[Any],
        servers: ServersArg | None = None,
        *,
        client_id: str | None = None,
        codec: str,
        timeout: float | None = None,
        connect_timeout: float | None = 10.0,
        routing: str = "hash",
        keepalive: bool = True,
        exceptions: bool = True,
        retry_interval: float = 5.0,
        tls: TLSArg = None,
    ) -> None: ...

    def __init__(
        self,
        servers: ServersArg | None = None,
        *,
        client_id: str | None = None,
        codec: Codec[Any] | str | None = None,
        timeout: float | None = None,
        connect_timeout: float | None = 10.0,
        routing: str = "hash",
        keepalive: bool = True,
        exceptions: bool = True,
        retry_interval: float = 5.0,
        tls: TLSArg = None,
    ) -> None:
        if routing not in ("hash", "round_robin", "failover"):
            raise ValueError("routing must be 'hash', 'round_robin' or 'failover'")
        self.servers = parse_servers(servers)
        self.client_id = client_id
        self.codec: Codec[T] = get_codec(codec)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.routing = routing
        self.keepalive = keepalive
        self.retry_interval = retry_interval
        self._tls = client_context(tls)
        self._options: list[bytes] = [b"exceptions"] if exceptions else []
        self._conns: dict[ServerAddress, _ClientConnection] = {}
        self._connecting: dict[ServerAddress, asyncio.Future[_ClientConnection]] = {}
        self._down_until: dict[ServerAddress, float] = {}
        self._rr = 0
        self._closed = False
        self._task_set: list[tuple[JobRequest, bool]] = []

    async def aclose(self) -> None:
        """Close every connection; jobs still waiting fail with ClosedError."""
        self._closed = True
        conns = list(self._conns.values())
        self._conns.clear()
        for conn in conns:
            conn.close(ClosedError("client closed"))

    # -- connections ----------------------------------------------------------------------

    def _candidates(self, function: bytes, unique: bytes) -> list[ServerAddress]:
        servers = self.servers
        if len(servers) == 1:
            return list(servers)
        if self.routing == "hash" and unique:
            key = b"\0" + function + b"\0" + unique

            def weight(s: ServerAddress) -> bytes:
                return hashlib.blake2b(str(s).encode() + key, digest_size=8).digest()

            order = sorted(servers, key=weight, reverse=True)
        elif self.routing == "failover":
            order = list(servers)
        else:
            start = self._rr % len(servers)
            self._rr += 1
            order = servers[start:] + servers[:start]
        now = asyncio.get_running_loop().time()
        healthy = [s for s in order if self._down_until.get(s, 0.0) <= now]
        return healthy + [s for s in order if s not in healthy]

    def _mark_down(self, address: ServerAddress) -> None:
        self._down_until[address] = asyncio.get_running_loop().time() + self.retry_interval

    def _forget(self, conn: _ClientConnection) -> None:
        if self._conns.get(conn.address) is conn:
            del self._conns[conn.address]
            if not self._closed:
                self._mark_down(conn.address)

    async def _connection(self, address: ServerAddress) -> _ClientConnection:
        while True:
            if self._closed:
                raise ClosedError("client is closed")
            conn = self._conns.get(address)
            if conn is not None and not conn.closed:
                return conn
            # One connect per server at a time.  Whoever asks meanwhile waits for its
            # outcome, and all of them resume in the same loop pass, so their packets
            # share a write.  If the connecting task was cancelled, they try again.
            connecting = self._connecting.get(address)
            if connecting is None:
                break
            try:
                return await asyncio.shield(connecting)
            except _ConnectAbandoned:
                continue
        connecting = asyncio.get_running_loop().create_future()
        self._connecting[address] = connecting
        try:
            conn = await self._connect(address)
        except BaseException as exc:
            abandoned = isinstance(exc, asyncio.CancelledError)
            connecting.set_exception(_ConnectAbandoned() if abandoned else exc)
            connecting.exception()  # marked retrieved: nobody may be waiting
            raise
        else:
            connecting.set_result(conn)
            return conn
        finally:
            del self._connecting[address]

    async def _connect(self, address: ServerAddress) -> _ClientConnection:
        try:
            conn = await connect(
                _ClientConnection(address, self._forget),
                connect_timeout=self.connect_timeout,
                keepalive=self.keepalive,
                tls=self._tls,
            )
        except (ConnectError, GearmanTimeout):
            self._mark_down(address)
            raise
        if self._closed:
            conn.close()
            raise ClosedError("client is closed")
        self._down_until.pop(address, None)
        self._conns[address] = conn
        if self.client_id:
            conn.send(conn.core.set_client_id(self.client_id.encode()))
        for option in self._options:
            # Pipelined: a server that refuses the option only loses us exceptions.
            future = conn.request(functools.partial(_option_packet, conn.core, option))
            future.add_done_callback(self._option_done)
        return conn

    def _option_done(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None:
            logger.warning("server refused an option: %s", future.exception())

    # -- submitting -----------------------------------------------------------------------

    async def _submit(
        self,
        function: str | bytes,
        data: Any,
        unique: str | bytes | None,
        priority: Priority,
        background: bool,
        when: datetime | float | int | None,
        job: AsyncJob[Any] | None,
    ) -> JobHandle:
        fn = _bytes(function, "function")
        uq = _bytes(unique, "unique") if unique is not None else b""
        payload = self.codec.encode(data)
        epoch = _epoch(when) if when is not None else None
        priority = Priority(priority)
        # A bad argument raises before anything is sent.
        check_submit(fn, uq, priority, background, epoch)
        failures: list[str] = []
        for address in self._candidates(fn, uq):
            try:
                conn = await self._connection(address)
            except (ConnectError, GearmanTimeout) as exc:
                failures.append(str(exc))
                continue
            try:
                future = conn.request(
                    functools.partial(
                        _submit_packet, conn.core, fn, payload, uq, priority, background, epoch
                    ),
                    job,
                )
                await conn.drain()
                handle: JobHandle = await future
                return handle
            except RequestLost as exc:
                # Nothing was acknowledged: the next server may take the job.
                logger.info("submit to %s failed before JOB_CREATED: %s", address, exc)
                failures.append(str(exc))
                continue
            except ServerDraining as exc:
                # The server is shutting down and queued nothing: so may the next one.
                logger.info("%s is shutting down: %s", address, exc)
                failures.append(f"{address}: {exc}")
                continue
        raise ServerUnavailable("no server accepted the job: " + "; ".join(failures))

    async def submit_job(
        self,
        function: str | bytes,
        data: Any = None,
        *,
        unique: str | bytes | None = None,
        priority: Priority = Priority.NORMAL,
        on_data: Callable[[T], object] | None = None,
        on_warning: Callable[[T], object] | None = None,
        on_status: Callable[[int, int], object] | None = None,
    ) -> AsyncJob[T]:
        """Submit a foreground job; return it once the server acknowledged it.

        Args:
            function: the function name.
            data: the payload (encoded with the client's codec).
            unique: the unique id; jobs with equal (function, unique) coalesce on the
                server.  None sends an empty unique (never coalesced).
            priority: Priority.HIGH, NORMAL or LOW.
            on_data, on_warning, on_status: called on the event loop for each update.

        Raises:
            ServerUnavailable: no server could be reached or kept the connection
                until JOB_CREATED.
            ServerError: the server refused the job (QueueFull, ArgumentTooLarge, ...).
            LocalProtocolError: NUL bytes in function or unique, or a unique over 64 bytes.
        """
        job: AsyncJob[T] = AsyncJob(
            _bytes(function, "function").decode("utf-8", "replace"),
            _bytes(unique or b"", "unique").decode("utf-8", "replace"),
            self.codec,
            on_data=on_data,
            on_warning=on_warning,
            on_status=on_status,
        )
        try:
            await self._submit(function, data, unique, priority, False, None, job)
        except BaseException:
            job.cancel()
            raise
        return job

    async def submit(
        self,
        function: str | bytes,
        data: Any = None,
        *,
        unique: str | bytes | None = None,
        priority: Priority = Priority.NORMAL,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> T:
        """Run a foreground job and return its result.

        Args:
            function: the function name.
            data: the payload.
            unique: the unique id (None: empty, never coalesced).
            priority: Priority.HIGH, NORMAL or LOW.
            timeout: seconds for the whole call (submit and wait); defaults to the
                client's ``timeout``.

        Raises:
            JobFailed, JobException: the job failed or raised.
            JobTimeout: the timeout passed (the job may still run).
            ConnectionLost: the connection dropped after JOB_CREATED.
            ServerUnavailable, ServerError: as for ``submit_job``.
        """
        limit = self.timeout if timeout is None else timeout
        job: AsyncJob[T] | None = None
        try:
            async with asyncio.timeout(limit) as scope:
                job = await self.submit_job(function, data, unique=unique, priority=priority)
                return await job.result()
        except TimeoutError as exc:
            if not scope.expired():
                raise
            if job is not None:
                job.cancel()
            raise JobTimeout(f"{function!r} job did not finish within {limit}s") from exc

    async def submit_background(
        self,
        function: str | bytes,
        data: Any = None,
        *,
        unique: str | bytes | None = None,
        priority: Priority = Priority.NORMAL,
        when: datetime | float | int | None = None,
    ) -> JobHandle:
        """Queue a background job; return its handle (with ``.server``).

        Args:
            function: the function name.
            data: the payload.
            unique: the unique id; None generates a UUID so background jobs never
                overwrite each other in a server's persistent queue.
            priority: Priority.HIGH, NORMAL or LOW.
            when: run no earlier than this (epoch seconds or an aware datetime);
                sends SUBMIT_JOB_EPOCH, which gearmand only offers at NORMAL priority.

        Raises:
            ServerUnavailable, ServerError, LocalProtocolError: as for ``submit_job``.
        """
        if unique is None:
            unique = str(uuid.uuid4())
        return await self._submit(function, data, unique, priority, True, when, None)

    @overload
    async def submit_many(
        self,
        requests: Iterable[JobRequest | tuple[str | bytes, Any]],
        *,
        background: Literal[False] = False,
    ) -> list[AsyncJob[T]]: ...

    @overload
    async def submit_many(
        self,
        requests: Iterable[JobRequest | tuple[str | bytes, Any]],
        *,
        background: Literal[True],
    ) -> list[JobHandle]: ...

    async def submit_many(
        self,
        requests: Iterable[JobRequest | tuple[str | bytes, Any]],
        *,
        background: bool = False,
    ) -> list[AsyncJob[T]] | list[JobHandle]:
        """Submit many jobs at once, pipelined; return them in the order given.

        Args:
            requests: JobRequest objects or ``(function, data)`` pairs.
            background: submit them as background jobs and return their handles.

        Raises:
            As ``submit_job`` / ``submit_background``; jobs submitted before the one
            that failed are still running on the server.
        """
        reqs = [r if isinstance(r, JobRequest) else JobRequest(r[0], r[1]) for r in requests]
        if background:
            return list(
                await asyncio.gather(
                    *(
                        self.submit_background(
                            r.function, r.data, unique=r.unique, priority=r.priority
                        )
                        for r in reqs
                    )
                )
            )
        return list(
            await asyncio.gather(
                *(
                    self.submit_job(r.function, r.data, unique=r.unique, priority=r.priority)
                    for r in reqs
                )
            )
        )

    async def ping(self) -> float:
        """Seconds an ECHO takes to the first reachable server.

        Raises:
            ServerUnavailable: no server answered.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self.echo(b"ping")
        return loop.time() - started

    async def gather(
        self,
        *jobs: AsyncJob[T],
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> list[T | BaseException]:
        """Wait for several jobs; return each result or the exception it ended with.

        Jobs still running when ``timeout`` passes get a JobTimeout in their place.
        """

        async def one(job: AsyncJob[T]) -> T | BaseException:
            try:
                return await job.result(timeout)
            except Exception as exc:
                return exc

        return list(await asyncio.gather(*(one(job) for job in jobs)))

    # -- queries --------------------------------------------------------------------------

    async def _ask(
        self, address: ServerAddress, build: Callable[[ClientProtocol, object], bytes]
    ) -> Any:
        conn = await self._connection(address)
        try:
            future = conn.request(lambda tag: build(conn.core, tag))
            async with asyncio.timeout(self.timeout):
                return await future
        except RequestLost as exc:
            raise ConnectionLost(str(exc)) from exc

    async def _ask_all(
        self, servers: Iterable[ServerAddress], build: Callable[[ClientProtocol, object], bytes]
    ) -> JobStatus:
        servers = list(servers)
        results = await asyncio.gather(
            *(self._ask(s, build) for s in servers), return_exceptions=True
        )
        statuses = [r for r in results if isinstance(r, JobStatus)]
        for status in statuses:
            if status.known:
                return status
        if statuses:
            return statuses[0]
        first = results[0]
        assert isinstance(first, BaseException)
        raise first

    async def get_status(self, handle: str | bytes) -> JobStatus:
        """GET_STATUS: what the server knows about a job handle.

        A JobHandle asks the server that created it; a plain string asks every server
        and returns the answer of the one that knows the job.
        """
        raw = _bytes(handle, "handle")
        server = getattr(handle, "server", None)
        servers = [server] if isinstance(server, ServerAddress) else self.servers
        return await self._ask_all(servers, lambda p, tag: p.get_status(raw, tag=tag))

    async def get_status_by_unique(
        self, unique: str | bytes, *, function: str | bytes | None = None
    ) -> JobStatus:
        """GET_STATUS_UNIQUE: a job's status by unique id, with its waiting clients.

        With ``function``, only the server the (function, unique) pair hashes to is
        asked; otherwise every server is.
        """
        raw = _bytes(unique, "unique")
        if function is not None and self.routing == "hash":
            servers = self._candidates(_bytes(function, "function"), raw)[:1]
        else:
            servers = self.servers
        return await self._ask_all(servers, lambda p, tag: p.get_status_unique(raw, tag=tag))

    async def echo(self, data: bytes = b"ping", *, server: str | None = None) -> bytes:
        """ECHO_REQ: the server sends ``data`` back (to the first reachable server,
        or to ``server``)."""
        servers = [ServerAddress.parse(server)] if server else self.servers
        last: BaseException | None = None
        for address in servers:
            try:
                result: bytes = await self._ask(address, lambda p, tag: p.echo(data, tag=tag))
                return result
            except (ConnectError, GearmanTimeout, ConnectionLost) as exc:
                last = exc
        raise ServerUnavailable(f"no server answered the echo: {last}")

    async def set_option(self, name: str) -> None:
        """OPTION_REQ on every open connection and on those opened later.

        Raises:
            UnknownOption: a server refused it.
        """
        option = name.encode()
        for conn in list(self._conns.values()):
            try:
                await conn.request(functools.partial(_option_packet, conn.core, option))
            except RequestLost:
                continue  # that connection is gone; the next one is sent the option
        if option not in self._options:
            self._options.append(option)

    # -- PHP-style names ------------------------------------------------------------------

    def add_task(
        self,
        function: str | bytes,
        data: Any = None,
        *,
        unique: str | bytes | None = None,
        priority: Priority = Priority.NORMAL,
        background: bool = False,
    ) -> None:
        """PHP ``addTask*``: queue a job locally until ``run_tasks()`` sends them all."""
        self._task_set.append((JobRequest(function, data, unique, priority), background))

    async def run_tasks(
        self,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> list[T | JobHandle | BaseException]:
        """PHP ``runTasks``: submit every added task (pipelined) and wait for them.

        Returns one entry per task, in the order added: the result of a foreground
        task, the handle of a background one, or the exception either ended with.
        """
        tasks, self._task_set = self._task_set, []

        async def one(request: JobRequest, background: bool) -> T | JobHandle | BaseException:
            try:
                if background:
                    return await self.submit_background(
                        request.function,
                        request.data,
                        unique=request.unique,
                        priority=request.priority,
                    )
                job = await self.submit_job(
                    request.function,
                    request.data,
                    unique=request.unique,
                    priority=request.priority,
                )
                return await job.result(timeout)
            except Exception as exc:
                return exc

        return list(await asyncio.gather(*(one(r, bg) for r, bg in tasks)))

    async def do_normal(
        self, function: str | bytes, data: Any = None, unique: str | None = None
    ) -> T:
        """PHP ``doNormal``: ``submit`` at normal priority."""
        return await self.submit(function, data, unique=unique)

    async def do_high(
        self, function: str | bytes, data: Any = None, unique: str | None = None
    ) -> T:
        """PHP ``doHigh``: ``submit`` at high priority."""
        return await self.submit(function, data, unique=unique, priority=Priority.HIGH)

    async def do_low(self, function: str | bytes, data: Any = None, unique: str | None = None) -> T:
        """PHP ``doLow``: ``submit`` at low priority."""
        return await self.submit(function, data, unique=unique, priority=Priority.LOW)

    async def do_background(
        self, function: str | bytes, data: Any = None, unique: str | None = None
    ) -> JobHandle:
        """PHP ``doBackground``."""
        return await self.submit_background(function, data, unique=unique)

    async def do_high_background(
        self, function: str | bytes, data: Any = None, unique: str | None = None
    ) -> JobHandle:
        """PHP ``doHighBackground``."""
        return await self.submit_background(function, data, unique=unique, priority=Priority.HIGH)

    async def do_low_background(
        self, function: str | bytes, data: Any = None, unique: str | None = None
    ) -> JobHandle:
        """PHP ``doLowBackground``."""
        return await self.submit_background(function, data, unique=unique, priority=Priority.LOW)

    async def job_status(self, handle: str | bytes) -> JobStatus:
        """PHP ``jobStatus``: ``get_status``."""
        return await self.get_status(handle)

    async def job_status_by_unique_key(self, unique: str | bytes) -> JobStatus:
        """PHP ``jobStatusByUniqueKey``: ``get_status_by_unique``."""
        return await self.get_status_by_unique(unique)
