"""AsyncWorker: run handlers for Gearman jobs from one or more servers.

How it works: the worker keeps one connection per server, each owned by a supervisor
task that connects, registers (SET_CLIENT_ID, CAN_DO / CAN_DO_TIMEOUT, OPTION_REQ),
and reconnects with jittered exponential backoff when the connection drops, registering
again.  Per connection a grab loop runs while the worker is running:

    take a free slot -> GRAB_JOB_UNIQ -> JOB_ASSIGN_UNIQ: start the job (it keeps the slot)
                                      -> NO_JOB: give the slot back, PRE_SLEEP, wait for NOOP

so a job is only ever grabbed when a slot (``concurrency``) is free and nothing is held
in a local queue.  Async handlers run as tasks on the loop; plain functions run in a
thread pool (``executor="thread"``), in child processes (``executor="process"``, see
``gearshift._async.processes``) or on the loop itself (``executor=None``).  A job's
``send_*`` methods are thread-safe: from a pool thread they are handed to the loop with
``call_soon_threadsafe``, which keeps their order with the final result.  Results for
a job whose connection dropped are discarded: the server has already requeued it.

Stopping gracefully clears the grabbing flag (no new jobs), waits up to
``shutdown_timeout`` for running jobs, then sends RESET_ABILITIES (which would requeue
running jobs, so it comes after them) and closes.  Jobs still running at the deadline
are cancelled and their connection closed, so the server requeues them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import signal
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from gearshift._async.closing import AsyncClosing
from gearshift._async.connection import Attached, Connection, Request, connect
from gearshift._async.threads import DaemonThreadPool
from gearshift.addresses import ServerAddress, ServersArg, parse_servers
from gearshift.codecs import Codec, describe_exception, get_codec
from gearshift.errors import (
    BusyError,
    ClosedError,
    ConnectError,
    ConnectionLost,
    GearmanTimeout,
    JobFailed,
    LocalProtocolError,
)
from gearshift.protocol.client import RequestFailed
from gearshift.protocol.worker import (
    GrabState,
    JobAssigned,
    NoJob,
    Noop,
    WorkerErrorReceived,
    WorkerEvent,
    WorkerProtocol,
)
from gearshift.tls import TLSArg, client_context

if TYPE_CHECKING:
    from gearshift._async.processes import ProcessPool

logger = logging.getLogger(__name__)

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

Handler = Callable[["WorkerJob[Any]"], Any]
Executor = Literal["thread", "process"] | None
EXECUTORS: tuple[Executor, ...] = ("thread", "process", None)


@dataclass(frozen=True, slots=True)
class _Function:
    name: bytes
    handler: Handler
    timeout: float | None
    is_async: bool

    @property
    def timeout_ms(self) -> int | None:
        return None if self.timeout is None else max(1, int(self.timeout * 1000))


def _is_async(handler: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(handler):
        return True
    call = getattr(handler, "__call__", None)  # noqa: B004 - instances with async __call__
    return call is not None and inspect.iscoroutinefunction(call)


class WorkerJob(Generic[T]):
    """The job a handler receives.

    Attributes:
        handle: the server's job handle.
        function: the function name.
        unique: the unique id the client sent (empty when unknown).
        data: the payload decoded with the worker's codec.
        raw: the payload as bytes.
        reducer: the reducer name (GRAB_JOB_ALL only).

    ``send_data``, ``send_warning``, ``send_status`` and ``fail`` are plain methods,
    not coroutines: they only queue bytes, and may be called from async handlers and
    from the threads blocking handlers run in alike.
    """

    def __init__(self, conn: _WorkerConnection, assigned: JobAssigned, codec: Codec[T]) -> None:
        self.handle = assigned.handle.decode("utf-8", "replace")
        self.function = assigned.function.decode("utf-8", "replace")
        self.unique = assigned.unique.decode("utf-8", "replace")
        self.reducer = assigned.reducer.decode("utf-8", "replace")
        self.raw = assigned.data
        self.data: T = None  # type: ignore[assignment]  # set by the worker before the handler runs
        self._handle = assigned.handle
        self._codec = codec
        self._conn = conn
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.finished = False
        #: Why results are no longer sent: the connection the job came from ended.
        self._lost: BaseException | None = None

    def __repr__(self) -> str:
        return f"<WorkerJob {self.function} handle={self.handle}>"

    def _emit(self, build: Callable[[WorkerProtocol], bytes], final: bool) -> None:
        if self.finished:
            logger.debug("job %s already finished; update dropped", self.handle)
            return
        if final:
            self.finished = True
        if self._lost is not None:
            logger.debug("job %s: %s; update dropped", self.handle, self._lost)
        elif threading.get_ident() == self._loop_thread:
            self._conn.send_job(self, build, final)
        else:
            self._loop.call_soon_threadsafe(self._conn.send_job, self, build, final)

    def _connection_lost(self, error: BaseException) -> None:
        # The server requeues the job; whatever the handler sends from now on is dropped.
        self._lost = error

    def send_data(self, data: Any) -> None:
        """WORK_DATA: send a chunk of partial output (encoded with the codec)."""
        payload = self._codec.encode(data)
        self._emit(lambda p: p.work_data(self._handle, payload), False)

    def send_warning(self, data: Any) -> None:
        """WORK_WARNING: send a warning to the client."""
        payload = self._codec.encode(data)
        self._emit(lambda p: p.work_warning(self._handle, payload), False)

    def send_status(self, numerator: int, denominator: int) -> None:
        """WORK_STATUS: report progress (what GET_STATUS shows)."""
        self._emit(lambda p: p.work_status(self._handle, numerator, denominator), False)

    def fail(self) -> None:
        """WORK_FAIL: end the job as failed; the handler's return value is then ignored."""
        self._emit(lambda p: p.work_fail(self._handle), True)

    def _complete(self, payload: bytes) -> None:
        self._emit(lambda p: p.work_complete(self._handle, payload), True)

    def _exception(self, payload: bytes) -> None:
        self._emit(lambda p: p.work_exception(self._handle, payload), True)


#: Results at least this large are written at once, never held to share a write.
_CORK_LIMIT = 64 * 1024


class _LocalTimeout(Exception):
    """A handler ran past its function's timeout."""


class _WorkerConnection(Connection[WorkerProtocol]):
    """One worker connection: the grab / sleep cycle and the jobs it brought.

    Each TCP connection is its own object, so a job's results can only ever reach the
    connection it came from, never a later one after a reconnect.  Writes go out at
    once (see ``gearshift._async.connection``), except while corked.
    """

    batch_writes = False

    def __init__(self, address: ServerAddress, grab: str, wakeup: asyncio.Event) -> None:
        super().__init__(address, WorkerProtocol(grab=grab))
        #: Set by NOOP and when the connection ends: a sleeping grab loop goes on.
        self.woken = asyncio.Event()
        self._wakeup = wakeup
        #: Jobs assigned after their grabber stopped waiting, for the next grab.
        self._stray: deque[JobAssigned] = deque()

    def dispatch(self, event: WorkerEvent) -> None:
        if isinstance(event, Noop):
            self.woken.set()
            self._wakeup.set()
        elif isinstance(event, NoJob | JobAssigned):
            tag = event.tag
            value = event if isinstance(event, JobAssigned) else None
            if isinstance(tag, Request) and not tag.future.done():
                tag.future.set_result(value)
            elif value is not None:
                # The grabber stopped waiting; keep the job for the next grab.
                self._stray.append(value)
        elif isinstance(event, RequestFailed):
            logger.warning("%s refused an option: %s", self.address, event.error)
        elif isinstance(event, WorkerErrorReceived):
            logger.warning("%s sent an error: %s", self.address, event.error)

    def connection_ended(self, error: BaseException | None, jobs: list[Attached]) -> None:
        if jobs:
            logger.warning(
                "lost %s with %d job(s) running; the server requeues them",
                self.address,
                len(jobs),
            )
        self.woken.set()

    async def grab(self) -> JobAssigned | None:
        """GRAB a job (or take one that arrived after an abandoned grab).

        Raises:
            ConnectionLost: the connection ended (RequestLost: before the answer).
        """
        if self._stray:
            return self._stray.popleft()
        reply = self.request(self._grab_packet)
        # Shielded: a caller's timeout must not lose a job the server is assigning.
        assigned: JobAssigned | None = await asyncio.shield(reply)
        return assigned

    def _grab_packet(self, tag: Request) -> bytes:
        return self.core.grab(tag=tag)

    def sleep(self) -> None:
        """PRE_SLEEP, to be woken by NOOP."""
        if not self.closed and self.core.state is GrabState.IDLE and not self._stray:
            self.woken.clear()
            self.send(self.core.pre_sleep())

    def send_job(
        self, job: WorkerJob[Any], build: Callable[[WorkerProtocol], bytes], final: bool
    ) -> None:
        """Send an update or the result of ``job`` (on the loop thread)."""
        if final:
            self.detach(job._handle, job)  # sent or dropped, the job is over here
        if self.closed:
            logger.info("result for a job of a lost connection to %s dropped", self.address)
            return
        try:
            data = build(self.core)
        except LocalProtocolError as exc:
            logger.info("update for a job no longer ours dropped: %s", exc)
            return
        self.send(data)

    async def shut(self, reset: bool) -> None:
        """Send what is held (and RESET_ABILITIES when ``reset``), then close."""
        if not self.closed and reset:
            self.send(self.core.reset_abilities())
        self.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self.wait_closed()


class FunctionDecorator:
    """``@worker.function``, the same on AsyncWorker and the blocking Worker: it calls
    ``register``, which the class mixing this in defines."""

    register: Callable[..., None]

    @overload
    def function(self, name: F) -> F: ...

    @overload
    def function(
        self, name: str | bytes | None = None, *, timeout: float | None = None
    ) -> Callable[[F], F]: ...

    def function(
        self, name: str | bytes | F | None = None, *, timeout: float | None = None
    ) -> F | Callable[[F], F]:
        """Decorator form of ``register``: ``@worker.function("name", timeout=5)``.

        Without a name the handler's ``__name__`` is used; the handler is returned
        unchanged.
        """
        if callable(name):
            self.register(name.__name__, name)
            return name

        def decorate(handler: F) -> F:
            self.register(name if name is not None else handler.__name__, handler, timeout=timeout)
            return handler

        return decorate


class AsyncWorker(FunctionDecorator, AsyncClosing):
    """Registers functions and runs jobs from every configured server.

    Args:
        servers: ``"h1:4730,h2:4730"``, a list, or None for ``GEARMAN_SERVERS``.
        client_id: sent with SET_CLIENT_ID (shown by ``workers``).
        codec: payload codec for ``job.data`` and return values: None (bytes),
            ``"json"``, ``"text"``, ``"pickle"`` or a Codec object.
        concurrency: how many jobs may run at once (across all servers).
        executor: where plain-function (sync) handlers run: ``"thread"`` (default) in a
            thread pool of ``concurrency`` threads; ``"process"`` in up to
            ``concurrency`` child processes (spawned, reused between jobs; the handler
            and the job's data must be picklable, so use a module-level function); or
            None, directly on the event loop thread (for quick handlers: a slow one
            stalls every other job and the connections). ``async def`` handlers always
            run on the loop.
        grab: ``"uniq"`` (GRAB_JOB_UNIQ), ``"all"`` (GRAB_JOB_ALL) or ``"plain"``.
        reconnect_backoff: (first delay, maximum delay) in seconds; each failed
            attempt doubles the delay, and each wait is jittered between half and all of it.
        shutdown_timeout: seconds ``stop()`` waits for running jobs.
        connect_timeout: seconds allowed to connect to one server.
        keepalive: enable TCP keepalive.
        options: OPTION_REQ names sent on every connection.
        tls: as for AsyncClient: None, True, a CA path, TLSFiles or an SSLContext.
        on_startup, on_shutdown: called when ``run()`` starts and when the worker has
            stopped.
        before_job, after_job: called around each job; ``after_job(job, outcome)`` gets
            ``"complete"``, ``"fail"``, ``"exception"`` or ``"timeout"``.
        on_error: called with the exception a handler raised.

    Hooks may be plain functions or coroutine functions; they run on the event loop
    (keep them short), and an exception in a hook is logged, not raised.
    """

    def __init__(
        self,
        servers: ServersArg | None = None,
        *,
        client_id: str | None = None,
        codec: Codec[Any] | str | None = None,
        concurrency: int = 1,
        executor: Executor = "thread",
        grab: str = "uniq",
        reconnect_backoff: tuple[float, float] = (0.1, 30.0),
        shutdown_timeout: float = 30.0,
        connect_timeout: float | None = 10.0,
        keepalive: bool = True,
        options: Iterable[str] = (),
        tls: TLSArg = None,
        on_startup: Callable[[], Any] | None = None,
        on_shutdown: Callable[[], Any] | None = None,
        before_job: Callable[[WorkerJob[Any]], Any] | None = None,
        after_job: Callable[[WorkerJob[Any], str], Any] | None = None,
        on_error: Callable[[BaseException], Any] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if executor not in EXECUTORS:
            raise ValueError(f"executor must be 'thread', 'process' or None, not {executor!r}")
        WorkerProtocol(grab=grab)  # validates the name
        self.servers = parse_servers(servers)
        self.client_id = client_id
        self.codec: Codec[Any] = get_codec(codec)
        self.concurrency = concurrency
        self.executor: Executor = executor
        self.grab = grab
        self.reconnect_backoff = reconnect_backoff
        self.shutdown_timeout = shutdown_timeout
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.options = list(options)
        self._tls = client_context(tls)
        self.on_startup = on_startup
        self.on_shutdown = on_shutdown
        self.before_job = before_job
        self.after_job = after_job
        self.on_error = on_error
        self._functions: dict[bytes, _Function] = {}
        #: The current connection to each server (None before the first one).
        self._conns: dict[ServerAddress, _WorkerConnection | None] = {}
        self._supervisors: list[asyncio.Task[None]] = []
        self._slots = asyncio.Semaphore(concurrency)
        self._grabbing = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._executor: DaemonThreadPool | None = None
        self._processes: ProcessPool | None = None
        self._started = False
        self._closing = False
        self._stopped = asyncio.Event()
        self._once_lock = asyncio.Lock()
        self._stopping = False
        self._stop_now = asyncio.Event()
        self._grabs_in_flight = 0
        self.jobs_done = 0

    async def _on_exit(self) -> None:
        # Leaving ``async with`` stops gracefully: running jobs may finish.
        await self.stop()

    # -- registration ---------------------------------------------------------------------

    def _broadcast(self, build: Callable[[WorkerProtocol], bytes]) -> None:
        for conn in self._live():
            conn.send(build(conn.core))

    def register(
        self, function: str | bytes, handler: Handler, *, timeout: float | None = None
    ) -> None:
        """Register ``handler(job)`` for ``function`` (CAN_DO, or CAN_DO_TIMEOUT).

        Args:
            function: the function name.
            handler: an ``async def`` (run on the loop) or a plain function (run where
                ``executor`` says) taking a WorkerJob; its return value is the result.
            timeout: seconds a job may run; registered with CAN_DO_TIMEOUT and enforced
                here too (the job gets WORK_FAIL when it runs over; with
                ``executor="process"`` its child process is killed).
        """
        name = function.encode() if isinstance(function, str) else function
        fn = _Function(name, handler, timeout, _is_async(handler))
        WorkerProtocol().can_do(name, fn.timeout_ms)  # validates the name
        if self.executor == "process" and not fn.is_async:
            from gearshift._async.processes import unpicklable

            problem = unpicklable(handler)
            if problem is not None:
                logger.warning(
                    "handler for %r cannot be pickled, so its jobs will fail in a process"
                    " executor (use a module-level function): %s",
                    function,
                    problem,
                )
        self._functions[name] = fn
        self._broadcast(lambda p: p.can_do(name, fn.timeout_ms))

    def unregister(self, function: str | bytes) -> None:
        """CANT_DO: stop taking jobs for ``function`` (running ones are requeued by the server)."""
        name = function.encode() if isinstance(function, str) else function
        self._functions.pop(name, None)
        self._broadcast(lambda p: p.cant_do(name))

    def reset_abilities(self) -> None:
        """RESET_ABILITIES: forget every function."""
        self._functions.clear()
        self._broadcast(lambda p: p.reset_abilities())

    def set_client_id(self, client_id: str) -> None:
        """SET_CLIENT_ID now and after every reconnect."""
        self.client_id = client_id
        self._broadcast(lambda p: p.set_client_id(client_id.encode()))

    @property
    def functions(self) -> list[str]:
        """The registered function names."""
        return [name.decode("utf-8", "replace") for name in self._functions]

    @property
    def connected(self) -> list[ServerAddress]:
        """Servers with a live connection right now."""
        return [conn.address for conn in self._live()]

    @property
    def running_jobs(self) -> int:
        """Jobs being run at this moment."""
        return len(self._tasks)

    # -- connections ----------------------------------------------------------------------

    def _start(self) -> None:
        if self._stopping:
            raise ClosedError("worker is stopped")
        if self._started:
            return
        self._started = True
        loop = asyncio.get_running_loop()
        for address in self.servers:
            self._conns[address] = None
            self._supervisors.append(loop.create_task(self._supervise(address)))

    def _live(self) -> list[_WorkerConnection]:
        """The connections open right now, in server order."""
        return [conn for conn in self._conns.values() if conn is not None and not conn.closed]

    def _backoff(self, attempt: int) -> float:
        first, most = self.reconnect_backoff
        delay = min(most, first * (2 ** min(attempt, 30)))
        return random.uniform(delay / 2, delay)

    async def _connect(self, address: ServerAddress) -> _WorkerConnection:
        """Connect and register: client id, functions and options in one write."""
        conn = await connect(
            _WorkerConnection(address, self.grab, self._wakeup),
            connect_timeout=self.connect_timeout,
            keepalive=self.keepalive,
            tls=self._tls,
        )
        core = conn.core
        burst = []
        if self.client_id:
            burst.append(core.set_client_id(self.client_id.encode()))
        for fn in self._functions.values():
            burst.append(core.can_do(fn.name, fn.timeout_ms))
        for option in self.options:
            burst.append(core.option(option.encode()))
        if burst:
            conn.send(b"".join(burst))
        self._conns[address] = conn
        return conn

    async def _supervise(self, address: ServerAddress) -> None:
        attempt = 0
        while not self._closing:
            try:
                conn = await self._connect(address)
            except (ConnectError, GearmanTimeout) as exc:
                delay = self._backoff(attempt)
                attempt += 1
                logger.warning("cannot reach %s (%s); retrying in %.2fs", address, exc, delay)
                await asyncio.sleep(delay)
                continue
            logger.info("connected to %s", address)
            attempt = 0
            self._wakeup.set()
            grabber = asyncio.get_running_loop().create_task(self._grab_loop(conn))
            try:
                await asyncio.shield(conn.ended)
            finally:
                grabber.cancel()
                await asyncio.gather(grabber, return_exceptions=True)
            if self._closing:
                return
            delay = self._backoff(0)
            logger.warning("lost %s; reconnecting in %.2fs", address, delay)
            await asyncio.sleep(delay)

    async def _grab_loop(self, conn: _WorkerConnection) -> None:
        try:
            while True:
                await self._grabbing.wait()
                await self._slots.acquire()
                assigned: JobAssigned | None = None
                self._grabs_in_flight += 1
                try:
                    if self._grabbing.is_set():
                        assigned = await conn.grab()
                        if assigned is None:
                            conn.sleep()
                        else:
                            self._start_job(conn, assigned)
                finally:
                    self._grabs_in_flight -= 1
                    if assigned is None:
                        self._slots.release()
                if assigned is None and self._grabbing.is_set():
                    await conn.woken.wait()
        except ConnectionLost:
            return

    def _start_job(self, conn: _WorkerConnection, assigned: JobAssigned) -> None:
        task = asyncio.get_running_loop().create_task(self._run_job(conn, assigned))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- running jobs ---------------------------------------------------------------------

    async def _run_job(self, conn: _WorkerConnection, assigned: JobAssigned) -> None:
        try:
            job: WorkerJob[Any] = WorkerJob(conn, assigned, self.codec)
            conn.attach(assigned.handle, job)
            fn = self._functions.get(assigned.function)
            if fn is None:
                logger.warning(
                    "got a job for unregistered function %r; failing it", assigned.function
                )
                job.fail()
                return
            outcome = "complete"
            error: BaseException | None = None
            try:
                job.data = self.codec.decode(assigned.data)
                await self._hook(self.before_job, job)
                result = await self._call(fn, job)
            except JobFailed:
                outcome = "fail"
                job.fail()
            except _LocalTimeout:
                outcome = "timeout"
                logger.warning(
                    "job %s (%s) ran past %ss; failed", job.handle, job.function, fn.timeout
                )
                job.fail()
            except Exception as exc:
                outcome, error = "exception", exc
                logger.info("job %s (%s) raised %r", job.handle, job.function, exc)
                job._exception(describe_exception(exc, self.codec))
            else:
                if job.finished:
                    outcome = "fail"  # the handler called job.fail()
                else:
                    try:
                        payload = self.codec.encode(result)
                    except Exception as exc:
                        outcome, error = "exception", exc
                        job._exception(describe_exception(exc, self.codec))
                    else:
                        if self._may_cork(fn, payload):
                            conn.cork()  # sent on the next pass, with the next GRAB_JOB
                        job._complete(payload)
            if error is not None:
                await self._hook(self.on_error, error)
            await self._hook(self.after_job, job, outcome)
            self.jobs_done += 1
        finally:
            self._slots.release()
            # After the release: the grab loop it wakes runs first and adds its GRAB_JOB.
            asyncio.get_running_loop().call_soon(conn.uncork)

    def _may_cork(self, fn: _Function, payload: bytes) -> bool:
        """Whether a result may wait for the next loop pass to share a write.

        Not with an ``after_job`` hook (it may take long), not for plain handlers run on
        the loop (another job's handler queued for that pass would hold the result back
        for its whole run), and not for a large result (joining would copy it).
        """
        return (
            self.after_job is None
            and (fn.is_async or self.executor is not None)
            and len(payload) < _CORK_LIMIT
        )

    async def _hook(self, hook: Callable[..., Any] | None, *args: Any) -> None:
        if hook is None:
            return
        try:
            result = hook(*args)
            if inspect.isawaitable(result):
                await result
        except Exception:  # a broken hook must not break the worker
            logger.exception("worker hook %r raised", hook)

    def _pool(self) -> DaemonThreadPool:
        if self._executor is None:
            self._executor = DaemonThreadPool(self.concurrency, "gearshift-job")
        return self._executor

    async def _call(self, fn: _Function, job: WorkerJob[Any]) -> Any:
        if fn.is_async:
            awaitable: Awaitable[Any] = fn.handler(job)
            try:
                async with asyncio.timeout(fn.timeout) as scope:
                    return await awaitable
            except TimeoutError as exc:
                if scope.expired():
                    raise _LocalTimeout() from exc
                raise
        if self.executor == "process":
            return await self._call_in_process(fn, job)
        if self.executor is None:
            # Inline on the loop: nothing can interrupt it, so the limit is checked after.
            loop = asyncio.get_running_loop()
            started = loop.time()
            result = fn.handler(job)
            if fn.timeout is not None and loop.time() - started > fn.timeout:
                raise _LocalTimeout()
            return result
        future = asyncio.get_running_loop().run_in_executor(self._pool(), fn.handler, job)
        if fn.timeout is None:
            return await future
        done, _ = await asyncio.wait({future}, timeout=fn.timeout)
        if future in done:
            return future.result()
        # The thread cannot be stopped: fail the job now, keep the slot until it returns.
        logger.warning("job %s (%s) ran past %ss; failed", job.handle, job.function, fn.timeout)
        job.fail()
        with contextlib.suppress(Exception):
            await future
        raise _LocalTimeout()

    async def _call_in_process(self, fn: _Function, job: WorkerJob[Any]) -> Any:
        if self._processes is None:
            # Imported here: multiprocessing is not needed unless a job runs in a child.
            from gearshift._async.processes import ProcessPool

            self._processes = ProcessPool()
        pool = self._processes
        child = pool.take()
        # A pool thread relays the child's updates and waits for its result.  asyncio.wait
        # never cancels it, so a cancel (an immediate stop) kills the child, then waits.
        relay = asyncio.get_running_loop().run_in_executor(self._pool(), child.run, fn.handler, job)
        try:
            done, _ = await asyncio.wait({relay}, timeout=fn.timeout)
            if relay in done:
                return relay.result()
            # Unlike a thread, a process can be stopped: kill it, the slot is free again.
            job.fail()
            child.kill()
            with contextlib.suppress(Exception):
                await asyncio.shield(relay)
            raise _LocalTimeout()
        except asyncio.CancelledError:
            child.kill()
            await asyncio.wait({relay}, timeout=5)
            if relay.done() and not relay.cancelled():
                relay.exception()  # retrieved: the job is abandoned, its error with it
            raise
        finally:
            pool.give(child)

    # -- running --------------------------------------------------------------------------

    async def run(self, *, install_signal_handlers: bool = True) -> None:
        """Connect to every server and run jobs until ``stop()`` (or SIGTERM / SIGINT).

        In the main thread SIGTERM and the first SIGINT stop gracefully; a second
        SIGINT stops at once.

        Raises:
            BusyError: the worker is already running.
            ClosedError: the worker was stopped.
        """
        if self._grabbing.is_set():
            raise BusyError("worker is already running")
        self._start()
        await self._hook(self.on_startup)
        self._grabbing.set()
        with self._signals(install_signal_handlers):
            await self._stopped.wait()

    @contextlib.contextmanager
    def _signals(self, install: bool) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        if not install or threading.current_thread() is not threading.main_thread():
            yield
            return
        interrupts = 0

        def on_signal(signum: int) -> None:
            nonlocal interrupts
            if signum == signal.SIGINT:
                interrupts += 1
            graceful = interrupts < 2
            logger.warning("signal %d: stopping %s", signum, "gracefully" if graceful else "now")
            loop.create_task(self.stop(graceful=graceful))

        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, on_signal, sig)
            except (NotImplementedError, RuntimeError) as exc:
                # Loops without signal support (Windows' proactor, some embedded loops)
                # raise these; the worker then runs, and is stopped, without them.
                logger.debug("no handler for signal %d on this loop: %r", sig, exc)
            else:
                installed.append(sig)
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    async def work_once(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Run one job, waiting for one up to ``timeout`` seconds (PHP's ``work()``).

        Returns:
            True if a job ran, False if none came in time.

        Raises:
            BusyError: ``run()`` is active.
        """
        if self._grabbing.is_set():
            raise BusyError("work_once() while run() is active")
        self._start()
        async with self._once_lock:
            try:
                async with asyncio.timeout(timeout) as scope:
                    while True:
                        self._wakeup.clear()
                        for conn in self._live():
                            try:
                                assigned = await conn.grab()
                            except ConnectionLost:
                                continue
                            if assigned is not None:
                                await self._slots.acquire()
                                await self._run_job(conn, assigned)
                                return True
                        for conn in self._live():
                            conn.sleep()
                        await self._wakeup.wait()
            except TimeoutError:
                if scope.expired():
                    return False
                raise

    async def stop(self, graceful: bool = True) -> None:
        """Stop: no more grabbing; running jobs get ``shutdown_timeout`` seconds to finish
        (none when ``graceful`` is False); then RESET_ABILITIES and close.

        Jobs still running at the end are cancelled and their connections closed, so
        the server requeues them.
        """
        if self._stopping:
            if not graceful:
                self._stop_now.set()  # a second Ctrl-C: cut the graceful wait short
            await self._stopped.wait()
            return
        self._stopping = True
        self._grabbing.clear()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.shutdown_timeout if graceful else 0.0)
        # A GRAB already sent may still bring a job: it counts as running, so wait for it.
        while (self._tasks or self._grabs_in_flight) and not self._stop_now.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            waiters: set[asyncio.Future[Any]] = {
                *self._tasks,
                loop.create_task(self._stop_now.wait()),
            }
            _, left = await asyncio.wait(
                waiters, timeout=min(remaining, 0.05), return_when=asyncio.FIRST_COMPLETED
            )
            for waiter in left - self._tasks:
                waiter.cancel()
        pending = set(self._tasks)
        self._closing = True
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
        for sup in self._supervisors:
            sup.cancel()
        await asyncio.gather(*self._supervisors, return_exceptions=True)
        await asyncio.gather(
            *(conn.shut(reset=graceful and not pending) for conn in self._live()),
            return_exceptions=True,
        )
        if self._processes is not None:
            await asyncio.to_thread(self._processes.close)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        await self._hook(self.on_shutdown)
        self._stopped.set()

    async def aclose(self) -> None:
        """Stop at once (running jobs are cancelled and requeued by the server)."""
        await self.stop(graceful=False)
