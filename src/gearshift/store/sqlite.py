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

SQLite keeps writing a file that was deleted (or replaced by another) while it is
open, and whatever it writes there is gone at the next start.  So the store holds the
file it opened and, before each commit, checks that the path still leads to it; if
not, it refuses the commit ("database file ... was deleted or replaced"), goes down,
and reconnects once the path can be opened again.  The new file then gets every job
the server still holds (``Store.held_jobs``) before any new one is accepted.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from gearshift.errors import ConfigError, StoreError
from gearshift.records import StoredJob
from gearshift.store.base import GroupCommitStore
from gearshift.store.rows import check_identifier, job_from_row, text_or_blob

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: (unique_key, function_name, priority, data, when_to_run) as bound to SQLite.
SqliteRow = tuple[str | bytes, str | bytes, int, bytes, int]

_SYNCHRONOUS = ("off", "normal", "full", "extra")
_REPLAY_CHUNK = 1000
#: SQLite result codes that say the database itself is unusable, whatever the rows
#: (locked, read-only, I/O error, corrupt, full, cannot open): no row is to blame.
_BACKEND_CODES = frozenset(
    {
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_INTERRUPT,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_NOTADB,
    }
)


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
        # The database file the connection uses, held open so that it can be told
        # apart from whatever is at the path later (and its inode is not reused).
        self._fd: int | None = None
        # The file that holds every job this store acknowledged (the first one opened;
        # after a loss, the new one once the server's jobs are written into it).
        self._trusted_fd: int | None = None

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
            self._track_file_sync()
        except BaseException:
            db.close()
            raise
        self._db = db

    def _track_file_sync(self) -> None:
        """Hold the file just opened; note whether it is the one trusted so far."""
        fd = os.open(self.path, os.O_RDONLY)
        trusted = self._trusted_fd
        if trusted is None:
            self._trusted_fd = self._fd = fd
        elif _same_file(os.fstat(fd), os.fstat(trusted)):
            os.close(fd)
            self._fd = trusted
        else:
            self._fd = fd

    def _lost_file_sync(self) -> str | None:
        """Why the path no longer leads to the open file; None while it does."""
        if self._fd is None:
            return None
        try:
            on_disk = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return "was deleted or replaced"
        except OSError as exc:
            return f"cannot be checked: {exc.strerror or type(exc).__name__}"
        if not _same_file(on_disk, os.fstat(self._fd)):
            return "was deleted or replaced"
        return None

    def _check_file_sync(self) -> None:
        """Refuse to commit into a file that is no longer the one at the path.

        Raises:
            StoreError: the file was deleted or replaced (or the path cannot be read).
        """
        problem = self._lost_file_sync()
        if problem is not None:
            raise StoreError(f"database file {self.path} {problem}")

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
            if self._lost_file_sync() is not None:
                self._empty_wal_sync(db)
            try:
                db.close()
            except sqlite3.Error as exc:
                logger.debug("sqlite %s: close failed: %s", self.path, exc)
        fd, self._fd = self._fd, None
        if fd is not None and fd != self._trusted_fd:
            os.close(fd)

    def _empty_wal_sync(self, db: sqlite3.Connection) -> None:
        """Empty the WAL of a file that is gone from its path, before closing it.

        SQLite does not checkpoint and delete the WAL of a file that was moved or
        deleted; left at ``<path>-wal`` it would be replayed into whatever file is at
        the path next, overwriting that file's pages with the lost file's.
        """
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            logger.error(
                "sqlite %s: could not empty the WAL of the lost database file (%s); remove"
                " %s-wal before using the new file",
                self.path,
                exc,
                self.path,
            )

    def _backend_failed(self, exc: Exception) -> bool:
        if super()._backend_failed(exc):
            return True
        if isinstance(exc, (sqlite3.ProgrammingError, sqlite3.InterfaceError)):
            return True  # a closed or misused connection: no row's fault
        code = getattr(exc, "sqlite_errorcode", None)
        return isinstance(code, int) and code & 0xFF in _BACKEND_CODES

    def _data_lost(self) -> bool:
        return self._fd is not None and self._fd != self._trusted_fd

    def _data_restored(self) -> None:
        old, self._trusted_fd = self._trusted_fd, self._fd
        if old is not None and old != self._fd:
            os.close(old)

    def _rewritable(self, record: StoredJob) -> bool:
        # store_on_shutdown keeps its jobs in memory (tuple keys) until close().
        return not isinstance(record.key, tuple)

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
        self._check_file_sync()
        keys: list[object] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            if dones:
                db.executemany(f"DELETE FROM {self.table} WHERE id=?", [(k,) for k in dones])
            elif not rows:
                # An empty commit is a probe (GroupCommitStore._probe): an empty
                # transaction succeeds even on a read-only file, this write does not.
                db.execute(f"DELETE FROM {self.table} WHERE id < 0")
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
            self.encode(job)  # refused now if it could not be stored at close
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

    async def _rescue_lost_file(self) -> None:
        """At close, a file that went away unnoticed (no commit since) gets replaced.

        The jobs the server still holds are written to a new file at the path, so that
        the next start finds them; if that cannot be done, the loss is logged.
        """
        problem = await self._call(self._lost_file_sync)
        if problem is None:
            return
        logger.error(
            "sqlite %s: database file %s; writing the jobs this server holds to a new file",
            self.path,
            problem,
        )
        try:
            await self._disconnect()
            await self._connect()
            if self._data_lost():
                await self._rewrite_held()
        except Exception as exc:
            held = self.held_jobs() if self.held_jobs is not None else ()
            logger.error(
                "sqlite %s: could not write a new database file (%s): %d acknowledged jobs"
                " will be missing at the next start",
                self.path,
                exc,
                sum(1 for job in held if self._rewritable(job)),
            )
            self._down = f"database file {self.path} {problem}"

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
        if self._opened and self._down is None:
            await self._rescue_lost_file()
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
        fd, self._trusted_fd = self._trusted_fd, None
        if fd is not None:
            os.close(fd)


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
