"""Queues written by the real C++ gearmand are replayed by gearshift (migration path)."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gearshift.protocol.packets import PacketType, Priority
from gearshift.store import StoredJob, open_store
from tests.procs import ServerProcess, have_gearmand
from tests.store.conftest import NETWORK_BACKENDS, Backend, make_backend
from tests.store.rawclient import grab_uniq, submit_bg_sync

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not have_gearmand(), reason="needs /usr/sbin/gearmand"),
]

JobTuple = tuple[bytes, bytes, bytes, Priority, int]

EPOCH = 2_000_000_000  # 2033: in the future, and fits gearmand's 32-bit INTEGER column


def gearman_cli(port: int, *args: str) -> None:
    subprocess.run(
        ["gearman", "-p", str(port), "-b", *args], check=True, timeout=20, capture_output=True
    )


def fill_gearmand(srv: ServerProcess, *, epoch: bool = True) -> list[JobTuple]:
    """Submit background jobs through gearmand's own CLI and the raw protocol."""
    gearman_cli(srv.port, "-f", "resize-img", "-u", "img1", "normal payload")
    gearman_cli(srv.port, "-f", "resize-img", "-u", "img2", "-I", "high payload")
    gearman_cli(srv.port, "-f", "mail", "-u", "m1", "-L", "low payload")
    submit_bg_sync(srv.port, b"raw", b"", b"empty 1", ptype=PacketType.SUBMIT_JOB_BG)
    expected = [
        (b"resize-img", b"img1", b"normal payload", Priority.NORMAL, 0),
        (b"resize-img", b"img2", b"high payload", Priority.HIGH, 0),
        (b"mail", b"m1", b"low payload", Priority.LOW, 0),
        (b"raw", b"", b"empty 1", Priority.NORMAL, 0),
    ]
    if epoch:
        submit_bg_sync(
            srv.port,
            b"later",
            b"ep",
            b"epoch payload",
            ptype=PacketType.SUBMIT_JOB_EPOCH,
            epoch=EPOCH,
        )
        expected.append((b"later", b"ep", b"epoch payload", Priority.NORMAL, EPOCH))
    return expected


def gearadmin_status(port: int) -> str:
    return subprocess.run(
        ["gearadmin", "-p", str(port), "--status"], capture_output=True, text=True, timeout=10
    ).stdout


def as_tuple(job: StoredJob) -> JobTuple:
    return (job.function, job.unique, job.data, job.priority, job.when)


async def test_gearmand_sqlite_file_is_replayed_and_still_readable_by_gearmand(
    make_gearmand: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    db = tmp_path / "gearmand-queue.db"
    args = ("-q", "libsqlite3", "--libsqlite3-db", str(db))
    srv = make_gearmand(*args)
    expected = fill_gearmand(srv)
    assert srv.stop() == 0

    store = open_store("libsqlite3", {"libsqlite3-db": str(db)})
    await store.open()
    replayed = [job async for job in store.replay()]
    assert [as_tuple(j) for j in replayed] == expected
    # gearmand would overwrite the first empty-unique job with this one; not here.
    await store.add(StoredJob(b"raw", b"", b"empty 2"))
    await store.add(StoredJob(b"raw", b"", b"empty 3"))
    await store.done(replayed[0])
    await store.close()

    # gearmand still reads the migrated table (its statements name the columns).
    srv = make_gearmand(*args)
    out = gearadmin_status(srv.port)
    queued = {
        line.split("\t")[0]: int(line.split("\t")[1]) for line in out.splitlines() if "\t" in line
    }
    assert queued["raw"] == 3
    assert queued["resize-img"] == 1
    srv.stop()


@pytest.fixture(params=NETWORK_BACKENDS)
async def gearmand_backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Backend]:
    backend = make_backend(request.param, tmp_path)
    yield backend
    for store in backend.opened:
        await store.close()
    await backend.drop()


def gearmand_queue_args(backend: Backend) -> tuple[str, dict[str, str]]:
    if backend.kind == "postgres":
        opts = {
            "libpq-conninfo": "host=127.0.0.1 port=5432 dbname=test user=postgres",
            "libpq-table": backend.name,
        }
        return "Postgres", opts
    if backend.kind == "mysql":
        opts = {
            "mysql-host": "127.0.0.1",
            "mysql-user": "root",
            "mysql-db": "test",
            "mysql-table": backend.name,
        }
        return "MySQL", opts
    opts = {"redis-server": "127.0.0.1", "redis-port": "6379", "redis-prefix": backend.name}
    return "redis", opts


async def test_gearmand_database_queue_is_replayed(
    make_gearmand: Callable[..., ServerProcess], gearmand_backend: Backend
) -> None:
    backend = gearmand_backend
    qtype, opts = gearmand_queue_args(backend)
    flags = [x for k, v in opts.items() for x in (f"--{k}", v)]
    srv = make_gearmand("-q", qtype, *flags)
    # gearmand's redis queue refuses epoch jobs.
    expected = fill_gearmand(srv, epoch=backend.kind != "redis")
    assert srv.stop() == 0

    store = open_store(qtype, opts)
    await store.open()
    backend.opened.append(store)
    replayed = [job async for job in store.replay()]
    if backend.kind == "redis":  # a key scan has no order
        assert sorted(as_tuple(j) for j in replayed) == sorted(expected)
    else:
        assert [as_tuple(j) for j in replayed] == expected
    # Empty uniques no longer collide, and finished gearmand jobs are deleted.
    await store.add(StoredJob(b"raw", b"", b"empty 2"))
    await store.add(StoredJob(b"raw", b"", b"empty 3"))
    for job in replayed:
        await store.done(job)
    await store.close()

    store = open_store(qtype, opts)
    await store.open()
    backend.opened.append(store)
    assert [j.data async for j in store.replay()] == [b"empty 2", b"empty 3"]


async def test_gearshift_server_takes_over_a_gearmand_sqlite_queue(
    make_gearmand: Callable[..., ServerProcess],
    make_gearshift: Callable[..., ServerProcess],
    tmp_path: Path,
) -> None:
    db = tmp_path / "gearmand-queue.db"
    args = ("-q", "libsqlite3", "--libsqlite3-db", str(db))
    srv = make_gearmand(*args)
    fill_gearmand(srv)
    assert srv.stop() == 0

    # Same command line, other server: the jobs are there and run in priority order.
    gs = make_gearshift(*args)
    got = await grab_uniq(gs.port, b"resize-img", 10)
    assert got == [(b"img2", b"high payload"), (b"img1", b"normal payload")]
    assert await grab_uniq(gs.port, b"mail", 10) == [(b"m1", b"low payload")]
    assert await grab_uniq(gs.port, b"raw", 10) == [(b"", b"empty 1")]
    assert await grab_uniq(gs.port, b"later", 10) == []  # its epoch has not come
    assert gs.stop() == 0
    with sqlite3.connect(db) as conn:
        left = conn.execute("SELECT function_name, when_to_run FROM gearman_queue").fetchall()
    assert left == [("later", EPOCH)]
