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
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncmy

from gearshift.errors import StoreError
from gearshift.store.base import GroupCommitStore, StoredJob
from gearshift.store.sqlite import check_identifier, job_from_row

logger = logging.getLogger(__name__)

#: (unique_key, function_name, priority, data, when_to_run) as sent to MySQL.
MysqlRow = tuple[bytes, bytes, int, bytes, int]

_REPLAY_CHUNK = 1000
_STATEMENT_BYTES = 4 << 20


class MysqlStore(GroupCommitStore[MysqlRow]):
    """Background jobs in a MySQL or MariaDB table.

    Args:
        host, port, user, password, database: where to connect.
        table: table name (gearmand's default is ``gearman_queue``).
        connect_timeout: seconds allowed for connecting.
    """

    name = "mysql"
    commit_timeout = 30.0

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
        await conn.commit()

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception as exc:
                logger.debug("mysql close: %s", exc)

    def _row(self, job: StoredJob) -> MysqlRow:
        return (job.unique, job.function, int(job.priority), job.data, int(job.when))

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
