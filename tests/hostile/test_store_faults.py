"""Stores that fail under a running server: deleted, replaced, read-only, cut off.

Whatever the fault, the outcome must be one of two: one clear error at start, or
ERROR QUEUE_ERROR (with a text that says why) at run time.  Never an acknowledged
job that was not stored, and never a job lost that was acknowledged.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gearshift.protocol.packets import PacketType
from gearshift.store import open_store
from gearshift.testing import serve
from tests.procs import Gearshift
from tests.server.helpers import Raw, wait_for
from tests.store.conftest import (
    MYSQL_URL,
    NETWORK_BACKENDS,
    PG_URL,
    REDIS_URL,
    Backend,
    _backend_fixture,
    make_backend,
)
from tests.store.proxy import TcpProxy
from tests.store.rawclient import grab_uniq

T = PacketType
SETPRIV = shutil.which("setpriv")
#: Capabilities that let root ignore file modes; without them root is bound by them.
_NO_DAC = "-dac_override,-dac_read_search"

needs_root_and_setpriv = pytest.mark.skipif(
    os.geteuid() != 0 or SETPRIV is None,
    reason="needs root and setpriv(1) to run a server that file modes bind",
)


async def submit(raw: Raw, function: bytes, data: bytes) -> tuple[int, tuple[bytes, ...]]:
    """One background submit; (reply type, reply args)."""
    return await raw.call(T.SUBMIT_JOB_BG, function, b"", data)


async def submit_until_created(raw: Raw, function: bytes, data: bytes, within: float) -> int:
    """Submit until the store takes it; return how many attempts were refused."""
    deadline = time.monotonic() + within
    refused = 0
    while True:
        ptype, args = await submit(raw, function, data)
        if ptype == T.JOB_CREATED:
            return refused
        assert ptype == T.ERROR and args[0] == b"QUEUE_ERROR", args
        refused += 1
        assert time.monotonic() < deadline, f"store did not recover: {args}"
        await asyncio.sleep(0.1)


def rows(path: Path, table: str = "gearman_queue") -> list[bytes]:
    """The payloads in a SQLite queue file, oldest first."""
    with sqlite3.connect(path) as db:
        found = [r[0] for r in db.execute(f"SELECT data FROM {table} ORDER BY id")]
    db.close()
    return found


def run_server(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``gearshift server`` that is expected to stop at start."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "gearshift", "server", "-p", "0", "-L", "127.0.0.1"]
        + ["-l", "none", *args],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


# -- SQLite: the file is deleted or replaced under the server --------------------------


@pytest.mark.timeout(60)
async def test_deleted_sqlite_directory_is_refused_then_held_jobs_written_again(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "queue"
    folder.mkdir()
    db = folder / "q.db"
    srv = Gearshift(["--queue", f"sqlite:///{db}"])
    await asyncio.to_thread(srv.start)
    try:
        client = await Raw.connect(srv.address)
        acked = [b"job%d" % i for i in range(20)]
        for data in acked:
            assert (await submit(client, b"work", data))[0] == T.JOB_CREATED
        later = str(int(time.time()) + 3600).encode()
        ptype, _ = await client.call(T.SUBMIT_JOB_EPOCH, b"later", b"ep", later, b"epoch")
        assert ptype == T.JOB_CREATED
        # One job is running when the folder goes away; it finishes during the outage.
        worker = await Raw.connect(srv.address)
        worker.send(T.CAN_DO, b"work")
        worker.send(T.GRAB_JOB)
        handle, _, running = await worker.expect(T.JOB_ASSIGN)

        shutil.rmtree(folder)
        ptype, args = await submit(client, b"work", b"refused")
        assert ptype == T.ERROR and args[0] == b"QUEUE_ERROR"
        assert f"database file {db} was deleted or replaced".encode() in args[1], args
        ptype, args = await submit(client, b"work", b"refused again")
        assert ptype == T.ERROR and b"was deleted or replaced" in args[1], args
        worker.send(T.WORK_COMPLETE, handle, b"")
        assert (await worker.call(T.ECHO_REQ, b"sync"))[0] == T.ECHO_RES

        folder.mkdir()
        await submit_until_created(client, b"work", b"after", within=10)
        log = srv.log_text()
        assert "was deleted or replaced" in log and "wrote again the 20 jobs" in log
        await client.close()
        await worker.close()

        await asyncio.to_thread(srv.kill)  # no clean shutdown: the file alone counts
        expected = set(acked) - {running} | {b"epoch", b"after"}
        assert sorted(rows(db)) == sorted(expected)
        await asyncio.to_thread(srv.start)
        replayed = {data for _, data in await grab_uniq(srv.port, b"work", 100)}
        assert replayed == expected - {b"epoch"}
    finally:
        await asyncio.to_thread(srv.close)


@pytest.mark.timeout(60)
async def test_replaced_sqlite_file_is_refused_then_held_jobs_written_again(
    tmp_path: Path,
) -> None:
    db = tmp_path / "q.db"
    srv = Gearshift(["--queue", f"sqlite:///{db}"])
    await asyncio.to_thread(srv.start)
    try:
        client = await Raw.connect(srv.address)
        acked = [b"job%d" % i for i in range(10)]
        for data in acked:
            assert (await submit(client, b"work", data))[0] == T.JOB_CREATED
        other = tmp_path / "other.db"
        with sqlite3.connect(other) as conn:
            conn.execute("CREATE TABLE unrelated (x INTEGER)")
        conn.close()
        os.replace(other, db)

        ptype, args = await submit(client, b"work", b"refused")
        assert ptype == T.ERROR and args[0] == b"QUEUE_ERROR"
        assert f"database file {db} was deleted or replaced".encode() in args[1], args
        await submit_until_created(client, b"work", b"after", within=10)
        await client.close()
        await asyncio.to_thread(srv.kill)
        assert sorted(rows(db)) == sorted([*acked, b"after"])
        # The lost file's WAL was not replayed into the new file: its own table is there.
        with sqlite3.connect(db) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        conn.close()
        assert {"unrelated", "gearman_queue"} <= tables
    finally:
        await asyncio.to_thread(srv.close)


async def test_sqlite_file_deleted_while_idle_is_rewritten_at_shutdown(tmp_path: Path) -> None:
    """No commit noticed the loss; the clean shutdown does, and saves the held jobs."""
    db = tmp_path / "q.db"
    async with serve(queue_type=f"sqlite:///{db}") as srv:
        client = await Raw.connect(srv.address)
        for data in (b"one", b"two", b"three"):
            assert (await submit(client, b"work", data))[0] == T.JOB_CREATED
        await client.close()
        db.unlink()
    assert rows(db) == [b"one", b"two", b"three"]


async def test_sqlite_folder_deleted_while_idle_is_reported_at_shutdown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "queue"
    folder.mkdir()
    async with serve(queue_type=f"sqlite:///{folder / 'q.db'}") as srv:
        client = await Raw.connect(srv.address)
        for data in (b"one", b"two"):
            assert (await submit(client, b"work", data))[0] == T.JOB_CREATED
        await client.close()
        shutil.rmtree(folder)
    assert "2 acknowledged jobs will be missing at the next start" in caplog.text


# -- stores that cannot be written ----------------------------------------------------


class Unprivileged(Gearshift):
    """gearshift as root without the capabilities that let root ignore file modes."""

    def argv(self) -> list[str]:
        assert SETPRIV is not None
        return [SETPRIV, f"--bounding-set={_NO_DAC}", f"--inh-caps={_NO_DAC}", "--"] + (
            super().argv()
        )


@needs_root_and_setpriv
@pytest.mark.timeout(60)
async def test_read_only_sqlite_file_gives_queue_error(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    store = open_store(f"sqlite:///{db}")
    await store.open()
    await store.close()
    db.chmod(0o444)
    srv = Unprivileged(["--queue", f"sqlite:///{db}"])
    await asyncio.to_thread(srv.start)
    try:
        client = await Raw.connect(srv.address)
        for data in (b"first", b"second"):
            ptype, args = await submit(client, b"work", data)
            assert ptype == T.ERROR and args[0] == b"QUEUE_ERROR", args
            assert b"readonly database" in args[1], args
        await asyncio.sleep(0.5)  # recovery tries again: it must not claim success
        ptype, args = await submit(client, b"work", b"third")
        assert ptype == T.ERROR and b"readonly database" in args[1], args
        await client.close()
        assert srv.log_text().count("recovered after") == 0
    finally:
        await asyncio.to_thread(srv.close)
    assert rows(db) == []


@needs_root_and_setpriv
def test_sqlite_file_that_cannot_be_created_stops_the_start(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    assert SETPRIV is not None
    done = run_server(
        "--queue",
        f"sqlite:///{folder / 'q.db'}",
        prefix=(SETPRIV, f"--bounding-set={_NO_DAC}", f"--inh-caps={_NO_DAC}", "--"),
    )
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot open" in lines[0] and "q.db" in lines[0], lines


@pytest.fixture
async def pg_table(tmp_path: Path) -> AsyncIterator[Backend]:
    backend = make_backend("postgres", tmp_path)
    yield backend
    for store in backend.opened:
        await store.close()
    await backend.drop()


@pytest.mark.postgres
async def test_read_only_postgres_session(pg_table: Backend) -> None:
    await (await pg_table.open()).close()  # the table exists
    url = pg_table.url + "&default_transaction_read_only=on"
    async with serve(queue_type=url) as srv:
        client = await Raw.connect(srv.address)
        for data in (b"first", b"second"):
            ptype, args = await submit(client, b"work", data)
            assert ptype == T.ERROR and args[0] == b"QUEUE_ERROR", args
            assert b"read-only transaction" in args[1], args
        await client.close()
    store = await pg_table.open()
    assert [j async for j in store.replay()] == []


@pytest.mark.postgres
def test_read_only_postgres_session_without_table_stops_the_start(tmp_path: Path) -> None:
    table = f"gs_{uuid.uuid4().hex[:12]}"
    done = run_server("--queue", f"{PG_URL}?table={table}&default_transaction_read_only=on")
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot open" in lines[0] and "read-only" in lines[0], lines


async def _mysql(*statements: str) -> None:
    import asyncmy

    conn = await asyncmy.connect(host="127.0.0.1", port=3306, user="root", database="test")
    try:
        async with conn.cursor() as cur:
            for sql in statements:
                await cur.execute(sql)
    finally:
        conn.close()


@pytest.mark.mysql
async def test_mariadb_user_that_may_only_select(tmp_path: Path) -> None:
    backend = make_backend("mysql", tmp_path)
    user = backend.name
    await (await backend.open()).close()  # the table exists, created by root
    await _mysql(
        f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'",
        f"GRANT SELECT ON test.{backend.name} TO '{user}'@'%'",
    )
    try:
        url = f"mysql://{user}:pw@127.0.0.1:3306/test?table={backend.name}"
        async with serve(queue_type=url) as srv:
            client = await Raw.connect(srv.address)
            for data in (b"first", b"second"):
                ptype, args = await submit(client, b"work", data)
                assert ptype == T.ERROR and args[0] == b"QUEUE_ERROR", args
                assert b"INSERT command denied" in args[1], args
            await client.close()
        # Without the table, the start stops: the user may not create it.
        done = run_server("--queue", f"mysql://{user}:pw@127.0.0.1:3306/test?table={user}_x")
        assert done.returncode == 1, done
        assert "cannot open" in done.stderr and "CREATE command denied" in done.stderr
        store = await backend.open(f"{MYSQL_URL}?table={backend.name}")
        assert [j async for j in store.replay()] == []
    finally:
        await _mysql(f"DROP USER IF EXISTS '{user}'@'%'")
        for store in backend.opened:
            await store.close()
        await backend.drop()


@pytest.mark.redis
async def test_redis_user_without_write_commands(tmp_path: Path) -> None:
    import redis.asyncio as aioredis

    backend = make_backend("redis", tmp_path)
    user = backend.name
    admin = aioredis.Redis.from_url(REDIS_URL)
    await admin.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", "-@write")
    try:
        url = f"redis://{user}:pw@127.0.0.1:6379/0?prefix={backend.name}"
        async with serve(queue_type=url) as srv:
            client = await Raw.connect(srv.address)
            for data in (b"first", b"second"):
                ptype, args = await submit(client, b"work", data)
                assert ptype == T.ERROR and args[0] == b"QUEUE_ERROR", args
                assert b"can't run this command" in args[1], args
            await client.close()
        assert [k async for k in admin.scan_iter(match=f"{backend.name}*")] == []
    finally:
        await admin.execute_command("ACL", "DELUSER", user)
        await admin.aclose()
        await backend.drop()


# -- the database goes away during pipelined submits through the server -------------


@pytest.fixture(params=NETWORK_BACKENDS)
async def network_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async for b in _backend_fixture(request.param, tmp_path):
        yield b


@pytest.mark.timeout(60)
async def test_database_cut_during_pipelined_submits(network_backend: Backend) -> None:
    """tests/store/test_faults.py cuts under the store alone; here under a server whose
    clients pipeline: every JOB_CREATED must be in the store afterwards."""
    proxy = await TcpProxy(network_backend.port).start()
    acked: list[bytes] = []
    refused: list[bytes] = []
    try:
        async with serve(queue_type=network_backend.url_via(proxy.port)) as srv:
            stop = asyncio.Event()

            async def client(n: int) -> None:
                raw = await Raw.connect(srv.address)
                sent = 0
                while not stop.is_set():
                    window = [b"%d-%d" % (n, sent + k) for k in range(16)]
                    sent += len(window)
                    for data in window:
                        raw.send(T.SUBMIT_JOB_BG, b"work", b"", data)
                    for data in window:
                        ptype, args = await raw.recv()
                        if ptype == T.JOB_CREATED:
                            acked.append(data)
                        else:
                            assert args[0] == b"QUEUE_ERROR", args
                            assert network_backend.kind.encode() in args[1], args
                            refused.append(data)
                await raw.close()

            async def chaos() -> None:
                await asyncio.sleep(0.3)
                await proxy.cut()
                await asyncio.sleep(0.5)
                await proxy.restore()
                await asyncio.sleep(1.2)
                stop.set()

            await asyncio.gather(*(client(n) for n in range(4)), chaos())
            await wait_for(lambda: not srv.server.store.is_down, within=10)
    finally:
        await proxy.close()
    assert acked and refused
    store = await network_backend.open()
    stored = {j.data async for j in store.replay()}
    missing = set(acked) - stored
    assert not missing, f"{len(missing)} acknowledged jobs lost"
    # A refused job may still be stored (its commit's answer was lost), never the reverse.
    assert stored <= set(acked) | set(refused)
