"""The durable-queue interface every store implements.

A store is a log of background jobs, as in gearmand: the server calls ``add`` before
it sends JOB_CREATED (and sends it only once ``add`` has returned, i.e. the job is
durable), ``done`` when the job completes, fails, is cancelled or is dropped, and
``replay`` once at start-up, before the listener opens.  Foreground jobs never reach
a store.  A store that fails raises ``StoreError``; the server then answers the
submit with ``ERROR QUEUE_ERROR`` and keeps serving.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from gearshift.errors import StoreError
from gearshift.protocol.packets import Priority

logger = logging.getLogger(__name__)

#: What a backend makes of a job before batching it (a tuple of column values, ...).
RowT = TypeVar("RowT")


@dataclass(slots=True)
class StoredJob:
    """A background job as a store keeps it."""

    function: bytes
    unique: bytes
    data: bytes
    priority: Priority = Priority.NORMAL
    #: Unix time before which the job must not run (SUBMIT_JOB_EPOCH); 0 = now.
    when: int = 0
    #: Set by the store in ``add`` (or ``replay``); handed back to ``done``.  Opaque.
    key: object = field(default=None, compare=False)
    #: Set by a clustered store's ``add`` when another server of the cluster already
    #: holds a job with this (function, unique): it is acknowledged but not queued here.
    coalesced: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """Several servers sharing one store as a cluster (PostgreSQL only).

    Attributes:
        name: the cluster's name; servers with the same store and name form one cluster.
        node: this server's name in the cluster, stable across restarts (the server
            fills in ``host:port`` when empty).
        lease: seconds a member stays alive without renewing its lease; after that the
            others take over its background jobs.
        heartbeat: seconds between lease renewals (and takeover polls).
    """

    name: str
    node: str = ""
    lease: float = 10.0
    heartbeat: float = 2.0


class _Coalesced:
    __slots__ = ()

    def __repr__(self) -> str:
        return "COALESCED"


#: What a clustered store's ``_commit`` returns for an add that coalesced onto a job
#: another member of the cluster already holds.
COALESCED: Final = _Coalesced()


#: Rows ``list_jobs`` reads per hold of the store connection (backends read 500-1000
#: rows per query, so a hold spans at most one query).
_LIST_STEP: Final = 500


class Store(abc.ABC):
    """A persistent queue of background jobs."""

    #: Short name for logs and admin output ("memory", "sqlite", ...).
    name: str = "store"
    #: False for the memory store: the server then skips add/done entirely.
    persistent: bool = True
    #: Set on a store shared by a cluster of servers (PostgreSQL): its name and ours.
    cluster: ClusterSettings | None = None

    @property
    def is_down(self) -> bool:
        """True while the backend is unreachable and adds are refused."""
        return False

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect / create tables.  Called once before ``replay``."""

    @abc.abstractmethod
    async def add(self, job: StoredJob) -> None:
        """Make ``job`` durable; return only once it is.  Sets ``job.key``.

        Raises:
            StoreError: the job could not be stored; it must not be acknowledged.
        """

    @abc.abstractmethod
    async def done(self, job: StoredJob) -> None:
        """Forget ``job`` (it completed, failed, was cancelled or dropped)."""

    @abc.abstractmethod
    def replay(self) -> AsyncIterator[StoredJob]:
        """Yield every stored job, oldest first, with ``key`` set."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release resources."""

    def describe(self) -> str:
        """One line for logs and admin output, without secrets."""
        return self.name

    async def list_jobs(self, limit: int) -> list[StoredJob]:
        """At most ``limit`` stored jobs, oldest first (admin ``show stored jobs``).

        Raises:
            StoreError: the store is not open or the backend failed while reading.
        """
        out: list[StoredJob] = []
        jobs = self.replay()
        try:
            while len(out) < limit:
                async with self._list_step():
                    for _ in range(min(_LIST_STEP, limit - len(out))):
                        try:
                            out.append(await anext(jobs))
                        except StopAsyncIteration:
                            return out
        finally:
            # Stopping early: let the generator release its cursor or lock now.
            aclose = getattr(jobs, "aclose", None)
            if aclose is not None:
                await aclose()
        return out

    def _list_step(self) -> AbstractAsyncContextManager[object]:
        """Held while ``list_jobs`` reads up to ``_LIST_STEP`` rows (nothing by default)."""
        return contextlib.nullcontext()


# --------------------------------------------------------------------------------------
# Group commit, shared by every store that writes to disk or to a database server.
#
# How it works: ``add`` and ``done`` append to pending lists and wake one flusher task.
# The flusher takes everything pending, hands it to ``_commit`` as one batch (one
# transaction, one round trip where the backend allows it) and resolves each caller's
# future once that batch is durable.  Whatever arrives while a commit is running waits
# for the next one, so under load one transaction carries many jobs while an idle store
# still commits a lone job at once.  At most one commit is in flight at any time.
#
# Faults: if ``_commit`` raises, every add of the batch fails with StoreError (the
# server answers QUEUE_ERROR: nothing is acknowledged that was not stored), the dones
# are kept and retried, the connection is dropped and a recovery task reconnects with
# backoff.  While the store is down, adds fail at once instead of queueing up behind
# connect timeouts.  A commit whose answer was lost may still have been applied; such
# a job was refused to its client yet may run after a restart (at-least-once, never
# lost).


@dataclass(slots=True)
class CommitStats:
    """Counters a group-commit store keeps (tests and benchmarks read them)."""

    #: Transactions (batches) that committed.
    commits: int = 0
    #: Jobs made durable by ``add``.
    adds: int = 0
    #: Rows removed by ``done``.
    dones: int = 0
    #: Batches that failed.
    failures: int = 0
    #: Largest number of adds and dones carried by one commit.
    largest_batch: int = 0


class GroupCommitStore(Store, Generic[RowT]):
    """Base class for stores whose writes go through group commit.

    Subclasses implement ``_connect``, ``_disconnect``, ``_row``, ``_commit`` and
    ``_replay``; this class does the batching, the fault handling and the
    reconnecting.
    """

    #: Most adds carried by one transaction (bounds statement size and latency).
    max_batch: int = 5000
    #: Seconds a commit may take before the store is declared down (None = no limit).
    commit_timeout: float | None = 30.0
    #: Backoff bounds, in seconds, for reconnecting after a failure.
    min_backoff: float = 0.1
    max_backoff: float = 2.0

    def __init__(self) -> None:
        self.stats = CommitStats()
        self._adds: list[tuple[StoredJob, RowT, asyncio.Future[None]]] = []
        self._dones: list[tuple[object, asyncio.Future[None]]] = []
        # Dones whose commit failed: retried with the next batch that commits.
        self._retry_dones: list[object] = []
        self._flusher: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._down: str | None = None
        self._opened = False
        self._closed = False
        # Serialises commits with reads that share the connection (``list_jobs``).
        self._io_lock = asyncio.Lock()

    # -- what a backend provides ----------------------------------------------------

    @abc.abstractmethod
    async def _connect(self) -> None:
        """(Re)connect and make sure the table exists.  Raises on failure."""

    @abc.abstractmethod
    async def _disconnect(self) -> None:
        """Drop the connection; must not raise."""

    @abc.abstractmethod
    def _row(self, job: StoredJob) -> RowT:
        """Encode ``job`` for the backend; StoreError if it cannot be stored."""

    @abc.abstractmethod
    async def _commit(self, rows: list[RowT], dones: list[object]) -> list[object]:
        """Insert ``rows`` and delete ``dones`` in one transaction; return the new keys.

        A clustered store may return, in a row's place, ``COALESCED`` (a duplicate of a
        job another member holds) or a ``StoreError`` (that add alone is refused).
        """

    @abc.abstractmethod
    def _replay(self) -> AsyncIterator[StoredJob]:
        """Yield the stored jobs, oldest first, with ``key`` set (driver errors may escape)."""

    # -- the Store contract ----------------------------------------------------------

    @property
    def is_down(self) -> bool:
        """True while the backend is unreachable and adds are refused."""
        return self._down is not None

    async def open(self) -> None:
        """Connect and create the table; StoreError if the backend is unreachable."""
        try:
            await self._connect()
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"{self.describe()}: cannot open: {_reason(exc)}") from exc
        self._opened = True
        logger.info("queue store %s opened", self.describe())

    async def add(self, job: StoredJob) -> None:
        """Store ``job``; returns once the transaction carrying it has committed.

        Raises:
            StoreError: the store is closed or down, or the commit failed.
        """
        if self._closed or not self._opened:
            raise StoreError(f"{self.describe()}: store is not open")
        if self._down is not None:
            raise StoreError(f"{self.describe()} is unavailable: {self._down}")
        row = self._row(job)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._adds.append((job, row, fut))
        self._kick()
        await fut

    async def done(self, job: StoredJob) -> None:
        """Delete ``job``'s row; returns once that is committed or queued for retry.

        Never raises: a delete that cannot be done now is retried after the store
        recovers (until then a restart would replay the job: at-least-once).
        """
        if job.key is None:
            return
        key = job.key
        job.key = None
        if self._down is not None or self._closed:
            self._retry_dones.append(key)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._dones.append((key, fut))
        self._kick()
        await fut

    async def replay(self) -> AsyncGenerator[StoredJob, None]:
        """Yield every stored job, oldest first, with ``key`` set.

        Raises:
            StoreError: the store is not open or the backend failed while reading.
        """
        if not self._opened or self._closed:
            raise StoreError(f"{self.describe()}: store is not open")
        try:
            async for job in self._replay():
                yield job
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"{self.describe()}: replay failed: {_reason(exc)}") from exc

    async def list_jobs(self, limit: int) -> list[StoredJob]:
        """At most ``limit`` stored jobs, oldest first.

        The backends read in chunks; the connection is held for one chunk at a time,
        so a long listing lets commits (durable submits) through between chunks
        instead of stalling them until it ends.  Jobs added or finished meanwhile may
        or may not be listed.

        Raises:
            StoreError: the store is not open, down or closed meanwhile, or the
                backend failed.
        """
        if not self._opened or self._closed:
            raise StoreError(f"{self.describe()}: store is not open")
        if self._down is not None:
            raise StoreError(f"{self.describe()} is unavailable: {self._down}")
        return await super().list_jobs(limit)

    @contextlib.asynccontextmanager
    async def _list_step(self) -> AsyncIterator[None]:
        # A step reads at most one backend chunk, and most rows come out of the chunk
        # already read: the connection is released every _LIST_STEP rows, not every row,
        # or a waiting commit would go between each two.
        async with self._io_lock:
            if self._closed:
                raise StoreError(f"{self.describe()}: store closed during the listing")
            yield

    async def close(self) -> None:
        """Finish the commit in flight, retry kept deletes once, disconnect."""
        if self._closed:
            return
        self._closed = True
        if self._recovery is not None:
            self._recovery.cancel()
            await asyncio.gather(self._recovery, return_exceptions=True)
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        # A listing may be reading a chunk on the shared connection: wait for it (it
        # stops at the next chunk, seeing _closed), but not forever.
        try:
            async with asyncio.timeout(self.commit_timeout):
                await self._io_lock.acquire()
        except TimeoutError:
            logger.warning("queue store %s: a read did not finish; closing anyway", self.describe())
            locked = False
        else:
            locked = True
        try:
            if locked and self._opened and self._down is None and self._retry_dones:
                keys, self._retry_dones = self._retry_dones, []
                try:
                    await self._commit([], keys)
                except Exception as exc:
                    logger.warning(
                        "queue store %s: %d finished jobs could not be deleted (%s); "
                        "they will run again after a restart",
                        self.describe(),
                        len(keys),
                        _reason(exc),
                    )
            await self._disconnect()
        finally:
            if locked:
                self._io_lock.release()

    # -- machinery ------------------------------------------------------------------

    def _kick(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while (self._adds or self._dones or self._retry_dones) and self._down is None:
            adds = self._adds[: self.max_batch]
            del self._adds[: self.max_batch]
            dones, self._dones = self._dones, []
            keys = self._retry_dones + [key for key, _ in dones]
            self._retry_dones = []
            try:
                async with self._io_lock, asyncio.timeout(self.commit_timeout):
                    new_keys = await self._commit([row for _, row, _ in adds], keys)
            except Exception as exc:
                reason = _reason(exc)
                self.stats.failures += 1
                self._retry_dones.extend(keys)
                for _, fut in dones:
                    if not fut.done():
                        fut.set_result(None)
                err = f"{self.describe()}: job not stored: {reason}"
                for _, _, fut in adds + self._adds:
                    if not fut.done():
                        fut.set_exception(StoreError(err))
                self._adds = []
                # Dones that arrived during the failed commit wait for recovery too.
                for key, fut in self._dones:
                    self._retry_dones.append(key)
                    if not fut.done():
                        fut.set_result(None)
                self._dones = []
                self._mark_down(reason)
                return
            self.stats.commits += 1
            self.stats.adds += len(adds)
            self.stats.dones += len(keys)
            self.stats.largest_batch = max(self.stats.largest_batch, len(adds) + len(keys))
            for (job, _, fut), key in zip(adds, new_keys, strict=True):
                if isinstance(key, StoreError):
                    # Refused alone (a clustered store whose lease is gone).
                    self.stats.adds -= 1
                    if not fut.done():
                        fut.set_exception(key)
                    continue
                if key is COALESCED:
                    job.coalesced = True
                    key = None
                job.key = key
                if not fut.done():
                    fut.set_result(None)
            for _, fut in dones:
                if not fut.done():
                    fut.set_result(None)

    def _mark_down(self, reason: str) -> None:
        if self._down is not None:
            return
        self._down = reason
        logger.error(
            "queue store %s failed: %s; background submits get QUEUE_ERROR until it is back",
            self.describe(),
            reason,
        )
        if not self._closed:
            self._recovery = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        await self._disconnect()
        delay = self.min_backoff
        attempts = 0
        while True:
            await asyncio.sleep(delay)
            attempts += 1
            try:
                await self._connect()
            except Exception as exc:
                logger.debug("queue store %s still down: %s", self.describe(), _reason(exc))
                await self._disconnect()
                delay = min(delay * 2, self.max_backoff)
                continue
            break
        # Logged at the failure's level, so that at gearmand's default verbosity
        # (ERROR) an operator who saw "failed" also sees the recovery.
        logger.error(
            "queue store %s recovered after %d attempts (was: %s)",
            self.describe(),
            attempts,
            self._down,
        )
        self._down = None
        self._recovery = None
        if self._retry_dones or self._adds or self._dones:
            self._kick()


def _reason(exc: BaseException) -> str:
    """A one-line description of a backend exception for logs and QUEUE_ERROR texts."""
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
