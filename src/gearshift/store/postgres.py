"""The PostgreSQL store (asyncpg), and gearmand's ``-q Postgres``.

One statement per group commit, so one round trip per batch whatever its size::

    WITH gone AS (DELETE FROM t WHERE id = ANY($6))
    INSERT INTO t (...) SELECT ... FROM unnest($1, $2, $3, $4, $5) ... RETURNING id

A single statement is its own transaction, and asyncpg keeps it prepared.  Rows get
their own ``id BIGSERIAL`` key, so equal or empty uniques never collide; a table
gearmand created (``UNIQUE (unique_key, function_name)``, no id) is migrated on open.
New tables keep names and uniques as ``bytea`` (exact bytes); a gearmand table keeps
its ``varchar`` columns, which then need UTF-8 names and uniques.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import asyncpg

from gearshift.errors import StoreError
from gearshift.store.base import GroupCommitStore, StoredJob
from gearshift.store.sqlite import as_bytes, as_priority, as_when, check_identifier

logger = logging.getLogger(__name__)

#: (unique_key, function_name, priority, data, when_to_run) as sent to PostgreSQL.
PgRow = tuple[bytes | str, bytes | str, int, bytes, int]

_REPLAY_CHUNK = 1000


class PostgresStore(GroupCommitStore[PgRow]):
    """Background jobs in a PostgreSQL table.

    Args:
        dsn: a ``postgresql://`` URL (None: use ``connect_kwargs`` and libpq's
            environment variables).
        connect_kwargs: asyncpg.connect keywords (host, port, user, password, database).
        table: table name (gearmand's default is ``queue``).
        connect_timeout: seconds allowed for connecting.
    """

    name = "postgres"
    commit_timeout = 30.0

    def __init__(
        self,
        dsn: str | None = None,
        *,
        connect_kwargs: Mapping[str, Any] | None = None,
        table: str = "queue",
        connect_timeout: float = 5.0,
    ) -> None:
        super().__init__()
        self.dsn = dsn
        self.connect_kwargs = dict(connect_kwargs or {})
        self.table = check_identifier(table)
        self.connect_timeout = connect_timeout
        self._conn: Any = None
        self._text_names = False
        self._insert_sql = ""

    def describe(self) -> str:
        kw = self.connect_kwargs
        if self.dsn:
            where = self.dsn.split("@")[-1].split("?")[0]
        else:
            where = f"{kw.get('host', '')}:{kw.get('port', '')}/{kw.get('database', '')}"
        return f"postgres:{where} table {self.table}"

    async def _connect(self) -> None:
        await self._disconnect()
        conn = await asyncpg.connect(self.dsn, timeout=self.connect_timeout, **self.connect_kwargs)
        try:
            await self._ensure_table(conn)
        except BaseException:
            await conn.close(timeout=1)
            raise
        self._conn = conn

    async def _ensure_table(self, conn: Any) -> None:
        t = self.table
        cols: dict[str, str] = {
            r["column_name"]: r["data_type"]
            for r in await conn.fetch(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = $1",
                t,
            )
        }
        if not cols:
            # Two servers may race to create it; the loser's IF NOT EXISTS is a no-op.
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {t} (id BIGSERIAL PRIMARY KEY, unique_key BYTEA,"
                " function_name BYTEA, priority INTEGER, data BYTEA, when_to_run BIGINT)"
            )
            cols = {"unique_key": "bytea", "function_name": "bytea", "when_to_run": "bigint"}
        elif "id" not in cols:
            async with conn.transaction():
                await conn.execute(f"LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE")
                uniques = await conn.fetch(
                    "SELECT conname FROM pg_constraint WHERE conrelid = $1::regclass"
                    " AND contype = 'u'",
                    t,
                )
                for r in uniques:
                    await conn.execute(f'ALTER TABLE {t} DROP CONSTRAINT "{r["conname"]}"')
                if "when_to_run" not in cols:
                    await conn.execute(f"ALTER TABLE {t} ADD COLUMN when_to_run BIGINT")
                    cols["when_to_run"] = "bigint"
                # Existing rows are numbered in their physical order, which is the
                # order gearmand inserted them for a queue table that only grows.
                await conn.execute(f"ALTER TABLE {t} ADD COLUMN id BIGSERIAL PRIMARY KEY")
                n = await conn.fetchval(f"SELECT count(*) FROM {t}")
            logger.warning(
                "postgres table %s: migrated gearmand queue table (%d jobs) to one key per job",
                t,
                n,
            )
        self._text_names = cols.get("unique_key") != "bytea"
        name_type = "text" if self._text_names else "bytea"
        when_type = "int" if cols.get("when_to_run") == "integer" else "bigint"
        self._insert_sql = (
            f"WITH gone AS (DELETE FROM {t} WHERE id = ANY($6::bigint[]))"
            f" INSERT INTO {t} (unique_key, function_name, priority, data, when_to_run)"
            " SELECT u, f, p, d, w FROM unnest("
            f"$1::{name_type}[], $2::{name_type}[], $3::int[], $4::bytea[], $5::{when_type}[])"
            " WITH ORDINALITY AS x(u, f, p, d, w, n) ORDER BY n RETURNING id"
        )

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close(timeout=1)
            except Exception as exc:
                logger.debug("postgres close: %s", exc)
                conn.terminate()

    def _name(self, value: bytes, what: str) -> bytes | str:
        if not self._text_names:
            return value
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise StoreError(
                f"{self.describe()}: the {what} is not UTF-8, which this gearmand-style"
                " varchar table cannot hold"
            ) from None

    def _row(self, job: StoredJob) -> PgRow:
        return (
            self._name(job.unique, "unique"),
            self._name(job.function, "function name"),
            int(job.priority),
            job.data,
            int(job.when),
        )

    async def _commit(self, rows: list[PgRow], dones: list[object]) -> list[object]:
        if self._conn is None:
            raise StoreError("not connected")
        cols: list[list[Any]] = [[], [], [], [], []]
        for row in rows:
            for i, value in enumerate(row):
                cols[i].append(value)
        records = await self._conn.fetch(self._insert_sql, *cols, dones)
        return [r[0] for r in records]

    async def _replay(self) -> AsyncIterator[StoredJob]:
        if self._conn is None:
            raise StoreError(f"{self.describe()}: store is not open")
        last = 0
        while True:
            rows = await self._conn.fetch(
                "SELECT id, unique_key, function_name, priority, data, when_to_run"
                f" FROM {self.table} WHERE id > $1 ORDER BY id LIMIT $2",
                last,
                _REPLAY_CHUNK,
            )
            if not rows:
                return
            for row_id, unique, function, priority, data, when in rows:
                last = row_id
                yield StoredJob(
                    function=as_bytes(function),
                    unique=as_bytes(unique),
                    data=as_bytes(data),
                    priority=as_priority(priority),
                    when=as_when(when),
                    key=row_id,
                )


def parse_conninfo(conninfo: str) -> dict[str, Any]:
    """libpq's ``key=value`` conninfo (gearmand's ``--libpq-conninfo``) as asyncpg keywords."""
    out: dict[str, Any] = {}
    names = {"dbname": "database", "host": "host", "port": "port", "user": "user"}
    names["password"] = "password"
    for part in _split_conninfo(conninfo):
        key, _, value = part.partition("=")
        key = key.strip()
        if key in names:
            out[names[key]] = int(value) if key == "port" else value
        elif key == "sslmode":
            out["ssl"] = value
        elif key == "connect_timeout":
            continue
        else:
            logger.warning("libpq-conninfo: ignoring %s", key)
    return out


def _split_conninfo(conninfo: str) -> list[str]:
    # key=value pairs separated by spaces; values may be 'single quoted' with \ escapes.
    parts: list[str] = []
    cur: list[str] = []
    quoted = False
    i = 0
    while i < len(conninfo):
        ch = conninfo[i]
        if ch == "\\" and i + 1 < len(conninfo):
            cur.append(conninfo[i + 1])
            i += 2
            continue
        if ch == "'":
            quoted = not quoted
        elif ch.isspace() and not quoted:
            if cur:
                parts.append("".join(cur))
                cur = []
        else:
            cur.append(ch)
        i += 1
    if cur:
        parts.append("".join(cur))
    # "key = value" with spaces around '=' splits into three parts; glue them back.
    glued: list[str] = []
    for p in parts:
        if glued and (glued[-1].endswith("=") or p.startswith("=")):
            glued[-1] += p
        else:
            glued.append(p)
    return glued
