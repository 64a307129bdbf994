"""Faults at run time: the database goes away and comes back; nothing acknowledged is lost."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gearshift.errors import StoreError
from gearshift.store import GroupCommitStore, Store, StoredJob
from gearshift.store.sqlite import SqliteStore
from tests.store.conftest import Backend, make_backend
from tests.store.proxy import TcpProxy


async def add_until_accepted(store: Store, job: StoredJob, within: float) -> int:
    """Retry ``add`` until the store is back; return how many attempts were refused."""
    refused = 0
    deadline = time.monotonic() + within
    while True:
        try:
            await store.add(job)
            return refused
        except StoreError:
            refused += 1
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_connection_cut_then_recovery(
    network_backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gearshift.store")
    proxy = await TcpProxy(network_backend.port).start()
    try:
        store = await network_backend.open(network_backend.url_via(proxy.port))
        assert isinstance(store, GroupCommitStore)
        acked = [StoredJob(b"f", b"", b"before%d" % i) for i in range(20)]
        await asyncio.gather(*(store.add(j) for j in acked))
        finished = acked[:5]

        await proxy.cut()
        # The first add after the cut finds the broken connection; later ones are
        # refused at once while the store is down.
        for i in range(3):
            with pytest.raises(StoreError) as err:
                await store.add(StoredJob(b"f", b"", b"refused%d" % i))
            assert network_backend.kind in str(err.value)
        assert store.is_down
        assert any("failed" in r.getMessage() for r in caplog.records)
        # Jobs that finish while the store is down are deleted once it is back.
        for job in finished:
            await store.done(job)

        await proxy.restore()
        late = StoredJob(b"f", b"", b"after")
        await add_until_accepted(store, late, within=30)
        assert not store.is_down
        assert any("recovered after" in r.getMessage() for r in caplog.records)
        await store.close()
    finally:
        await proxy.close()

    direct = await network_backend.open()
    stored = sorted([j.data async for j in direct.replay()])
    expected = sorted([j.data for j in acked[5:]] + [b"after"])
    assert stored == expected


async def test_database_down_at_start_is_a_store_error(network_backend: Backend) -> None:
    proxy = await TcpProxy(network_backend.port).start()
    await proxy.cut()
    try:
        with pytest.raises(StoreError, match="cannot open"):
            await network_backend.open(network_backend.url_via(proxy.port))
    finally:
        await proxy.close()


async def test_cut_during_a_busy_batch_loses_nothing_acknowledged(
    network_backend: Backend,
) -> None:
    proxy = await TcpProxy(network_backend.port).start()
    acked: list[StoredJob] = []
    try:
        store = await network_backend.open(network_backend.url_via(proxy.port))
        assert isinstance(store, GroupCommitStore)

        async def submitter(n: int) -> None:
            for i in range(200):
                job = StoredJob(b"busy", b"", b"%d-%d" % (n, i))
                try:
                    await store.add(job)
                except StoreError:
                    await asyncio.sleep(0.01)
                else:
                    acked.append(job)

        async def chaos() -> None:
            await asyncio.sleep(0.05)
            await proxy.cut()
            await asyncio.sleep(0.3)
            await proxy.restore()

        await asyncio.gather(*(submitter(n) for n in range(8)), chaos())
        await add_until_accepted(store, StoredJob(b"busy", b"", b"last"), within=30)
        await store.close()
    finally:
        await proxy.close()
    assert acked
    direct = await network_backend.open()
    stored = {j.data async for j in direct.replay()}
    missing = {j.data for j in acked} - stored
    assert not missing, f"{len(missing)} acknowledged jobs lost"


@pytest.fixture
async def sqlite_backend(tmp_path: Path) -> AsyncIterator[Backend]:
    backend = make_backend("sqlite", tmp_path)
    yield backend
    for store in backend.opened:
        await store.close()


async def test_sqlite_locked_by_another_process_then_recovers(sqlite_backend: Backend) -> None:
    backend = sqlite_backend
    assert backend.path is not None
    store = await backend.open(backend.url + "&busy_timeout=0.2")
    assert isinstance(store, GroupCommitStore)
    store.min_backoff = store.max_backoff = 0.05
    await store.add(StoredJob(b"f", b"", b"one"))
    intruder = sqlite3.connect(backend.path, isolation_level=None)
    intruder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="locked"):
            await store.add(StoredJob(b"f", b"", b"two"))
    finally:
        intruder.execute("ROLLBACK")
        intruder.close()
    refused = await add_until_accepted(store, StoredJob(b"f", b"", b"three"), within=10)
    assert refused >= 0
    await store.close()
    store = await backend.open()
    assert [j.data async for j in store.replay()] == [b"one", b"three"]


async def test_cut_during_replay_is_a_store_error(network_backend: Backend) -> None:
    store = await network_backend.open()
    await asyncio.gather(*(store.add(StoredJob(b"r", b"", b"%d" % i)) for i in range(2500)))
    await store.close()
    proxy = await TcpProxy(network_backend.port).start()
    try:
        store = await network_backend.open(network_backend.url_via(proxy.port))
        seen = 0
        with pytest.raises(StoreError, match="replay failed"):
            async for _ in store.replay():
                seen += 1
                if seen == 1:
                    await proxy.cut()
        assert 0 < seen < 2500
    finally:
        await proxy.close()


async def test_sqlite_disk_full_then_recovers(sqlite_backend: Backend) -> None:
    # SQLITE_FULL, the error a full disk gives, provoked by capping the file's pages on
    # the store's own connection; the recovery opens a new connection without the cap.
    opened = await sqlite_backend.open()
    assert isinstance(opened, SqliteStore)
    store = opened
    store.min_backoff = store.max_backoff = 0.05
    await store.add(StoredJob(b"f", b"", b"small"))

    def cap() -> None:
        db = store._db
        assert db is not None
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count={pages}")

    await store._call(cap)
    with pytest.raises(StoreError, match="full"):
        await store.add(StoredJob(b"f", b"", b"x" * 200_000))
    await add_until_accepted(store, StoredJob(b"f", b"", b"after"), within=10)
    await store.close()
    reopened = await sqlite_backend.open()
    assert [j.data async for j in reopened.replay()] == [b"small", b"after"]


async def test_silent_partition_times_out_then_recovers(network_backend: Backend) -> None:
    proxy = await TcpProxy(network_backend.port).start()
    try:
        opened = await network_backend.open(network_backend.url_via(proxy.port))
        assert isinstance(opened, GroupCommitStore)
        store = opened
        store.commit_timeout = 1.0
        await store.add(StoredJob(b"f", b"", b"before"))
        proxy.freeze()
        with pytest.raises(StoreError, match="timed out"):
            await store.add(StoredJob(b"f", b"", b"stuck"))
        assert store.is_down
        proxy.thaw()
        await add_until_accepted(store, StoredJob(b"f", b"", b"after"), within=30)
        await store.close()
    finally:
        await proxy.close()
    direct = await network_backend.open()
    stored = [j.data async for j in direct.replay()]
    # "stuck" was refused, but its commit may have been applied once the network came
    # back (a possible duplicate, never a loss); the acknowledged jobs are all there.
    assert stored in ([b"before", b"after"], [b"before", b"stuck", b"after"])
