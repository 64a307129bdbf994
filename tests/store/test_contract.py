"""The Store contract, against every backend on its real server."""

from __future__ import annotations

import asyncio
import time

import pytest

from gearshift.errors import StoreError
from gearshift.protocol.packets import Priority
from gearshift.store import GroupCommitStore, Store, StoredJob
from tests.store.conftest import Backend


async def replay_all(store: Store) -> list[StoredJob]:
    return [job async for job in store.replay()]


def fields(job: StoredJob) -> tuple[bytes, bytes, bytes, Priority, int]:
    return (job.function, job.unique, job.data, job.priority, job.when)


async def test_add_replay_done_across_restarts(backend: Backend) -> None:
    future = int(time.time()) + 3600
    jobs = [
        StoredJob(b"resize", b"u-1", b"first", Priority.NORMAL),
        StoredJob(b"resize", b"u-2", b"second", Priority.HIGH),
        StoredJob(b"mail", b"", b"third", Priority.LOW),
        StoredJob(b"later", b"e-1", b"fourth", Priority.NORMAL, when=future),
    ]
    store = await backend.open()
    assert await replay_all(store) == []
    for job in jobs:
        await store.add(job)
        assert job.key is not None
    await store.close()

    store = await backend.open()
    replayed = await replay_all(store)
    assert [fields(j) for j in replayed] == [fields(j) for j in jobs]  # oldest first
    assert all(j.key is not None for j in replayed)
    await store.done(replayed[1])
    await store.done(replayed[3])
    await store.close()

    store = await backend.open()
    assert [fields(j) for j in await replay_all(store)] == [fields(jobs[0]), fields(jobs[2])]


async def test_empty_and_equal_uniques_never_overwrite(backend: Backend) -> None:
    store = await backend.open()
    empty = [StoredJob(b"f", b"", b"e%d" % i) for i in range(30)]
    same = [StoredJob(b"f", b"dup", b"d%d" % i) for i in range(10)]
    await asyncio.gather(*(store.add(j) for j in empty + same))
    await store.close()
    store = await backend.open()
    replayed = await replay_all(store)
    assert sorted(j.data for j in replayed) == sorted(j.data for j in empty + same)
    assert len({j.key for j in replayed}) == 40


async def test_done_removes_exactly_that_job(backend: Backend) -> None:
    store = await backend.open()
    twins = [StoredJob(b"f", b"", b"same") for _ in range(3)]
    for job in twins:
        await store.add(job)
    keep = {twins[0].key, twins[2].key}
    await store.done(twins[1])
    assert twins[1].key is None  # a second done is a no-op
    await store.done(twins[1])
    await store.close()
    store = await backend.open()
    assert {j.key for j in await replay_all(store)} == keep


async def test_binary_names_and_payloads_round_trip(backend: Backend) -> None:
    store = await backend.open()
    job = StoredJob(b"f\xff\xfeunc", b"\x80uniq", b"\x00bin\x00ary\xff" * 1000, Priority.LOW)
    big = StoredJob(b"big", b"b", bytes(range(256)) * 4096)  # 1 MiB
    await store.add(job)
    await store.add(big)
    await store.close()
    store = await backend.open()
    assert [fields(j) for j in await replay_all(store)] == [fields(job), fields(big)]


async def test_group_commit_batches_and_acks_after_own_commit(backend: Backend) -> None:
    store = await backend.open()
    assert isinstance(store, GroupCommitStore)
    committed: set[object] = set()
    real_commit = store._commit

    async def spying_commit(rows: list[object], dones: list[object]) -> list[object]:
        keys = await real_commit(rows, dones)
        committed.update(keys)
        return keys

    store._commit = spying_commit  # type: ignore[method-assign]
    early_acks: list[StoredJob] = []

    async def add(job: StoredJob) -> None:
        await store.add(job)
        if job.key not in committed:
            early_acks.append(job)

    jobs = [StoredJob(b"batch", b"", b"%d" % i) for i in range(600)]
    await asyncio.gather(*(add(j) for j in jobs))
    assert early_acks == []
    assert store.stats.adds == 600
    # 600 concurrent adds: the first commit carries one job, the next the rest.
    assert store.stats.commits <= 10, store.stats
    assert store.stats.largest_batch >= 100, store.stats
    before = store.stats.commits
    await asyncio.gather(*(store.done(j) for j in jobs[:300]))
    assert store.stats.commits - before <= 5, store.stats
    await store.close()
    store = await backend.open()
    assert sorted(j.data for j in await replay_all(store)) == sorted(j.data for j in jobs[300:])


async def test_adds_and_dones_share_transactions(backend: Backend) -> None:
    store = await backend.open()
    assert isinstance(store, GroupCommitStore)
    first = [StoredJob(b"mix", b"", b"a%d" % i) for i in range(100)]
    await asyncio.gather(*(store.add(j) for j in first))
    before = store.stats.commits
    second = [StoredJob(b"mix", b"", b"b%d" % i) for i in range(100)]
    await asyncio.gather(*(store.add(j) for j in second), *(store.done(j) for j in first))
    assert store.stats.commits - before <= 3
    await store.close()
    store = await backend.open()
    assert sorted(j.data for j in await replay_all(store)) == sorted(j.data for j in second)


async def test_closed_store_refuses_adds(backend: Backend) -> None:
    store = await backend.open()
    await store.close()
    with pytest.raises(StoreError, match="not open"):
        await store.add(StoredJob(b"f", b"", b"x"))


async def test_many_jobs_replay_in_order(backend: Backend) -> None:
    store = await backend.open()
    jobs = [StoredJob(b"order", b"", b"%05d" % i) for i in range(2500)]
    for i in range(0, 2500, 500):  # five waves, each its own few commits
        await asyncio.gather(*(store.add(j) for j in jobs[i : i + 500]))
    await store.close()
    store = await backend.open()
    assert [j.data for j in await replay_all(store)] == [j.data for j in jobs]


async def test_batch_of_large_payloads(backend: Backend) -> None:
    # ~9 MB in one batch: MySQL splits it into several INSERTs in one transaction.
    store = await backend.open()
    jobs = [StoredJob(b"big", b"", bytes([i]) * 1_500_000) for i in range(6)]
    await asyncio.gather(*(store.add(j) for j in jobs))
    await store.close()
    store = await backend.open()
    assert [j.data for j in await replay_all(store)] == [j.data for j in jobs]
