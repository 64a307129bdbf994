"""The MySQL/MariaDB store (asyncmy), and gearmand's ``-q MySQL``.

A group commit is a ``DELETE ... WHERE id IN (...)`` for the finished jobs and one
multi-row ``INSERT`` for the new ones, each its own autocommitted statement (past
~4 MB of payload the INSERT is split, and the batch is one explicit transaction).
Rows get their own ``id BIGINT AUTO_INCREMENT`` key, read back from the insert: a
multi-row insert gets consecutive ids under InnoDB's ``innodb_autoinc_lock_mode`` 0
and 1 (the MySQL 5.x / MariaDB default); under mode 2 rows are inserted one by one,
in one transaction.  gearmand's table has ``unique key (unique_key, function_name)``,
which makes a second job with the same (often empty) unique fail; it is migrated on
open.

gearmand's table also has ``VARCHAR`` name columns and ``when_to_run INT`` (32-bit).
The column types are read at connect and every job is checked against them before it
joins a batch: outside strict mode MySQL would silently cut a value that is too long,
and inside it one such value fails the whole batch.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncmy

from gearshift.errors import StoreError
from gearshift.records import StoredJob
from gearshift.store.base import GroupCommitStore, check_when_fits
from gearshift.store.rows import check_identifier, job_from_row

logger = logging.getLogger(__name__)

#: (unique_key, function_name, priority, data, when_to_run) as sent to MySQL.
MysqlRow = tuple[bytes, bytes, int, bytes, int]

_REPLAY_CHUNK = 1000
_STATEMENT_BYTES = 4 << 20
_INT_BITS = {"tinyint": 8, "smallint": 16, "mediumint": 24, "int": 32, "bigint": 64}
#: Server error numbers that say the database is unusable, whatever the rows: no such
#: table or column, no privilege, read-only, full, shutting down, connection killed.
#: (Client errors 2000-2999, such as a lost connection, count too.)
_BACKEND_ERRNOS = frozenset(
    {1021, 1036, 1040, 1044, 1045, 1053, 1054, 1114, 1142, 1143, 1146, 1290, 1792, 1836, 1927}
)


@dataclass(frozen=True, slots=True)
class Column:
    """What a text or binary column can hold, as information_schema describes it."""

    name: str
    #: Longest value, in characters (bytes for binary columns); None = no limit known.
    max_chars: int | None
    #: Longest value in bytes; None = no limit known.
    max_bytes: int | None
    #: The column's character set; None for binary columns.
    charset: str | None

    def check(self, value: bytes, what: str) -> None:
        """Refuse ``value`` if this column would reject it or cut it short.

        Raises:
            StoreError: saying what does not fit.
        """
        chars = len(value)
        if self.charset is not None and self.charset.startswith("utf8"):
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                raise StoreError(
                    f"the {what} is not UTF-8, which this store's {self.name} column"
                    f" ({self.charset}) cannot hold"
                ) from None
            if self.charset in ("utf8", "utf8mb3") and any(ord(c) > 0xFFFF for c in text):
                raise StoreError(
                    f"the {what} has characters outside the BMP, which this store's"
                    f" {self.name} column ({self.charset}) cannot hold"
                )
            chars = len(text)
        elif self.charset == "ascii" and not value.isascii():
            raise StoreError(
                f"the {what} is not ASCII, which this store's {self.name} column cannot hold"
            )
        elif self.charset not in (None, "latin1", "ascii", "binary"):
            chars = 0  # another character set: only the byte limit is checked
        if self.max_chars is not None and chars > self.max_chars:
            raise StoreError(
                f"the {what} is {chars} {'bytes' if self.charset is None else 'characters'}"
                f" long; this store's {self.name} column takes at most {self.max_chars}"
            )
        if self.max_bytes is not None and len(value) > self.max_bytes:
            raise StoreError(
                f"the {what} is {len(value)} bytes long; this store's {self.name} column"
                f" takes at most {self.max_bytes}"
            )


class MysqlStore(GroupCommitStore[MysqlRow]):
    """Background jobs in a MySQL or MariaDB table.

    Args:
        host, port, user, password, database: where to connect.
        table: table name (gearmand's default is ``gearman_queue``).
        connect_timeout: seconds allowed for connecting.
    """

    name = "mysql"

    def __init__(
        self,
        *,
        host: str = "localhost",
        port: int = 3306,
        user: str | None = None,
        password: str = "",
        database: str | None = None,
        table: str = "gearman_queue",
        connect_timeout: float = 5.0,
    ) -> None:
        super().__init__()
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database
        self.table = check_identifier(table)
        self.connect_timeout = connect_timeout
        self._conn: Any = None
        self._consecutive_ids = True
        self._id_step = 1
        # Limits of the table's columns, read at connect (gearmand's are narrow).
        self._columns: dict[str, Column] = {}
        self._when_bits = 64
        self._when_unsigned = False

    def describe(self) -> str:
        return f"mysql:{self.host}:{self.port}/{self.database or ''} table {self.table}"

    async def _connect(self) -> None:
        await self._disconnect()
        conn = await asyncmy.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=self.database,
            autocommit=True,
            connect_timeout=self.connect_timeout,
            read_timeout=self.commit_timeout,
            binary_prefix=True,
        )
        try:
            await self._ensure_table(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def _ensure_table(self, conn: Any) -> None:
        t = self.table
        async with conn.cursor() as cur:
            await cur.execute("SELECT @@innodb_autoinc_lock_mode, @@auto_increment_increment")
            lock_mode, step = await cur.fetchone()
            self._consecutive_ids = int(lock_mode) in (0, 1)
            self._id_step = int(step)
            await cur.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = DATABASE() AND table_name = %s",
                (t,),
            )
            cols = {str(r[0]).lower() for r in await cur.fetchall()}
            if not cols:
                await cur.execute(
                    f"CREATE TABLE IF NOT EXISTS {t} (id BIGINT AUTO_INCREMENT PRIMARY KEY,"
                    " unique_key VARBINARY(64), function_name VARBINARY(255), priority INT,"
                    " data LONGBLOB, when_to_run BIGINT) ENGINE=InnoDB"
                )
            elif "id" not in cols:
                await cur.execute(
                    "SELECT DISTINCT index_name FROM information_schema.statistics"
                    " WHERE table_schema = DATABASE() AND table_name = %s"
                    " AND non_unique = 0 AND index_name <> 'PRIMARY'",
                    (t,),
                )
                changes = [f"DROP INDEX `{r[0]}`" for r in await cur.fetchall()]
                if "when_to_run" not in cols:
                    changes.append("ADD COLUMN when_to_run BIGINT")
                changes.append("ADD COLUMN id BIGINT AUTO_INCREMENT PRIMARY KEY FIRST")
                # One ALTER: rows are numbered in their clustered order, which for
                # gearmand's table (no primary key) is the order they were inserted.
                await cur.execute(f"ALTER TABLE {t} " + ", ".join(changes))
                await cur.execute(f"SELECT COUNT(*) FROM {t}")
                (n,) = await cur.fetchone()
                logger.warning(
                    "mysql table %s: migrated gearmand queue table (%d jobs) to one key per job",
                    t,
                    n,
                )
            await self._read_limits(cur)
        await conn.commit()

    async def _read_limits(self, cur: Any) -> None:
        """Note what the name, data and when_to_run columns can hold."""
        await cur.execute(
            "SELECT column_name, data_type, column_type, character_maximum_length,"
            " character_octet_length, character_set_name FROM information_schema.columns"
            " WHERE table_schema = DATABASE() AND table_name = %s",
            (self.table,),
        )
        columns: dict[str, Column] = {}
        for name, data_type, column_type, max_chars, max_bytes, charset in await cur.fetchall():
            name, data_type = str(name).lower(), str(data_type).lower()
            if name == "when_to_run" and data_type in _INT_BITS:
                self._when_bits = _INT_BITS[data_type]
                self._when_unsigned = "unsigned" in str(column_type).lower()
            elif name in ("unique_key", "function_name", "data"):
                columns[name] = Column(
                    name,
                    None if max_chars is None else int(max_chars),
                    None if max_bytes is None else int(max_bytes),
                    None if charset is None else str(charset).lower(),
                )
        self._columns = columns

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception as exc:
                logger.debug("mysql close: %s", exc)

    def _row(self, job: StoredJob) -> MysqlRow:
        if self._when_bits < 64 or self._when_unsigned:
            check_when_fits(job.when, self._when_bits, unsigned=self._when_unsigned)
        for name, value, what in (
            ("unique_key", job.unique, "unique"),
            ("function_name", job.function, "function name"),
            ("data", job.data, "data"),
        ):
            column = self._columns.get(name)
            if column is not None:
                column.check(value, what)
        return (job.unique, job.function, int(job.priority), job.data, int(job.when))

    def _backend_failed(self, exc: Exception) -> bool:
        if super()._backend_failed(exc):
            return True
        if isinstance(exc, asyncmy.errors.InterfaceError):
            return True  # the connection is closed or broken
        errno = exc.args[0] if exc.args else None
        return isinstance(errno, int) and (errno in _BACKEND_ERRNOS or 2000 <= errno < 3000)

    async def _probe(self, dones: list[object]) -> None:
        """The batch's deletes, then an INSERT of no row: refused as a real one would be
        (read-only server, no INSERT privilege, missing table), yet it stores nothing."""
        conn = self._conn
        if conn is None:
            raise StoreError("not connected")
        t = self.table
        cols = "unique_key, function_name, priority, data, when_to_run"
        async with conn.cursor() as cur:
            if dones:
                marks = ", ".join(["%s"] * len(dones))
                await cur.execute(f"DELETE FROM {t} WHERE id IN ({marks})", dones)
            await cur.execute(f"INSERT INTO {t} ({cols}) SELECT {cols} FROM {t} WHERE 1 = 0")

    async def _commit(self, rows: list[MysqlRow], dones: list[object]) -> list[object]:
        conn = self._conn
        if conn is None:
            raise StoreError("not connected")
        keys: list[object] = []
        chunks = self._chunks(rows)
        # The connection autocommits, so the common batch (one INSERT, maybe one
        # DELETE) costs one round trip per statement and no COMMIT.  A DELETE that
        # commits while the INSERT then fails is harmless (the dones are retried, the
        # adds refused); several INSERTs get an explicit transaction so that none of a
        # batch's jobs is stored unless all are.  On failure nothing is rolled back
        # here: the recovery loop drops the connection, and the server discards a
        # transaction whose client is gone.
        explicit = len(chunks) > 1
        async with conn.cursor() as cur:
            if explicit:
                await cur.execute("START TRANSACTION")
            try:
                if dones:
                    marks = ", ".join(["%s"] * len(dones))
                    await cur.execute(f"DELETE FROM {self.table} WHERE id IN ({marks})", dones)
                for chunk in chunks:
                    values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(chunk))
                    args = [value for row in chunk for value in row]
                    await cur.execute(
                        f"INSERT INTO {self.table} (unique_key, function_name, priority, data,"
                        f" when_to_run) VALUES {values}",
                        args,
                    )
                    first = int(cur.lastrowid)
                    keys.extend(first + i * self._id_step for i in range(len(chunk)))
                if explicit:
                    await cur.execute("COMMIT")
            except Exception:
                if explicit:
                    # The connection may be used again (to isolate a bad row): the
                    # chunks already inserted must not commit with a later statement.
                    await _rollback_quietly(cur)
                raise
        return keys

    def _chunks(self, rows: list[MysqlRow]) -> list[list[MysqlRow]]:
        if not self._consecutive_ids:
            return [[row] for row in rows]
        chunks: list[list[MysqlRow]] = []
        size = 0
        for row in rows:
            if not chunks or size + len(row[3]) > _STATEMENT_BYTES:
                chunks.append([])
                size = 0
            chunks[-1].append(row)
            size += len(row[3]) + len(row[0]) + len(row[1]) + 32
        return chunks

    async def _replay(self) -> AsyncIterator[StoredJob]:
        conn = self._conn
        if conn is None:
            raise StoreError(f"{self.describe()}: store is not open")
        last = 0
        while True:
            async with conn.cursor() as cur:
                await cur.execute(
                    "SELECT id, unique_key, function_name, priority, data, when_to_run"
                    f" FROM {self.table} WHERE id > %s ORDER BY id LIMIT %s",
                    (last, _REPLAY_CHUNK),
                )
                rows = await cur.fetchall()
            if not rows:
                return
            for row in rows:
                last = int(row[0])
                yield job_from_row((last, *row[1:]))


async def _rollback_quietly(cur: Any) -> None:
    """ROLLBACK; a failure here means the connection is gone, which the caller reports."""
    try:
        await cur.execute("ROLLBACK")
    except Exception as exc:
        logger.debug("mysql rollback: %s", exc)
