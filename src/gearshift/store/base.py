"""The durable-queue interface every store implements.

A store is a log of background jobs, as in gearmand: the server calls ``add`` before
it sends JOB_CREATED (and sends it only once ``add`` has returned, i.e. the job is
durable), ``done`` when the job completes, fails, is cancelled or is dropped, and
``replay`` once at start-up, before the listener opens.  Foreground jobs never reach
a store.  A store that fails raises ``StoreError``; the server then answers the
submit with ``ERROR QUEUE_ERROR`` and keeps serving.

A job a store cannot hold (``check_stored``, and each backend's own column limits) is
refused before it joins a batch, so that one client's bad submit never fails the
others' jobs.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Final, Generic, TypeAlias, TypeVar

from gearshift.errors import StoreError
from gearshift.protocol.packets import Priority
from gearshift.records import ClusterSettings, StoredJob

logger = logging.getLogger(__name__)

#: What a backend makes of a job before batching it (a tuple of column values, ...).
RowT = TypeVar("RowT")

#: The range of a signed 64-bit integer: the widest ``when_to_run`` column of any store.
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
#: Longest unique a job may have (gearmand's GEARMAN_MAX_UNIQUE_SIZE).
MAX_UNIQUE_BYTES: Final = 64


def check_stored(job: StoredJob) -> None:
    """Refuse a job no store can hold, before it joins a batch.

    A value a column cannot take fails the whole transaction it is in, so it must be
    caught here, where it costs only its own submit.  The server checks these fields
    itself; the store does not rely on that.

    Raises:
        StoreError: saying which field is wrong and why.
    """
    # One expression for the common case: this runs for every durable submit.
    if (
        job.function
        and INT64_MIN <= job.when <= INT64_MAX
        and 0 <= job.priority <= 2
        and len(job.unique) <= MAX_UNIQUE_BYTES
    ):
        return
    if not job.function:
        raise StoreError("a background job needs a function name")
    if not INT64_MIN <= job.when <= INT64_MAX:
        raise StoreError(f"epoch time {job.when} does not fit a signed 64-bit integer")
    if job.priority not in (Priority.HIGH, Priority.NORMAL, Priority.LOW):
        raise StoreError(f"priority {int(job.priority)} is not 0 (high), 1 (normal) or 2 (low)")
    if len(job.unique) > MAX_UNIQUE_BYTES:
        raise StoreError(
            f"unique of {len(job.unique)} bytes is longer than {MAX_UNIQUE_BYTES} bytes"
        )


def check_when_fits(when: int, bits: int, *, unsigned: bool = False) -> None:
    """Refuse an epoch time that this store's ``when_to_run`` column cannot hold.

    gearmand creates that column as a 32-bit ``INTEGER`` (PostgreSQL, MySQL).

    Raises:
        StoreError: naming the value and the column's type.
    """
    low, high = (0, 2**bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if not low <= when <= high:
        kind = f"{'unsigned ' if unsigned else ''}{bits}-bit integer"
        raise StoreError(f"epoch time {when} does not fit this store's when_to_run column ({kind})")


#: Returns the records of every job a server holds that a store acknowledged.
HeldJobs: TypeAlias = Callable[[], Iterable[StoredJob]]


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
    #: Installed by the server: the records of every job it holds that this store
    #: acknowledged (queued, delayed or running).  A store whose backend lost what it
    #: had committed (a SQLite file deleted or replaced) writes them again from this
    #: before it accepts new jobs; without it they would be gone after a restart.
    held_jobs: HeldJobs | None = None

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
# Bad jobs: ``add`` checks every field (``check_stored``, then the backend's ``_row``
# with its column limits) before the job joins a batch; a job refused there fails
# alone.  A batch can still fail because of one row the backend itself refuses (a
# trigger, a constraint, a value the checks did not foresee).  Then, unless the error
# says the backend is unwell (``_backend_failed``: connection, timeout, read-only,
# permissions, disk), the store first probes the backend by committing the batch's
# deletes alone (``_probe``; an empty write when there are none).  If the probe fails,
# the backend is down: see below.  If it commits, the deletes are done (exactly once)
# and the adds are bisected: halves are committed recursively, and only an add whose
# single-row commit fails is refused, with the backend's reason; every other add is
# acknowledged.  One bad row in a batch of N costs about 2*log2(N) extra commits.
#
# Faults: if the backend fails (the error says so, or the probe fails too), every add
# of the batch that is not yet committed fails with StoreError (the server answers
# QUEUE_ERROR: nothing is acknowledged that was not stored), the dones are kept and
# retried, the connection is dropped and a recovery task reconnects with backoff.
# While the store is down, adds fail at once instead of queueing up behind connect
# timeouts.  A commit whose answer was lost may still have been applied; such a job
# was refused to its client yet may run after a restart (at-least-once, never lost).
#
# Lost backend: a backend that comes back without what it had committed (a SQLite
# file that was deleted or replaced: ``_data_lost``) gets every job the server still
# holds written again (``Store.held_jobs``), in one transaction, before the store
# accepts new adds; deletes kept for the lost rows are dropped, since their keys
# would name other rows in the new backend.


@dataclass(slots=True)
class CommitStats:
    """Counters a group-commit store keeps (tests and benchmarks read them)."""

    #: Transactions that committed (batches, probes and parts of isolated batches).
    commits: int = 0
    #: Jobs made durable by ``add``.
    adds: int = 0
    #: Rows removed by ``done``.
    dones: int = 0
    #: Commits that failed (batches, probes and parts of isolated batches).
    failures: int = 0
    #: Largest number of adds and dones carried by one commit.
    largest_batch: int = 0
    #: Failed batches whose failure was isolated to some of their rows.
    isolated: int = 0
    #: Adds refused alone: their own single-row commit failed in the backend.
    refused: int = 0
    #: Jobs written again after the backend lost what it had committed.
    rewritten: int = 0


@dataclass(slots=True)
class _Add(Generic[RowT]):
    """One ``add`` waiting for its commit."""

    job: StoredJob
    row: RowT
    fut: asyncio.Future[None]


class _BackendDown(Exception):
    """Raised inside the isolation of a batch when the backend itself failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Rewriting:
    __slots__ = ()

    def __repr__(self) -> str:
        return "REWRITING"


#: The key of a held job while it is being written again into a new backend.
_REWRITING: Final = _Rewriting()


class GroupCommitStore(Store, Generic[RowT]):
    """Base class for stores whose writes go through group commit.

    Subclasses implement ``_connect``, ``_disconnect``, ``_row``, ``_commit`` and
    ``_replay``, and may refine ``_backend_failed``, ``_probe`` and ``_data_lost``;
    this class does the batching, the isolation of bad rows, the fault handling and
    the reconnecting.
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
        self._adds: list[_Add[RowT]] = []
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
        """Encode ``job`` for the backend.

        Called after ``check_stored``; checks what this backend's columns cannot hold.

        Raises:
            StoreError: the job cannot be stored here (the text says why).
        """

    @abc.abstractmethod
    async def _commit(self, rows: list[RowT], dones: list[object]) -> list[object]:
        """Insert ``rows`` and delete ``dones`` in one transaction; return the new keys.

        A clustered store may return, in a row's place, ``COALESCED`` (a duplicate of a
        job another member holds) or a ``StoreError`` (that add alone is refused).
        """

    @abc.abstractmethod
    def _replay(self) -> AsyncIterator[StoredJob]:
        """Yield the stored jobs, oldest first, with ``key`` set (driver errors may escape)."""

    def _backend_failed(self, exc: Exception) -> bool:
        """Does ``exc``, raised by a commit, say that the backend itself is unwell?

        True for errors no single row can cause (connection lost, timeout, read-only,
        no permission, disk full): the store is then marked down at once.  False means
        "maybe one row": the store probes the backend and isolates the bad rows.
        Backends add their own drivers' errors.
        """
        return isinstance(exc, (StoreError, OSError))

    async def _probe(self, dones: list[object]) -> None:
        """Commit ``dones`` alone, to tell a bad row from a backend that takes no writes.

        Must write (or be refused as a write would be) even when ``dones`` is empty.
        """
        await self._commit([], dones)

    def _data_lost(self) -> bool:
        """After a reconnect: is the backend a new one, without the rows committed before?

        Only a store that can tell (SQLite: the file at the path is not the one that
        was open) says True; the jobs the server holds are then written again.
        """
        return False

    def _data_restored(self) -> None:  # noqa: B027 - optional hook
        """The jobs the server holds are now in the new backend: it is the one to keep."""

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
            StoreError: the store is closed or down, the job cannot be stored here
                (``check_stored``, the backend's column limits), or its commit failed.
        """
        if self._closed or not self._opened:
            raise StoreError(f"{self.describe()}: store is not open")
        if self._down is not None:
            raise StoreError(f"{self.describe()} is unavailable: {self._down}")
        row = self.encode(job)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._adds.append(_Add(job, row, fut))
        self._kick()
        await fut

    def encode(self, job: StoredJob) -> RowT:
        """Check ``job`` against every limit of this store and encode it as a row.

        Raises:
            StoreError: "<store>: job not stored: <what is wrong>".
        """
        try:
            check_stored(job)
            return self._row(job)
        except StoreError as exc:
            raise StoreError(f"{self.describe()}: job not stored: {exc}") from None

    async def done(self, job: StoredJob) -> None:
        """Delete ``job``'s row; returns once that is committed or queued for retry.

        Never raises: a delete that cannot be done now is retried after the store
        recovers (until then a restart would replay the job: at-least-once).
        """
        if job.key is None:
            return
        key = job.key
        job.key = None
        if key is _REWRITING:
            # Being written again into a new backend: the rewrite deletes it after.
            return
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

    async def _locked_commit(self, rows: list[RowT], dones: list[object]) -> list[object]:
        async with self._io_lock, asyncio.timeout(self.commit_timeout):
            return await self._commit(rows, dones)

    async def _flush_loop(self) -> None:
        while (self._adds or self._dones or self._retry_dones) and self._down is None:
            adds = self._adds[: self.max_batch]
            del self._adds[: self.max_batch]
            dones, self._dones = self._dones, []
            keys = self._retry_dones + [key for key, _ in dones]
            self._retry_dones = []
            try:
                new_keys = await self._locked_commit([add.row for add in adds], keys)
            except Exception as exc:
                self.stats.failures += 1
                if not await self._survive(adds, dones, keys, exc):
                    return
                continue
            self._committed(adds, new_keys, len(keys))
            _resolve(dones)

    async def _survive(
        self,
        adds: list[_Add[RowT]],
        dones: list[tuple[object, asyncio.Future[None]]],
        keys: list[object],
        exc: Exception,
    ) -> bool:
        """A batch failed: isolate its bad rows if the backend works, else go down.

        Returns:
            False when the store is now down.
        """
        if not adds or self._backend_failed(exc) or not await self._probed(keys):
            self._go_down(adds, dones, keys, _reason(exc))
            return False
        _resolve(dones)  # the probe deleted them
        self.stats.isolated += 1
        refused = self.stats.refused
        try:
            await self._isolate(adds, exc)
        except _BackendDown as down:
            self._go_down(adds, [], [], down.reason)
            return False
        logger.info(
            "queue store %s: a batch of %d jobs failed (%s); the backend works, so the"
            " failing jobs were isolated: %d refused, the others stored",
            self.describe(),
            len(adds),
            _reason(exc),
            self.stats.refused - refused,
        )
        return True

    async def _probed(self, keys: list[object]) -> bool:
        """Does the backend take a write (the batch's deletes alone)?  Applies them if so."""
        try:
            async with self._io_lock, asyncio.timeout(self.commit_timeout):
                await self._probe(keys)
        except Exception as exc:
            self.stats.failures += 1
            logger.debug("queue store %s: probe failed: %s", self.describe(), _reason(exc))
            return False
        self.stats.commits += 1
        self.stats.dones += len(keys)
        return True

    async def _isolate(self, adds: list[_Add[RowT]], error: Exception | None) -> None:
        """Store what can be stored of ``adds``, a group that holds a row the backend refuses.

        ``error`` is the group's own failure, or None when it was inferred (the other
        half of its parent committed, so the bad row must be here).  Halves are
        committed recursively; an add is refused only when its single-row commit
        failed.

        Raises:
            _BackendDown: a commit failed in a way that says the backend is unwell.
        """
        if len(adds) == 1:
            if error is None:
                error = await self._try_commit(adds)
            if error is not None:
                self._refuse(adds[0], error)
            return
        mid = len(adds) // 2
        left, right = adds[:mid], adds[mid:]
        left_error = await self._try_commit(left)
        if left_error is None:
            await self._isolate(right, None)
            return
        await self._isolate(left, left_error)
        right_error = await self._try_commit(right)
        if right_error is not None:
            await self._isolate(right, right_error)

    async def _try_commit(self, adds: list[_Add[RowT]]) -> Exception | None:
        """Commit ``adds`` alone; None if they are stored, else the backend's error."""
        try:
            new_keys = await self._locked_commit([add.row for add in adds], [])
        except Exception as exc:
            self.stats.failures += 1
            if self._backend_failed(exc):
                raise _BackendDown(_reason(exc)) from exc
            return exc
        self._committed(adds, new_keys, 0)
        return None

    def _committed(self, adds: list[_Add[RowT]], new_keys: list[object], dones: int) -> None:
        """A commit carrying ``adds`` and ``dones`` deletes succeeded: resolve the adds."""
        self.stats.commits += 1
        self.stats.adds += len(adds)
        self.stats.dones += dones
        self.stats.largest_batch = max(self.stats.largest_batch, len(adds) + dones)
        for add, key in zip(adds, new_keys, strict=True):
            if isinstance(key, StoreError):
                # Refused alone (a clustered store whose lease is gone).
                self.stats.adds -= 1
                if not add.fut.done():
                    add.fut.set_exception(key)
                continue
            if key is COALESCED:
                add.job.coalesced = True
                key = None
            add.job.key = key
            if not add.fut.done():
                add.fut.set_result(None)

    def _refuse(self, add: _Add[RowT], error: Exception) -> None:
        self.stats.refused += 1
        if not add.fut.done():
            add.fut.set_exception(
                StoreError(f"{self.describe()}: job not stored: {_reason(error)}")
            )

    def _go_down(
        self,
        adds: list[_Add[RowT]],
        dones: list[tuple[object, asyncio.Future[None]]],
        keys: list[object],
        reason: str,
    ) -> None:
        """The backend failed: refuse every add not yet stored, keep the deletes, recover."""
        self._retry_dones.extend(keys)
        _resolve(dones)
        text = f"{self.describe()}: job not stored: {reason}"
        for add in adds + self._adds:
            if not add.fut.done():
                add.fut.set_exception(StoreError(text))
        self._adds = []
        # Dones that arrived during the failed commit wait for recovery too.
        self._retry_dones.extend(key for key, _ in self._dones)
        _resolve(self._dones)
        self._dones = []
        self._mark_down(reason)

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
                if self._data_lost():
                    await self._rewrite_held()
                else:
                    # A backend that connects but takes no writes (read-only) is
                    # still down: back only once a write goes through.
                    async with asyncio.timeout(self.commit_timeout):
                        await self._probe([])
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

    async def _rewrite_held(self) -> None:
        """The backend lost what it held: write every job the server holds again.

        One transaction, so that a failure leaves nothing half written (the recovery
        retries the whole).  Kept deletes name rows of the lost backend, which may be
        other jobs' rows in the new one: they are dropped.  A job that finishes during
        the write (its key is ``_REWRITING``) is deleted right after.
        """
        self._retry_dones.clear()
        records: list[StoredJob] = []
        rows: list[RowT] = []
        for record in self.held_jobs() if self.held_jobs is not None else ():
            if not self._rewritable(record):
                continue
            try:
                rows.append(self.encode(record))
            except StoreError as exc:
                logger.error("queue store %s: cannot write a held job again: %s", self.name, exc)
                continue
            record.key = _REWRITING
            records.append(record)
        keys = await self._locked_commit(rows, [])
        for record, key in zip(records, keys, strict=True):
            if record.key is _REWRITING:
                record.key = key
            else:
                self._retry_dones.append(key)
        self.stats.rewritten += len(records)
        self._data_restored()
        logger.error(
            "queue store %s: the backend came back without the jobs it held; wrote again"
            " the %d jobs this server holds",
            self.describe(),
            len(records),
        )

    def _rewritable(self, record: StoredJob) -> bool:
        """Is ``record`` a row of this store (not one it keeps in memory)?"""
        return True


def _resolve(dones: list[tuple[object, asyncio.Future[None]]]) -> None:
    for _, fut in dones:
        if not fut.done():
            fut.set_result(None)


def _reason(exc: BaseException) -> str:
    """A one-line description of a backend exception for logs and QUEUE_ERROR texts."""
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    text = " ".join(str(exc).split())
    if isinstance(exc, StoreError) and text:
        return text  # already written for people
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
