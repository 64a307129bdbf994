"""The PostgreSQL store (asyncpg), and gearmand's ``-q Postgres``.

One statement per group commit, so one round trip per batch whatever its size::

    WITH gone AS (DELETE FROM t WHERE id = ANY($6))
    INSERT INTO t (...) SELECT ... FROM unnest($1, $2, $3, $4, $5) ... RETURNING id

A single statement is its own transaction, and asyncpg keeps it prepared.  Rows get
their own ``id BIGSERIAL`` key, so equal or empty uniques never collide; a table
gearmand created (``UNIQUE (unique_key, function_name)``, no id) is migrated on open.
New tables keep names and uniques as ``bytea`` (exact bytes); a gearmand table keeps
its ``varchar`` columns, which then need UTF-8 names and uniques without NUL bytes, no
longer than the columns, and its ``when_to_run INTEGER``, which holds epoch times up to
2038 only.  The column types are read at connect and every job is checked against them
before it joins a batch (a value the column refuses would fail the whole batch).

Cluster mode (``ClusterSettings``; gearshift.server.cluster runs the policy): several
servers share the table.  Each row carries ``cluster``, ``owner`` (the node that holds
it) and ``owner_epoch``; a second table ``<table>_members`` holds one lease row per
node: ``epoch`` grows on every (re)join, ``lease_until`` is extended by each heartbeat.
Every time comparison uses the database's ``now()``, so the servers' clocks do not
matter.  The rules that make it safe:

- an add commits only while its node's lease row is valid, read ``FOR SHARE`` in the
  same transaction: a claimer (which locks the dead node's row ``FOR SHARE`` too, and
  its jobs ``FOR UPDATE SKIP LOCKED``) cannot miss a row that is being inserted, and a
  node whose lease ran out cannot add jobs that nobody would claim;
- a heartbeat only extends a lease that has not run out, and only for the current
  epoch; a node that comes back late must rejoin (new epoch) and then holds only the
  rows still marked as its own;
- a partial unique index on (cluster, function, unique) for non-empty uniques makes a
  duplicate add coalesce (``ON CONFLICT DO NOTHING``) onto the job some member holds.

Cluster operations (join, heartbeat, claims, listings) use a second connection, so
they never wait behind a group commit.  Its notifications (LISTEN) wake the others
when a member leaves.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from gearshift.errors import StoreError
from gearshift.records import ClusterSettings, StoredJob
from gearshift.store.base import (
    COALESCED,
    GroupCommitStore,
    check_when_fits,
)
from gearshift.store.rows import check_identifier, job_from_row

logger = logging.getLogger(__name__)

#: (unique_key, function_name, priority, data, when_to_run) as sent to PostgreSQL.
PgRow = tuple[bytes | str, bytes | str, int, bytes, int]

_REPLAY_CHUNK = 1000
#: Jobs taken over from a dead member per transaction.
CLAIM_CHUNK = 2000
#: The LISTEN/NOTIFY channel of every gearshift cluster (payload: cluster, event, node).
CHANNEL = "gearshift_cluster"

_COLUMNS = "id, unique_key, function_name, priority, data, when_to_run"
#: Bits of the integer types a ``when_to_run`` column may have.
_INT_BITS = {"smallint": 16, "integer": 32, "bigint": 64}
#: SQLSTATE classes and codes that say the database is unusable, whatever the rows:
#: connection (08), resources (53), operator intervention (57), system (58), internal
#: (XX); a read-only transaction, no privilege, a table or column gone.
_BACKEND_CLASSES = ("08", "53", "57", "58", "XX")
_BACKEND_STATES = frozenset({"25006", "42501", "42P01", "42703"})


@dataclass(frozen=True, slots=True)
class Member:
    """One node of a cluster as its lease row shows it."""

    node: str
    epoch: int
    address: str
    pid: int
    #: Seconds since the lease was last renewed.
    age: float
    #: Seconds left on the lease (negative: expired that long ago).
    remaining: float
    #: Background jobs the node holds in the store.
    jobs: int


class LeaseLost(StoreError):
    """This node's lease ran out (or a newer incarnation of it joined)."""


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

    def __init__(
        self,
        dsn: str | None = None,
        *,
        connect_kwargs: Mapping[str, Any] | None = None,
        table: str = "queue",
        connect_timeout: float = 5.0,
        cluster: ClusterSettings | None = None,
    ) -> None:
        super().__init__()
        self.dsn = dsn
        self.connect_kwargs = dict(connect_kwargs or {})
        self.table = check_identifier(table)
        self.connect_timeout = connect_timeout
        self.cluster = cluster
        self.members_table = check_identifier(self.table + "_members")
        #: This node's current epoch while it holds its lease; None before joining
        #: and after the lease was lost (adds are refused then).
        self.epoch: int | None = None
        self._conn: Any = None
        self._ctl: Any = None
        self._ctl_lock = asyncio.Lock()
        self._listener: Callable[[str], None] | None = None
        self._listening_on: Any = None
        self._text_names = False
        #: Bits of the when_to_run column (gearmand's is a 32-bit INTEGER).
        self._when_bits = 64
        #: Longest unique / function name (characters) a varchar column takes.
        self._name_limits: dict[str, int | None] = {}
        self._insert_sql = ""
        self._delete_sql = ""

    def describe(self) -> str:
        kw = self.connect_kwargs
        if self.dsn:
            where = self.dsn.split("@")[-1].split("?")[0]
        else:
            where = f"{kw.get('host', '')}:{kw.get('port', '')}/{kw.get('database', '')}"
        text = f"postgres:{where} table {self.table}"
        if self.cluster is not None:
            text += f" cluster {self.cluster.name} node {self.cluster.node}"
        return text

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
        info = await conn.fetch(
            "SELECT column_name, data_type, character_maximum_length"
            " FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = $1",
            t,
        )
        cols: dict[str, str] = {r["column_name"]: r["data_type"] for r in info}
        self._name_limits = {
            r["column_name"]: r["character_maximum_length"]
            for r in info
            if r["column_name"] in ("unique_key", "function_name")
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
        self._when_bits = _INT_BITS.get(cols.get("when_to_run", "bigint"), 64)
        name_type = "text" if self._text_names else "bytea"
        when_type = "int" if cols.get("when_to_run") == "integer" else "bigint"
        if self.cluster is not None:
            await self._ensure_cluster_tables(conn, name_type, when_type)
            return
        self._insert_sql = (
            f"WITH gone AS (DELETE FROM {t} WHERE id = ANY($6::bigint[]))"
            f" INSERT INTO {t} (unique_key, function_name, priority, data, when_to_run)"
            " SELECT u, f, p, d, w FROM unnest("
            f"$1::{name_type}[], $2::{name_type}[], $3::int[], $4::bytea[], $5::{when_type}[])"
            " WITH ORDINALITY AS x(u, f, p, d, w, n) ORDER BY n RETURNING id"
        )

    async def _ensure_cluster_tables(self, conn: Any, name_type: str, when_type: str) -> None:
        t, m = self.table, self.members_table
        async with conn.transaction():
            # Servers starting together would race on CREATE INDEX IF NOT EXISTS.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", t)
            await conn.execute(
                f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS cluster TEXT,"
                " ADD COLUMN IF NOT EXISTS owner TEXT,"
                " ADD COLUMN IF NOT EXISTS owner_epoch BIGINT"
            )
            await conn.execute(
                f"CREATE UNIQUE INDEX IF NOT EXISTS {t}_cluster_unique"
                f" ON {t} (cluster, function_name, unique_key) WHERE {_CLUSTER_UNIQUE}"
            )
            await conn.execute(f"CREATE INDEX IF NOT EXISTS {t}_owner ON {t} (cluster, owner)")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {m} (cluster TEXT NOT NULL, node TEXT NOT NULL,"
                " epoch BIGINT NOT NULL, address TEXT NOT NULL DEFAULT '',"
                " pid INTEGER NOT NULL DEFAULT 0, started TIMESTAMPTZ NOT NULL,"
                " renewed TIMESTAMPTZ NOT NULL, lease_until TIMESTAMPTZ NOT NULL,"
                " PRIMARY KEY (cluster, node))"
            )
        self._delete_sql = f"DELETE FROM {t} WHERE id = ANY($1::bigint[])"
        self._insert_sql = (
            f"INSERT INTO {t} (cluster, owner, owner_epoch, unique_key, function_name,"
            " priority, data, when_to_run)"
            " SELECT $6, $7, $8, u, f, p, d, w FROM unnest("
            f"$1::{name_type}[], $2::{name_type}[], $3::int[], $4::bytea[], $5::{when_type}[])"
            " WITH ORDINALITY AS x(u, f, p, d, w, n) ORDER BY n"
            f" ON CONFLICT (cluster, function_name, unique_key) WHERE {_CLUSTER_UNIQUE}"
            " DO NOTHING RETURNING id, function_name, unique_key"
        )

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        await _close_quietly(conn)

    async def _holds_lease(self, conn: Any, epoch: int) -> bool:
        """Inside a transaction: does this node still hold its lease at ``epoch``?

        The row is locked FOR SHARE, so a takeover cannot slip in before the commit.
        """
        c = self._settings()
        held = await conn.fetchval(
            f"SELECT 1 FROM {self.members_table} WHERE cluster = $1 AND node = $2"
            " AND epoch = $3 AND lease_until > now() FOR SHARE",
            c.name,
            c.node,
            epoch,
        )
        return held is not None

    def _name(self, value: bytes, column: str, what: str) -> bytes | str:
        """``value`` as the column takes it; StoreError if a varchar column cannot."""
        if not self._text_names:
            return value
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            raise StoreError(
                f"the {what} is not UTF-8, which this gearmand-style varchar table cannot hold"
            ) from None
        if "\0" in text:
            raise StoreError(
                f"the {what} holds a NUL byte, which this gearmand-style varchar table cannot hold"
            )
        limit = self._name_limits.get(column)
        if limit is not None and len(text) > limit:
            raise StoreError(
                f"the {what} has {len(text)} characters; this store's {column} column"
                f" takes at most {limit}"
            )
        return text

    def _row(self, job: StoredJob) -> PgRow:
        if self._when_bits < 64:
            check_when_fits(job.when, self._when_bits)
        return (
            self._name(job.unique, "unique_key", "unique"),
            self._name(job.function, "function_name", "function name"),
            int(job.priority),
            job.data,
            int(job.when),
        )

    def _backend_failed(self, exc: Exception) -> bool:
        if super()._backend_failed(exc):
            return True
        if isinstance(exc, (asyncpg.InterfaceError, asyncpg.PostgresConnectionError)):
            return True
        state = getattr(exc, "sqlstate", None)
        if not isinstance(state, str):
            return False
        return state in _BACKEND_STATES or state.startswith(_BACKEND_CLASSES)

    async def _commit(self, rows: list[PgRow], dones: list[object]) -> list[object]:
        if self._conn is None:
            raise StoreError("not connected")
        cols: list[list[Any]] = [[], [], [], [], []]
        for row in rows:
            for i, value in enumerate(row):
                cols[i].append(value)
        if self.cluster is not None:
            return await self._cluster_commit(rows, cols, dones)
        records = await self._conn.fetch(self._insert_sql, *cols, dones)
        return [r[0] for r in records]

    async def _cluster_commit(
        self, rows: list[PgRow], cols: list[list[Any]], dones: list[object]
    ) -> list[object]:
        assert self.cluster is not None
        conn = self._conn
        epoch = self.epoch
        out: list[object] = []
        async with conn.transaction():
            if dones:
                # Finished jobs are deleted whoever holds them now: never fenced.
                await conn.execute(self._delete_sql, dones)
            if not rows:
                return out
            if epoch is None or not await self._holds_lease(conn, epoch):
                err = LeaseLost(
                    f"{self.describe()}: job not stored: this server's cluster lease has run"
                    " out (it rejoins by itself)"
                )
                return [err] * len(rows)
            records = await conn.fetch(
                self._insert_sql, *cols, self.cluster.name, self.cluster.node, epoch
            )
        # RETURNING keeps the insert order; a row that is missing coalesced.
        i = 0
        for unique, function, *_ in rows:
            if i < len(records) and (records[i][2], records[i][1]) == (unique, function):
                out.append(records[i][0])
                i += 1
            else:
                out.append(COALESCED)
        return out

    async def _replay(self) -> AsyncIterator[StoredJob]:
        if self._conn is None:
            raise StoreError(f"{self.describe()}: store is not open")
        last = 0
        extra: tuple[str, ...] = ()
        if self.cluster is None:
            where = ""
        else:
            # A member replays only the rows it holds; the others are theirs.
            where, extra = (
                " AND cluster = $3 AND owner = $4",
                (self.cluster.name, self.cluster.node),
            )
        while True:
            rows = await self._conn.fetch(
                f"SELECT {_COLUMNS} FROM {self.table} WHERE id > $1{where} ORDER BY id LIMIT $2",
                last,
                _REPLAY_CHUNK,
                *extra,
            )
            if not rows:
                return
            for row in rows:
                last = row[0]
                yield job_from_row(row)

    # -- cluster --------------------------------------------------------------------

    def _settings(self) -> ClusterSettings:
        if self.cluster is None:
            raise StoreError(f"{self.describe()}: not a cluster store")
        return self.cluster

    async def _ctl_call(self, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn(connection)`` on the cluster connection, (re)connecting it first."""
        async with self._ctl_lock:
            if self._ctl is None or self._ctl.is_closed():
                self._ctl = None
                ctl = await asyncpg.connect(
                    self.dsn, timeout=self.connect_timeout, **self.connect_kwargs
                )
                self._ctl = ctl
                if self._listener is not None:
                    try:
                        await ctl.add_listener(CHANNEL, self._on_notify)
                    except BaseException:
                        await self._drop_ctl()
                        raise
                    self._listening_on = ctl
            # A hung database must not stall the heartbeat loop for ever.
            limit = max(self.cluster.lease, 5.0) if self.cluster is not None else 30.0
            try:
                async with asyncio.timeout(limit):
                    return await fn(self._ctl)
            except (
                OSError,
                TimeoutError,
                asyncpg.InterfaceError,
                asyncpg.PostgresConnectionError,
            ):
                await self._drop_ctl()
                raise

    async def _drop_ctl(self) -> None:
        ctl, self._ctl = self._ctl, None
        await _close_quietly(ctl)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        cluster, _, rest = payload.partition("|")
        if self.cluster is not None and cluster == self.cluster.name and self._listener:
            self._listener(rest)

    async def listen(self, callback: Callable[[str], None]) -> None:
        """Call ``callback("event|node")`` for every notification of this cluster."""
        self._listener = callback

        async def run(conn: Any) -> None:
            # A connection made from now on listens by itself (see _ctl_call).
            if conn is not self._listening_on:
                await conn.add_listener(CHANNEL, self._on_notify)
                self._listening_on = conn

        await self._ctl_call(run)

    async def _notify(self, conn: Any, event: str) -> None:
        c = self._settings()
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"{c.name}|{event}|{c.node}")

    async def join(self, address: str = "") -> int:
        """Take (or renew) this node's lease under a new epoch; return the epoch."""
        c = self._settings()

        async def run(conn: Any) -> int:
            epoch: int = await conn.fetchval(
                f"INSERT INTO {self.members_table} AS m (cluster, node, epoch, address, pid,"
                " started, renewed, lease_until) VALUES ($1, $2, 1, $3, $4, now(), now(),"
                " now() + make_interval(secs => $5)) ON CONFLICT (cluster, node) DO UPDATE"
                " SET epoch = m.epoch + 1, address = $3, pid = $4, started = now(),"
                " renewed = now(), lease_until = now() + make_interval(secs => $5)"
                " RETURNING epoch",
                c.name,
                c.node,
                address,
                os.getpid(),
                c.lease,
            )
            await self._notify(conn, "join")
            return epoch

        epoch: int = await self._ctl_call(run)
        self.epoch = epoch
        return epoch

    async def renew(self) -> bool:
        """Extend the lease; False when it had already run out (or a newer epoch joined)."""
        c = self._settings()
        epoch = self.epoch
        if epoch is None:
            return False
        row = await self._ctl_call(
            lambda conn: conn.fetchval(
                f"UPDATE {self.members_table} SET renewed = now(),"
                " lease_until = now() + make_interval(secs => $4)"
                " WHERE cluster = $1 AND node = $2 AND epoch = $3 AND lease_until > now()"
                " RETURNING 1",
                c.name,
                c.node,
                epoch,
                c.lease,
            )
        )
        if row is None:
            self.epoch = None
            return False
        return True

    async def set_address(self, address: str) -> None:
        """Record where this node listens (shown by ``cluster``)."""
        c = self._settings()
        await self._ctl_call(
            lambda conn: conn.execute(
                f"UPDATE {self.members_table} SET address = $3 WHERE cluster = $1 AND node = $2",
                c.name,
                c.node,
                address,
            )
        )

    async def leave(self) -> None:
        """End this node's lease now, so the others take over what it still holds."""
        c = self._settings()
        epoch, self.epoch = self.epoch, None
        if epoch is None:
            return

        async def run(conn: Any) -> None:
            await conn.execute(
                f"UPDATE {self.members_table} SET lease_until = now() - interval '1 second'"
                " WHERE cluster = $1 AND node = $2 AND epoch = $3",
                c.name,
                c.node,
                epoch,
            )
            await self._notify(conn, "leave")

        await self._ctl_call(run)

    def lose_lease(self) -> None:
        """This node no longer holds its lease (its deadline passed): refuse adds."""
        self.epoch = None

    async def members(self) -> list[Member]:
        """Every node of the cluster with its lease and the number of jobs it holds."""
        c = self._settings()
        rows = await self._ctl_call(
            lambda conn: conn.fetch(
                "SELECT node, epoch, address, pid,"
                " extract(epoch FROM now() - renewed)::float8,"
                " extract(epoch FROM lease_until - now())::float8,"
                f" (SELECT count(*) FROM {self.table} t"
                "   WHERE t.cluster = m.cluster AND t.owner = m.node)"
                f" FROM {self.members_table} m WHERE cluster = $1 ORDER BY node",
                c.name,
            )
        )
        return [Member(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]

    async def expired(self) -> tuple[list[str], float | None]:
        """(members whose lease ran out and that still hold jobs, seconds to the next expiry)."""
        c = self._settings()
        rows = await self._ctl_call(
            lambda conn: conn.fetch(
                "SELECT node, extract(epoch FROM lease_until - now())::float8,"
                f" EXISTS (SELECT 1 FROM {self.table} t"
                "   WHERE t.cluster = m.cluster AND t.owner = m.node)"
                f" FROM {self.members_table} m WHERE cluster = $1 AND node <> $2",
                c.name,
                c.node,
            )
        )
        dead = [r[0] for r in rows if r[1] <= 0 and r[2]]
        ahead = [r[1] for r in rows if r[1] > 0]
        return dead, (min(ahead) if ahead else None)

    async def claim(self, node: str, limit: int = CLAIM_CHUNK) -> list[StoredJob]:
        """Take over up to ``limit`` jobs of ``node`` if its lease has run out.

        Each job goes to exactly one claimant (``FOR UPDATE SKIP LOCKED``).  Returns
        the jobs now held by this node, oldest first; empty when ``node`` is alive again
        or holds nothing more.

        Raises:
            LeaseLost: this node's own lease has run out.
        """
        c = self._settings()
        epoch = self.epoch
        if epoch is None:
            raise LeaseLost(f"{self.describe()}: not holding a lease")
        t, m = self.table, self.members_table

        async def run(conn: Any) -> list[Any]:
            async with conn.transaction():
                if not await self._holds_lease(conn, epoch):
                    raise LeaseLost(f"{self.describe()}: lease ran out")
                dead = await conn.fetchval(
                    f"SELECT 1 FROM {m} WHERE cluster = $1 AND node = $2"
                    " AND lease_until <= now() FOR SHARE",
                    c.name,
                    node,
                )
                if dead is None:
                    return []
                rows: list[Any] = await conn.fetch(
                    f"UPDATE {t} SET owner = $2, owner_epoch = $3 WHERE id IN"
                    f" (SELECT id FROM {t} WHERE cluster = $1 AND owner = $4 ORDER BY id"
                    f" LIMIT $5 FOR UPDATE SKIP LOCKED) RETURNING {_COLUMNS}",
                    c.name,
                    c.node,
                    epoch,
                    node,
                    limit,
                )
                return rows

        try:
            rows = await self._ctl_call(run)
        except LeaseLost:
            self.epoch = None
            raise
        return [job_from_row(r) for r in sorted(rows, key=lambda r: int(r[0]))]

    async def own_jobs(self, after: int, limit: int) -> list[StoredJob]:
        """Jobs this node holds with a key above ``after``, oldest first (after a rejoin)."""
        c = self._settings()
        rows = await self._ctl_call(
            lambda conn: conn.fetch(
                f"SELECT {_COLUMNS} FROM {self.table} WHERE cluster = $1 AND owner = $2"
                " AND id > $3 ORDER BY id LIMIT $4",
                c.name,
                c.node,
                after,
                limit,
            )
        )
        return [job_from_row(r) for r in rows]

    async def list_jobs(self, limit: int) -> list[StoredJob]:
        """At most ``limit`` stored jobs, oldest first (all members' jobs in a cluster)."""
        if self.cluster is None:
            return await super().list_jobs(limit)
        if limit <= 0:
            return []
        rows = await self._ctl_call(
            lambda conn: conn.fetch(
                f"SELECT {_COLUMNS} FROM {self.table} WHERE cluster = $1 ORDER BY id LIMIT $2",
                self._settings().name,
                limit,
            )
        )
        return [job_from_row(r) for r in rows]

    async def open(self) -> None:
        """Connect and create the tables; in a cluster, also join it (take the lease).

        Joining comes before ``replay``: a member still claiming this node's jobs
        holds its lease row, so the join waits for that claim to commit and the replay
        then sees exactly the rows left to this node.
        """
        await super().open()
        if self.cluster is not None:
            try:
                epoch = await self.join()
            except StoreError:
                raise
            except Exception as exc:
                raise StoreError(f"{self.describe()}: cannot join the cluster: {exc}") from exc
            logger.info(
                "cluster %s: node %s joined (epoch %d)", self.cluster.name, self.cluster.node, epoch
            )

    async def close(self) -> None:
        """Flush, then drop both connections."""
        await super().close()
        async with self._ctl_lock:
            await self._drop_ctl()


_CLUSTER_UNIQUE = "cluster IS NOT NULL AND octet_length(unique_key) > 0 AND unique_key <> '-'"


async def _close_quietly(conn: Any) -> None:
    """Close an asyncpg connection (None is fine); terminate it if closing fails."""
    if conn is None:
        return
    try:
        await conn.close(timeout=1)
    except Exception as exc:
        logger.debug("postgres close: %s", exc)
        conn.terminate()


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
