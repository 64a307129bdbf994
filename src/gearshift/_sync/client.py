"""Client and Job: the blocking faces of AsyncClient and AsyncJob.

Every call runs the async implementation on the client's private event loop thread
(see ``gearshift._sync.portal``); nothing here speaks the protocol itself.  Update
callbacks (``on_data`` ...) and ``add_done_callback`` functions run on that thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar, overload

from gearshift._async.client import AsyncClient, JobRequest, PhpTaskNames
from gearshift._async.job import AsyncJob, JobHandle, JobState, JobUpdate
from gearshift._sync.portal import Portal, PortalOwner
from gearshift.addresses import ServersArg
from gearshift.codecs import Codec
from gearshift.protocol.client import JobStatus
from gearshift.protocol.packets import Priority
from gearshift.tls import TLSArg

T = TypeVar("T")
R = TypeVar("R")


class Job(Generic[T]):
    """A foreground job submitted by a blocking Client; see AsyncJob."""

    def __init__(self, job: AsyncJob[T], portal: Portal) -> None:
        self._job = job
        self._portal = portal

    def __repr__(self) -> str:
        return repr(self._job).replace("AsyncJob", "Job", 1)

    @property
    def handle(self) -> JobHandle | None:
        """The job handle (with ``.server``)."""
        return self._job.handle

    @property
    def function(self) -> str:
        """The function name."""
        return self._job.function

    @property
    def unique(self) -> str:
        """The unique id sent with the job."""
        return self._job.unique

    @property
    def state(self) -> JobState:
        """Where the job is, as far as the client knows."""
        return self._job.state

    @property
    def status(self) -> tuple[int, int]:
        """The last (numerator, denominator) from WORK_STATUS."""
        return self._job.status

    @property
    def data_chunks(self) -> list[T]:
        """WORK_DATA payloads received so far."""
        return list(self._job.data_chunks)

    @property
    def warnings(self) -> list[T]:
        """WORK_WARNING payloads received so far."""
        return list(self._job.warnings)

    def result(self, timeout: float | None = None) -> T:
        """Block until the job ends; see AsyncJob.result for what it raises."""
        return self._portal.call(self._job.result, timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Block until the job ends; return its exception (None after a result)."""
        try:
            self.result(timeout)
        except Exception as exc:
            return exc
        return None

    def done(self) -> bool:
        """True once the job ended."""
        return self._job.done()

    def cancelled(self) -> bool:
        """True if ``cancel()`` stopped the wait."""
        return self._job.cancelled()

    def cancel(self) -> bool:
        """Stop waiting for the job (the server and worker carry on with it)."""
        return self._portal.call_sync(self._job.cancel)

    def add_done_callback(self, fn: Callable[[Job[T]], object]) -> None:
        """Call ``fn(job)`` (on the client's loop thread) once the job is done."""
        self._portal.call_sync(self._job.add_done_callback, lambda _: fn(self))

    def updates(self) -> Iterator[JobUpdate]:
        """Every update from the start, blocking for new ones; see AsyncJob.updates."""
        stream = self._job.updates()

        async def step() -> tuple[bool, JobUpdate | None]:
            try:
                return True, await anext(stream)
            except StopAsyncIteration:
                return False, None

        while True:
            more, update = self._portal.call(step)
            if not more:
                return
            assert update is not None
            yield update


class Client(PortalOwner, PhpTaskNames, Generic[T]):
    """Blocking client; the arguments are AsyncClient's.

    Use it as a context manager, or call ``close()``: it owns a thread.
    """

    @overload
    def __init__(
        self: Client[bytes],
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
        self: Client[R],
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
        self: Client[Any],
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
        self._portal = Portal("gearshift-client")
        self._async: AsyncClient[T] = self._build_twin(
            AsyncClient,
            servers,
            client_id=client_id,
            codec=codec,
            timeout=timeout,
            connect_timeout=connect_timeout,
            routing=routing,
            keepalive=keepalive,
            exceptions=exceptions,
            retry_interval=retry_interval,
            tls=tls,
        )
        self.servers = self._async.servers

    def submit(
        self,
        function: str | bytes,
        data: Any = None,
        *,
        unique: str | bytes | None = None,
        priority: Priority = Priority.NORMAL,
        timeout: float | None = None,
    ) -> T:
        """Run a foreground job and return its result; see AsyncClient.submit."""
        return self._portal.call(
            self._async.submit, function, data, unique=unique, priority=priority, timeout=timeout
        )

    def submit_job(
        self,
        function: str | bytes,
        data: Any = None,
        *,
        unique: str | bytes | None = None,
        priority: Priority = Priority.NORMAL,
        on_data: Callable[[T], object] | None = None,
        on_warning: Callable[[T], object] | None = None,
        on_status: Callable[[int, int], object] | None = None,
    ) -> Job[T]:
        """Submit a foreground job; return it after JOB_CREATED (see AsyncClient.submit_job)."""
        job = self._portal.call(
            self._async.submit_job,
            function,
            data,
            unique=unique,
            priority=priority,
            on_data=on_data,
            on_warning=on_warning,
            on_status=on_status,
        )
        return Job(job, self._portal)

    def submit_background(
        self,
        function: str | bytes,
        data: Any = None,
        *,
        unique: str | bytes | None = None,
        priority: Priority = Priority.NORMAL,
        when: datetime | float | int | None = None,
    ) -> JobHandle:
        """Queue a background job; see AsyncClient.submit_background."""
        return self._portal.call(
            self._async.submit_background,
            function,
            data,
            unique=unique,
            priority=priority,
            when=when,
        )

    @overload
    def submit_many(
        self,
        requests: Iterable[JobRequest | tuple[str | bytes, Any]],
        *,
        background: Literal[False] = False,
    ) -> list[Job[T]]: ...

    @overload
    def submit_many(
        self,
        requests: Iterable[JobRequest | tuple[str | bytes, Any]],
        *,
        background: Literal[True],
    ) -> list[JobHandle]: ...

    def submit_many(
        self,
        requests: Iterable[JobRequest | tuple[str | bytes, Any]],
        *,
        background: bool = False,
    ) -> list[Job[T]] | list[JobHandle]:
        """Submit many jobs at once, pipelined; see AsyncClient.submit_many."""
        reqs = list(requests)
        if background:

            async def in_background() -> list[JobHandle]:
                return await self._async.submit_many(reqs, background=True)

            return self._portal.call(in_background)
        jobs = self._portal.call(self._async.submit_many, reqs)
        return [Job(job, self._portal) for job in jobs]

    def ping(self) -> float:
        """Seconds an ECHO takes to the first reachable server."""
        return self._portal.call(self._async.ping)

    def gather(self, *jobs: Job[T], timeout: float | None = None) -> list[T | BaseException]:
        """Wait for several jobs; return each result or the exception it ended with."""
        return self._portal.call(self._async.gather, *(j._job for j in jobs), timeout=timeout)

    def get_status(self, handle: str | bytes) -> JobStatus:
        """GET_STATUS; see AsyncClient.get_status."""
        return self._portal.call(self._async.get_status, handle)

    def get_status_by_unique(
        self, unique: str | bytes, *, function: str | bytes | None = None
    ) -> JobStatus:
        """GET_STATUS_UNIQUE; see AsyncClient.get_status_by_unique."""
        return self._portal.call(self._async.get_status_by_unique, unique, function=function)

    def echo(self, data: bytes = b"ping", *, server: str | None = None) -> bytes:
        """ECHO_REQ; see AsyncClient.echo."""
        return self._portal.call(self._async.echo, data, server=server)

    def set_option(self, name: str) -> None:
        """OPTION_REQ on every connection; see AsyncClient.set_option."""
        self._portal.call(self._async.set_option, name)

    # PHP-style names.
    def add_task(
        self,
        function: str | bytes,
        data: Any = None,
        *,
        unique: str | bytes | None = None,
        priority: Priority = Priority.NORMAL,
        background: bool = False,
    ) -> None:
        """PHP ``addTask*``: queue a job locally until ``run_tasks()``."""
        self._portal.call_sync(
            lambda: self._async.add_task(
                function, data, unique=unique, priority=priority, background=background
            )
        )

    def run_tasks(self, timeout: float | None = None) -> list[T | JobHandle | BaseException]:
        """PHP ``runTasks``; see AsyncClient.run_tasks."""
        return self._portal.call(self._async.run_tasks, timeout)

    def do_normal(self, function: str | bytes, data: Any = None, unique: str | None = None) -> T:
        """PHP ``doNormal``."""
        return self._portal.call(self._async.do_normal, function, data, unique)

    def do_high(self, function: str | bytes, data: Any = None, unique: str | None = None) -> T:
        """PHP ``doHigh``."""
        return self._portal.call(self._async.do_high, function, data, unique)

    def do_low(self, function: str | bytes, data: Any = None, unique: str | None = None) -> T:
        """PHP ``doLow``."""
        return self._portal.call(self._async.do_low, function, data, unique)

    def do_background(
        self, function: str | bytes, data: Any = None, unique: str | None = None
    ) -> JobHandle:
        """PHP ``doBackground``."""
        return self._portal.call(self._async.do_background, function, data, unique)

    def do_high_background(
        self, function: str | bytes, data: Any = None, unique: str | None = None
    ) -> JobHandle:
        """PHP ``doHighBackground``."""
        return self._portal.call(self._async.do_high_background, function, data, unique)

    def do_low_background(
        self, function: str | bytes, data: Any = None, unique: str | None = None
    ) -> JobHandle:
        """PHP ``doLowBackground``."""
        return self._portal.call(self._async.do_low_background, function, data, unique)

    def job_status(self, handle: str | bytes) -> JobStatus:
        """PHP ``jobStatus``."""
        return self._portal.call(self._async.job_status, handle)

    def job_status_by_unique_key(self, unique: str | bytes) -> JobStatus:
        """PHP ``jobStatusByUniqueKey``."""
        return self._portal.call(self._async.job_status_by_unique_key, unique)
