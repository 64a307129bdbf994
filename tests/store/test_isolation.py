"""One bad job fails alone: checked before it joins a batch, or isolated by bisection.

Each backend refuses one row *itself* here (a SQLite trigger, a PostgreSQL CHECK
constraint, a MariaDB trigger with SIGNAL): the batch carrying it fails, the store
probes the backend, bisects the batch and refuses only that row, in a number of
commits that grows with log2 of the batch.  Redis has no test of that kind: no single
row can fail there (every field is a binary-safe string, and Redis has no triggers or
constraints), so a Redis failure is always the whole backend's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gearshift.errors import StoreError
from gearshift.protocol.packets import PacketType
from gearshift.store import GroupCommitStore, StoredJob
from gearshift.testing import serve
from tests.server.helpers import Raw
from tests.store.conftest import PG_URL, Backend, _backend_fixture, make_backend
from tests.store.proxy import TcpProxy

T = PacketType

#: The backends in which a row can be made to fail (see the module docstring for Redis).
POISONABLE = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
]


@pytest.fixture(params=POISONABLE)
async def poisonable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async for b in _backend_fixture(request.param, tmp_path):
        yield b


async def install_poison(backend: Backend) -> None:
    """Make the backend itself refuse any row whose function is ``poison``."""
    name = backend.name
    if backend.kind == "sqlite":
        assert backend.path is not None
        with sqlite3.connect(backend.path) as db:
            db.execute(
                f"CREATE TRIGGER {name}_poison BEFORE INSERT ON {name}"
                " WHEN NEW.function_name = 'poison'"
                " BEGIN SELECT RAISE(ABORT, 'poisoned job refused'); END"
            )
        db.close()
    elif backend.kind == "postgres":
        import asyncpg

        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(
                f"ALTER TABLE {name} ADD CONSTRAINT {name}_poison"
                " CHECK (function_name <> 'poison'::bytea)"
            )
        finally:
            await conn.close()
    elif backend.kind == "mysql":
        import asyncmy

        conn = await asyncmy.connect(host="127.0.0.1", port=3306, user="root", database="test")
        try:
            async with conn.cursor() as cur:
                await cur.execute(
                    f"CREATE TRIGGER {name}_poison BEFORE INSERT ON {name} FOR EACH ROW"
                    " BEGIN IF NEW.function_name = 'poison' THEN"
                    " SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'poisoned job refused';"
                    " END IF; END"
                )
        finally:
            conn.close()
    else:
        raise AssertionError(f"no row can be poisoned in {backend.kind}")


async def replay_data(backend: Backend) -> list[bytes]:
    store = await backend.open()
    data = [job.data async for job in store.replay()]
    await store.close()
    return data


async def test_a_job_no_store_can_hold_is_refused_alone(backend: Backend) -> None:
    opened = await backend.open()
    assert isinstance(opened, GroupCommitStore)
    store = opened
    bad = {
        "epoch time 9223372036854775808 does not fit a signed 64-bit integer": StoredJob(
            b"f", b"", b"late", when=2**63
        ),
        "epoch time -9223372036854775809 does not fit a signed 64-bit integer": StoredJob(
            b"f", b"", b"early", when=-(2**63) - 1
        ),
        "unique of 65 bytes is longer than 64 bytes": StoredJob(b"f", b"u" * 65, b"long"),
        "priority 7 is not 0 (high), 1 (normal) or 2 (low)": StoredJob(
            b"f",
            b"",
            b"prio",
            priority=7,  # type: ignore[arg-type]
        ),
        "a background job needs a function name": StoredJob(b"", b"", b"nameless"),
    }
    good = [StoredJob(b"f", b"", b"%d" % i) for i in range(300)]
    jobs = good[:150] + list(bad.values()) + good[150:]
    results = await asyncio.gather(*(store.add(j) for j in jobs), return_exceptions=True)

    refused = {jobs[i].data: r for i, r in enumerate(results) if r is not None}
    assert set(refused) == {j.data for j in bad.values()}
    for text, job in bad.items():
        err = refused[job.data]
        assert isinstance(err, StoreError)
        assert f"job not stored: {text}" in str(err)
        assert backend.kind in str(err)  # names the store
    # Refused before batching: no batch failed, nothing was isolated.
    assert store.stats.failures == 0
    assert not store.is_down
    await store.close()
    assert sorted(await replay_data(backend)) == sorted(j.data for j in good)


async def test_a_row_the_backend_refuses_fails_alone(poisonable: Backend) -> None:
    opened = await poisonable.open()
    assert isinstance(opened, GroupCommitStore)
    store = opened
    await install_poison(poisonable)
    old = [StoredJob(b"old", b"", b"old%d" % i) for i in range(10)]
    await asyncio.gather(*(store.add(j) for j in old))

    n = 1000
    jobs = [StoredJob(b"ok", b"", b"%d" % i) for i in range(n)]
    bad = 613
    jobs[bad] = StoredJob(b"poison", b"", b"bad")
    before = dataclasses.replace(store.stats)
    results = await asyncio.gather(
        *(store.add(j) for j in jobs), *(store.done(j) for j in old), return_exceptions=True
    )

    refused = [i for i, r in enumerate(results) if r is not None]
    assert refused == [bad]
    err = results[bad]
    assert isinstance(err, StoreError)
    assert "job not stored" in str(err) and "poison" in str(err)  # the backend's reason
    assert not store.is_down
    stats = store.stats
    assert stats.isolated - before.isolated == 1
    assert stats.refused - before.refused == 1
    assert stats.adds - before.adds == n - 1
    assert stats.dones - before.dones == len(old)  # applied once, by the probe
    tried = stats.commits + stats.failures - before.commits - before.failures
    # The failed batch, the probe, then at most two commits per halving.
    assert tried <= 2 + 2 * math.ceil(math.log2(n)), stats
    await store.close()
    assert sorted(await replay_data(poisonable)) == sorted(
        j.data for i, j in enumerate(jobs) if i != bad
    )


async def test_several_bad_rows_each_fail_alone(poisonable: Backend) -> None:
    opened = await poisonable.open()
    assert isinstance(opened, GroupCommitStore)
    store = opened
    await install_poison(poisonable)
    await store.add(StoredJob(b"warm", b"", b"warm"))
    jobs = [StoredJob(b"ok", b"", b"%d" % i) for i in range(200)]
    bad = {0, 77, 78, 199}
    for i in bad:
        jobs[i] = StoredJob(b"poison", b"", b"bad%d" % i)
    results = await asyncio.gather(*(store.add(j) for j in jobs), return_exceptions=True)
    assert {i for i, r in enumerate(results) if r is not None} == bad
    assert not store.is_down
    await store.close()
    assert sorted(await replay_data(poisonable)) == sorted(
        [b"warm"] + [j.data for i, j in enumerate(jobs) if i not in bad]
    )


async def test_backend_lost_during_the_isolation_marks_the_store_down(
    poisonable: Backend,
) -> None:
    """The probe passes, then the backend goes away: the rest is refused, none acked."""
    proxy: TcpProxy | None = None
    if poisonable.kind == "sqlite":
        url = poisonable.url
    else:
        proxy = await TcpProxy(poisonable.port).start()
        url = poisonable.url_via(proxy.port)
    try:
        opened = await poisonable.open(url)
        assert isinstance(opened, GroupCommitStore)
        store = opened
        store.min_backoff = store.max_backoff = 5.0  # stays down while we look
        await install_poison(poisonable)
        await store.add(StoredJob(b"warm", b"", b"warm"))
        real_probe = store._probe

        async def probe_then_lose_backend(dones: list[object]) -> None:
            await real_probe(dones)
            if proxy is not None:
                await proxy.cut()
            else:
                assert poisonable.path is not None
                os.unlink(poisonable.path)

        store._probe = probe_then_lose_backend  # type: ignore[method-assign]
        jobs = [StoredJob(b"ok", b"", b"%d" % i) for i in range(100)]
        jobs[40] = StoredJob(b"poison", b"", b"bad")
        results = await asyncio.gather(*(store.add(j) for j in jobs), return_exceptions=True)
        assert all(isinstance(r, StoreError) for r in results)
        assert store.is_down
        assert store.stats.isolated == 1
        assert store.stats.adds == 1  # only "warm"
    finally:
        if proxy is not None:
            await proxy.close()


@pytest.mark.postgres
async def test_postgres_gearmand_table_limits(tmp_path: Path) -> None:
    import asyncpg

    backend = make_backend("postgres", tmp_path)
    conn = await asyncpg.connect(PG_URL)
    try:
        # As gearmand 1.1 creates it.
        await conn.execute(
            f"CREATE TABLE {backend.name} (unique_key VARCHAR(64), function_name VARCHAR(255),"
            " priority INTEGER, data BYTEA, when_to_run INTEGER,"
            " UNIQUE (unique_key, function_name))"
        )
    finally:
        await conn.close()
    try:
        store = await backend.open()
        bad = {
            "epoch time 1099511627776 does not fit this store's when_to_run column"
            " (32-bit integer)": StoredJob(b"f", b"", b"epoch", when=2**40),
            "the function name has 256 characters; this store's function_name column"
            " takes at most 255": StoredJob(b"f" * 256, b"", b"name"),
            "the unique holds a NUL byte": StoredJob(b"f", b"a\0b", b"nul"),
            "the unique is not UTF-8": StoredJob(b"f", b"\xff", b"utf8"),
        }
        good = [StoredJob(b"f", b"", b"%d" % i) for i in range(50)]
        good.append(StoredJob("é".encode() * 255, "ü".encode() * 32, b"wide", when=2**31 - 1))
        jobs = good + list(bad.values())
        results = await asyncio.gather(*(store.add(j) for j in jobs), return_exceptions=True)
        for text, job in bad.items():
            err = results[jobs.index(job)]
            assert isinstance(err, StoreError) and text in str(err), err
        assert results[: len(good)] == [None] * len(good)
        assert isinstance(store, GroupCommitStore) and store.stats.failures == 0
        await store.close()
        assert sorted(await replay_data(backend)) == sorted(j.data for j in good)
    finally:
        for opened in backend.opened:
            await opened.close()
        await backend.drop()


@pytest.mark.mysql
async def test_mysql_gearmand_table_limits(tmp_path: Path) -> None:
    import asyncmy

    backend = make_backend("mysql", tmp_path)
    conn = await asyncmy.connect(host="127.0.0.1", port=3306, user="root", database="test")
    try:
        async with conn.cursor() as cur:
            # As gearmand 1.1 creates it (the database's charset is utf8mb4).
            await cur.execute(
                f"CREATE TABLE {backend.name} (unique_key VARCHAR(64),"
                " function_name VARCHAR(255), priority INT, data LONGBLOB, when_to_run INT,"
                " unique key (unique_key, function_name)) DEFAULT CHARSET=utf8mb4"
            )
    finally:
        conn.close()
    try:
        store = await backend.open()
        bad = {
            "epoch time 1099511627776 does not fit this store's when_to_run column"
            " (32-bit integer)": StoredJob(b"f", b"", b"epoch", when=2**40),
            "the function name is 256 characters long; this store's function_name column"
            " takes at most 255": StoredJob(b"f" * 256, b"", b"name"),
            "the unique is not UTF-8, which this store's unique_key column (utf8mb4)"
            " cannot hold": StoredJob(b"f", b"\xff", b"utf8"),
        }
        good = [StoredJob(b"f", b"", b"%d" % i) for i in range(50)]
        good.append(StoredJob("é".encode() * 255, b"", b"wide", when=-(2**31)))
        jobs = good + list(bad.values())
        results = await asyncio.gather(*(store.add(j) for j in jobs), return_exceptions=True)
        for text, job in bad.items():
            err = results[jobs.index(job)]
            assert isinstance(err, StoreError) and text in str(err), err
        assert results[: len(good)] == [None] * len(good)
        await store.close()
        assert sorted(await replay_data(backend)) == sorted(j.data for j in good)
    finally:
        for opened in backend.opened:
            await opened.close()
        await backend.drop()


async def test_store_on_shutdown_checks_jobs_when_they_arrive(tmp_path: Path) -> None:
    backend = make_backend("sqlite", tmp_path)
    store = await backend.open(backend.url + "&store_on_shutdown=1")
    await store.add(StoredJob(b"f", b"", b"kept"))
    with pytest.raises(StoreError, match="does not fit a signed 64-bit integer"):
        await store.add(StoredJob(b"f", b"", b"late", when=2**63))
    await store.close()
    assert await replay_data(backend) == [b"kept"]


# -- through a real server: one poisoner, several innocent clients -------------------


async def poison_scenario(
    url: str, send_poison: Callable[[Raw], None], expect: bytes, seconds: float = 1.5
) -> tuple[list[bytes], list[tuple[int, tuple[bytes, ...]]], GroupCommitStore[object]]:
    """Innocent clients pipeline background submits while a poisoner sends one bad
    submit every 20 ms.  Returns (acknowledged payloads, the poisoner's replies, store).
    """
    acked: list[bytes] = []
    innocent_errors: list[tuple[bytes, ...]] = []
    poison_replies: list[tuple[int, tuple[bytes, ...]]] = []
    async with serve(queue_type=url) as srv:
        store = srv.server.store
        assert isinstance(store, GroupCommitStore)
        stop = asyncio.Event()

        async def innocent(n: int) -> None:
            raw = await Raw.connect(srv.address)
            sent = 0
            while not stop.is_set():
                window = [b"%d-%d" % (n, sent + k) for k in range(16)]
                sent += len(window)
                for payload in window:
                    raw.send(T.SUBMIT_JOB_BG, b"work", b"", payload)
                for payload in window:
                    ptype, args = await raw.recv()
                    if ptype == T.JOB_CREATED:
                        acked.append(payload)
                    else:
                        innocent_errors.append(args)
            await raw.close()

        async def poisoner() -> None:
            raw = await Raw.connect(srv.address)
            sent = 0
            while not stop.is_set():
                send_poison(raw)
                sent += 1
                await asyncio.sleep(0.02)
            # The replies (small) wait in the socket buffers meanwhile.
            for _ in range(sent):
                poison_replies.append(await raw.recv())
            await raw.close()

        async def clock() -> None:
            await asyncio.sleep(seconds)
            stop.set()

        await asyncio.gather(*(innocent(n) for n in range(4)), poisoner(), clock())
        assert innocent_errors == []
        assert not store.is_down
    assert len(poison_replies) >= 20
    for ptype, args in poison_replies:
        assert ptype == T.ERROR, (T(ptype).name, args)
        assert args[0] == b"QUEUE_ERROR" and expect in args[1], args
    assert len(acked) > 100
    return acked, poison_replies, store


@pytest.mark.postgres
async def test_server_poisoned_epochs_on_a_gearmand_postgres_table(tmp_path: Path) -> None:
    import asyncpg

    backend = make_backend("postgres", tmp_path)
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(
            f"CREATE TABLE {backend.name} (unique_key VARCHAR(64), function_name VARCHAR(255),"
            " priority INTEGER, data BYTEA, when_to_run INTEGER,"
            " UNIQUE (unique_key, function_name))"
        )
    finally:
        await conn.close()
    try:
        acked, _, store = await poison_scenario(
            backend.url,
            lambda raw: raw.send(T.SUBMIT_JOB_EPOCH, b"work", b"", str(2**40).encode(), b"x"),
            b"epoch time 1099511627776 does not fit this store's when_to_run column"
            b" (32-bit integer)",
        )
        assert store.stats.failures == 0  # refused before batching
        assert sorted(await replay_data(backend)) == sorted(acked)
    finally:
        for opened in backend.opened:
            await opened.close()
        await backend.drop()


async def test_server_poisoned_function_on_sqlite(tmp_path: Path) -> None:
    backend = make_backend("sqlite", tmp_path)
    store = await backend.open()
    await store.close()
    await install_poison(backend)
    acked, replies, opened = await poison_scenario(
        backend.url,
        lambda raw: raw.send(T.SUBMIT_JOB_BG, b"poison", b"", b"x"),
        b"poisoned job refused",
    )
    # Every poisoned submit failed a batch in the backend, and was isolated there.
    assert opened.stats.refused == len(replies)
    assert opened.stats.isolated >= 1
    print(f"\n{len(acked)} innocent jobs, {len(replies)} poisoned: {opened.stats}")
    stored = await replay_data(backend)
    assert sorted(stored) == sorted(acked)
