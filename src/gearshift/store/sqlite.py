"""The SQLite store: gearshift's default durable queue, and gearmand's ``-q libsqlite3``.

The table keeps gearmand's five columns (``unique_key``, ``function_name``,
``priority``, ``data``, ``when_to_run``) plus an ``id INTEGER PRIMARY KEY
AUTOINCREMENT`` that is each job's own key.  gearmand keys rows by (unique,
function), so two background jobs with an empty unique overwrite each other there;
here they never do.  A table gearmand wrote is migrated in place on open (one
transaction, rows kept in their original order); gearmand can still read the result,
because its statements name the columns.

Every statement runs on one dedicated thread, so the event loop never waits for the
disk, and writes go through group commit (see ``GroupCommitStore``): the database is
in WAL mode with ``synchronous=FULL`` by default, so a commit that returned survives
a power cut, and one fsync covers every job that arrived while the previous commit
ran.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from gearshift.errors import ConfigError, StoreError
from gearshift.protocol.packets import Priority
from gearshift.store.base import GroupCommitStore, StoredJob

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: (unique_key, function_name, priority, data, when_to_run) as bound to SQLite.
SqliteRow = tuple[str | bytes, str | bytes, int, bytes, int]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_SYNCHRONOUS = ("off", "normal", "full", "extra")
_REPLAY_CHUNK = 1000


def check_identifier(name: str, what: str = "table") -> str:
    """Return ``name`` if it is a plain SQL identifier (no quoting games), else ConfigError."""
    if not _IDENT.match(name):
        raise ConfigError(f"invalid {what} name {name!r}: use letters, digits and _")
    return name


def text_or_blob(value: bytes) -> str | bytes:
    """UTF-8 names are stored as TEXT (what gearmand writes and expects); others as BLOB."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value


def as_bytes(value: object) -> bytes:
    """A column value read back from any backend, as bytes."""
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return str(value).encode("utf-8")


def as_priority(value: object) -> Priority:
    """A stored priority; anything unexpected reads as NORMAL instead of aborting replay."""
    try:
        return Priority(_as_int(value))
    except (TypeError, ValueError):
        logger.warning("stored job with unknown priority %r replayed as NORMAL", value)
        return Priority.NORMAL


def as_when(value: object) -> int:
    """A stored epoch time; NULL and garbage read as 0 (run now)."""
    try:
        return max(0, _as_int(value))
    except (TypeError, ValueError):
        return 0


def job_from_row(row: Sequence[Any]) -> StoredJob:
    """A stored job from a ``(key, unique, function, priority, data, when)`` row."""
    key, unique, function, priority, data, when = tuple(row)[:6]
    return StoredJob(
        function=as_bytes(function),
        unique=as_bytes(unique),
        data=as_bytes(data),
        priority=as_priority(priority),
        when=as_when(when),
        key=key,
    )


def _as_int(value: object) -> int:
    if isinstance(value, (int, str, bytes, float)):
        return int(value)
    raise TypeError(f"not a number: {value!r}")


class SqliteStore(GroupCommitStore[SqliteRow]):
    """Background jobs in a SQLite file.

    Args:
        path: the database file (created if missing).
        table: table name (gearmand's default is ``gearman_queue``).
        synchronous: SQLite's ``PRAGMA synchronous``: ``full`` (default: a commit
            survives a power cut) or ``normal`` (survives a crash of gearshift but
            maybe not of the machine; faster), also ``off``/``extra``.
        busy_timeout: seconds to wait for a lock held by another process.
        store_on_shutdown: gearmand's ``--store-queue-on-shutdown``: write nothing
            while running (only deletes of replayed jobs), and store every unfinished
            job at a clean shutdown.  A crash loses those jobs, as with gearmand.
    """

    name = "sqlite"
    commit_timeout = None  # the thread cannot be interrupted; busy_timeout bounds waits

    def __init__(
        self,
        path: str | Path,
        *,
        table: str = "gearman_queue",
        synchronous: str = "full",
        busy_timeout: float = 5.0,
        store_on_shutdown: bool = False,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.table = check_identifier(table)
        if synchronous.lower() not in _SYNCHRONOUS:
            raise ConfigError(
                f"sqlite synchronous must be one of {', '.join(_SYNCHRONOUS)}, not {synchronous!r}"
            )
        self.synchronous = synchronous.lower()
        self.busy_timeout = busy_timeout
        self.store_on_shutdown = store_on_shutdown
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        # store_on_shutdown: jobs held in memory until close(), by their key.
        self._held: dict[tuple[str, int], StoredJob] = {}
        self._held_ids = itertools.count(1)

    def describe(self) -> str:
        return f"sqlite:{self.path} table {self.table} (synchronous={self.synchronous})"

    # -- thread plumbing ----------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="gearshift-sqlite")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- GroupCommitStore ---------------------------------------------------------

    async def _connect(self) -> None:
        await self._call(self._connect_sync)

    def _connect_sync(self) -> None:
        self._close_sync()
        db = sqlite3.connect(self.path, isolation_level=None, timeout=self.busy_timeout)
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning("sqlite %s: journal_mode is %s, not wal", self.path, mode)
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            # The store appends and deletes by key; it never scans except at replay,
            # so a small page cache does (SQLite's default 2 MiB shows up as ~100 bytes
            # per queued job in a 20k-job queue).
            db.execute("PRAGMA cache_size=-256")
            self._ensure_table(db)
        except BaseException:
            db.close()
            raise
        self._db = db

    def _ensure_table(self, db: sqlite3.Connection) -> None:
        t = self.table
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({t})")}
        if not columns:
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {t} (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " unique_key TEXT, function_name TEXT, priority INTEGER, data BLOB,"
                " when_to_run INTEGER)"
            )
            return
        missing = {"unique_key", "function_name", "priority", "data"} - columns
        if missing:
            raise StoreError(
                f"sqlite table {t} in {self.path} is not a queue table (no {sorted(missing)})"
            )
        if "id" in columns:
            return
        # A gearmand table: PRIMARY KEY (unique_key, function_name) would let jobs with
        # empty uniques overwrite each other.  Rebuild it with an id, in rowid order.
        db.execute("BEGIN IMMEDIATE")
        try:
            if "when_to_run" not in columns:  # tables from gearmand before 1.1
                db.execute(f"ALTER TABLE {t} ADD COLUMN when_to_run INTEGER")
            new = f"{t}__gearshift_migrate"
            db.execute(f"DROP TABLE IF EXISTS {new}")
            db.execute(
                f"CREATE TABLE {new} (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " unique_key TEXT, function_name TEXT, priority INTEGER, data BLOB,"
                " when_to_run INTEGER)"
            )
            cur = db.execute(
                f"INSERT INTO {new} (unique_key, function_name, priority, data, when_to_run)"
                f" SELECT unique_key, function_name, priority, data, when_to_run FROM {t}"
                " ORDER BY rowid"
            )
            db.execute(f"DROP TABLE {t}")
            db.execute(f"ALTER TABLE {new} RENAME TO {t}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        logger.warning(
            "sqlite %s: migrated gearmand queue table %s (%d jobs) to one key per job",
            self.path,
            t,
            cur.rowcount,
        )

    async def _disconnect(self) -> None:
        if self._executor is not None:
            await self._call(self._close_sync)

    def _close_sync(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            try:
                db.close()
            except sqlite3.Error as exc:
                logger.debug("sqlite %s: close failed: %s", self.path, exc)

    def _row(self, job: StoredJob) -> SqliteRow:
        return (
            text_or_blob(job.unique),
            text_or_blob(job.function),
            int(job.priority),
            job.data,
            int(job.when),
        )

    async def _commit(self, rows: list[SqliteRow], dones: list[object]) -> list[object]:
        return await self._call(self._commit_sync, rows, dones)

    def _commit_sync(self, rows: list[SqliteRow], dones: list[object]) -> list[object]:
        db = self._db
        if db is None:
            raise StoreError("database is not open")
        keys: list[object] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            if dones:
                db.executemany(f"DELETE FROM {self.table} WHERE id=?", [(k,) for k in dones])
            insert = (
                f"INSERT INTO {self.table} (unique_key, function_name, priority, data,"
                " when_to_run) VALUES (?, ?, ?, ?, ?)"
            )
            for row in rows:
                keys.append(db.execute(insert, row).lastrowid)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error as exc:
                    logger.debug("sqlite %s: rollback failed: %s", self.path, exc)
            raise
        return keys

    # -- Store ----------------------------------------------------------------------

    async def add(self, job: StoredJob) -> None:
        if self.store_on_shutdown and not self._closed:
            key = ("held", next(self._held_ids))
            job.key = key
            self._held[key] = job
            return
        await super().add(job)

    async def done(self, job: StoredJob) -> None:
        if isinstance(job.key, tuple):
            self._held.pop(job.key, None)
            job.key = None
            return
        await super().done(job)

    async def _replay(self) -> AsyncIterator[StoredJob]:
        last = 0
        while True:
            rows = await self._call(self._fetch_sync, last)
            if not rows:
                return
            for row in rows:
                last = row[0]
                yield job_from_row(row)

    def _fetch_sync(self, after: int) -> list[tuple[Any, ...]]:
        if self._db is None:
            raise StoreError(f"{self.describe()}: store is not open")
        return self._db.execute(
            f"SELECT id, unique_key, function_name, priority, data, when_to_run"
            f" FROM {self.table} WHERE id > ? ORDER BY id LIMIT ?",
            (after, _REPLAY_CHUNK),
        ).fetchall()

    async def close(self) -> None:
        if self._closed:
            return
        if self.store_on_shutdown and self._held and self._opened and self._down is None:
            jobs = list(self._held.values())
            self._held.clear()
            try:
                await self._commit([self._row(job) for job in jobs], [])
            except Exception as exc:
                logger.error(
                    "sqlite %s: could not store %d queued jobs on shutdown: %s",
                    self.path,
                    len(jobs),
                    exc,
                )
            else:
                logger.info("sqlite %s: stored %d queued jobs on shutdown", self.path, len(jobs))
        await super().close()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
