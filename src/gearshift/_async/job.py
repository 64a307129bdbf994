"""AsyncJob: a foreground job as the client sees it: its result, state and updates.

The client's connection calls the underscore methods: ``_created`` when JOB_CREATED
gives the job its handle, ``_update`` for every WORK_* packet about it, and
``_connection_lost`` when its connection ends first.  Everything else is the public
face a caller awaits and reads.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from gearshift.addresses import ServerAddress
from gearshift.codecs import Codec
from gearshift.errors import JobException, JobFailed, JobTimeout
from gearshift.protocol.client import WorkUpdate
from gearshift.protocol.packets import PacketType

logger = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = [
    "AsyncJob",
    "JobHandle",
    "JobState",
    "JobUpdate",
    "WorkComplete",
    "WorkData",
    "WorkException",
    "WorkFail",
    "WorkStatus",
    "WorkWarning",
]


class JobState(enum.Enum):
    """Where a submitted job is, as far as this client knows."""

    QUEUED = "queued"  # sent, no JOB_CREATED yet
    CREATED = "created"  # the server has it
    RUNNING = "running"  # a worker sent data, a warning or a status
    COMPLETE = "complete"
    FAILED = "failed"
    EXCEPTION = "exception"
    UNKNOWN = "unknown"  # the connection was lost after JOB_CREATED


class JobHandle(str):
    """A job handle (``H:host:42``) that also remembers which server owns it."""

    server: ServerAddress | None

    def __new__(cls, handle: str, server: ServerAddress | None = None) -> JobHandle:
        obj = super().__new__(cls, handle)
        obj.server = server
        return obj


@dataclass(frozen=True, slots=True)
class WorkData(Generic[T]):
    """WORK_DATA: a chunk of partial output."""

    data: T


@dataclass(frozen=True, slots=True)
class WorkWarning(Generic[T]):
    """WORK_WARNING: a warning from the worker."""

    data: T


@dataclass(frozen=True, slots=True)
class WorkStatus:
    """WORK_STATUS: progress as numerator / denominator."""

    numerator: int
    denominator: int


@dataclass(frozen=True, slots=True)
class WorkComplete(Generic[T]):
    """WORK_COMPLETE: the job's result (last update)."""

    result: T


@dataclass(frozen=True, slots=True)
class WorkFail:
    """WORK_FAIL: the job failed (last update)."""


@dataclass(frozen=True, slots=True)
class WorkException:
    """WORK_EXCEPTION: the worker raised; ``payload`` is what it sent (last update)."""

    payload: bytes


JobUpdate = (
    WorkData[Any] | WorkWarning[Any] | WorkStatus | WorkComplete[Any] | WorkFail | WorkException
)


def _consume(future: asyncio.Future[Any]) -> None:
    # Mark the exception as retrieved: a job nobody awaits must not log "never retrieved".
    if not future.cancelled():
        future.exception()


class AsyncJob(Generic[T]):
    """A foreground job: awaitable for its result, with its stream of updates.

    ``await job`` returns the result or raises JobFailed, JobException, ConnectionLost.
    ``data_chunks``, ``warnings`` and ``status`` accumulate as updates arrive;
    ``updates()`` replays them all from the start and then follows new ones.
    """

    def __init__(
        self,
        function: str,
        unique: str,
        codec: Codec[T],
        *,
        on_data: Callable[[T], object] | None = None,
        on_warning: Callable[[T], object] | None = None,
        on_status: Callable[[int, int], object] | None = None,
    ) -> None:
        self.function = function
        self.unique = unique
        self.handle: JobHandle | None = None
        self.state = JobState.QUEUED
        self.status: tuple[int, int] = (0, 0)
        self.data_chunks: list[T] = []
        self.warnings: list[T] = []
        self._codec = codec
        self._on_data = on_data
        self._on_warning = on_warning
        self._on_status = on_status
        self._future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._future.add_done_callback(_consume)
        self._history: list[JobUpdate] = []
        self._changed = asyncio.Event()
        self._detach: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"<AsyncJob {self.function} handle={self.handle} state={self.state.value}>"

    def __await__(self) -> Any:
        return self.result().__await__()

    # -- called by the connection -------------------------------------------------------

    def _created(self, handle: JobHandle, detach: Callable[[], None]) -> None:
        self.handle = handle
        self.state = JobState.CREATED
        self._detach = detach

    def _push(self, update: JobUpdate) -> None:
        self._history.append(update)
        self._changed.set()

    def _update(self, packet: WorkUpdate) -> None:
        if self._future.done():
            return
        ptype = packet.type
        if ptype == PacketType.WORK_COMPLETE:
            try:
                result = self._codec.decode(packet.data)
            except Exception as exc:  # a payload the codec cannot read fails this job only
                self.state = JobState.FAILED
                self._future.set_exception(exc)
                self._push(WorkFail())
                return
            self.state = JobState.COMPLETE
            self._push(WorkComplete(result))
            self._future.set_result(result)
        elif ptype == PacketType.WORK_FAIL:
            self.state = JobState.FAILED
            self._push(WorkFail())
            self._future.set_exception(JobFailed(self._handle_text(packet.handle)))
        elif ptype == PacketType.WORK_EXCEPTION:
            self.state = JobState.EXCEPTION
            self._push(WorkException(packet.data))
            self._future.set_exception(JobException(self._handle_text(packet.handle), packet.data))
        else:
            self.state = JobState.RUNNING
            if ptype == PacketType.WORK_STATUS:
                self.status = (packet.numerator, packet.denominator)
                self._push(WorkStatus(packet.numerator, packet.denominator))
                if self._on_status is not None:
                    self._callback(self._on_status, packet.numerator, packet.denominator)
            else:
                try:
                    value = self._codec.decode(packet.data)
                except Exception:  # e.g. plain text from a non-JSON worker: keep the bytes
                    logger.info("job %s: update not decodable by the codec; kept raw", self.handle)
                    value = packet.data  # type: ignore[assignment]
                if ptype == PacketType.WORK_DATA:
                    self.data_chunks.append(value)
                    self._push(WorkData(value))
                    if self._on_data is not None:
                        self._callback(self._on_data, value)
                else:
                    self.warnings.append(value)
                    self._push(WorkWarning(value))
                    if self._on_warning is not None:
                        self._callback(self._on_warning, value)

    def _handle_text(self, raw: bytes) -> str:
        return self.handle if self.handle is not None else raw.decode("utf-8", "replace")

    def _callback(self, fn: Callable[..., object], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            logger.exception("job %s: update callback raised", self.handle)

    def _connection_lost(self, exc: BaseException) -> None:
        if not self._future.done():
            self.state = JobState.UNKNOWN if self.handle is not None else self.state
            self._future.set_exception(exc)
            self._changed.set()

    # -- public -------------------------------------------------------------------------

    async def result(self, timeout: float | None = None) -> T:  # noqa: ASYNC109
        """Wait for the job's result.

        Args:
            timeout: seconds to wait; None waits until the job ends.

        Raises:
            JobFailed: the worker sent WORK_FAIL (or the server gave up on the job).
            JobException: the worker sent WORK_EXCEPTION; ``payload`` holds its message.
            JobTimeout: ``timeout`` passed first (the job goes on running).
            ConnectionLost: the server connection dropped after JOB_CREATED.
        """
        try:
            async with asyncio.timeout(timeout) as scope:
                return await asyncio.shield(self._future)
        except TimeoutError as exc:
            if scope.expired():
                raise JobTimeout(f"job {self.handle} did not finish in {timeout}s") from exc
            raise

    def done(self) -> bool:
        """True once the job ended (or the wait for it was cancelled)."""
        return self._future.done()

    def cancelled(self) -> bool:
        """True if ``cancel()`` stopped the wait."""
        return self._future.cancelled()

    def exception(self) -> BaseException | None:
        """The exception the job ended with, None after a result.

        Raises:
            asyncio.InvalidStateError: the job is not done yet.
        """
        return self._future.exception()

    def add_done_callback(self, fn: Callable[[AsyncJob[T]], object]) -> None:
        """Call ``fn(job)`` once the job is done."""
        self._future.add_done_callback(lambda _: fn(self))

    def cancel(self) -> bool:
        """Stop waiting for the job (the server and worker carry on with it)."""
        if self._detach is not None:
            self._detach()
            self._detach = None
        cancelled = self._future.cancel()
        self._changed.set()
        return cancelled

    async def updates(self) -> AsyncIterator[JobUpdate]:
        """Every update from the start: WorkData, WorkWarning, WorkStatus, then one of
        WorkComplete, WorkFail or WorkException.  Ends after the last one (or when the
        wait is cancelled or the connection is lost)."""
        index = 0
        while True:
            while index < len(self._history):
                update = self._history[index]
                index += 1
                yield update
            if self._future.done():
                return
            self._changed.clear()
            await self._changed.wait()
