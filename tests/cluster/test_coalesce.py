"""Background jobs with one (function, unique) are coalesced across the whole cluster."""

from __future__ import annotations

import asyncio

import pytest

from gearshift.protocol.packets import PacketType as T
from tests.cluster.conftest import Cluster, Runs, admin, queued, submit, wait_for, worker
from tests.store.rawclient import submit_bg_sync

pytestmark = [pytest.mark.postgres]


async def _run_all(ports: list[int], runs: Runs, expect: int) -> None:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(worker(p, b"co", runs, stop)) for p in ports]
    try:
        for _ in range(200):
            if runs.total >= expect:
                break
            await asyncio.sleep(0.05)
        # Give a second run (the bug this guards against) time to show up.
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def test_same_unique_on_two_servers_runs_once(cluster: Cluster) -> None:
    a, b = cluster.start(2)
    h1 = submit_bg_sync(a.port, b"co", b"same", b"one", ptype=T.SUBMIT_JOB_BG)
    h2 = submit_bg_sync(b.port, b"co", b"same", b"two", ptype=T.SUBMIT_JOB_HIGH_BG)
    assert h1 and h2
    assert queued(a.port, "co") == 1
    assert queued(b.port, "co") == 0  # acknowledged, held by a
    stored = admin(b.port, "show stored jobs")
    assert [(r[1], r[2]) for r in stored] == [("co", "same")]
    runs = Runs()
    await _run_all([a.port, b.port], runs, 1)
    assert runs.count == {b"same": 1}
    # Once it has run, the unique is free again.
    wait_for(lambda: admin(a.port, "show stored jobs") == [], 10, "the row to go")
    submit_bg_sync(b.port, b"co", b"same", b"three", ptype=T.SUBMIT_JOB_BG)
    assert queued(b.port, "co") == 1


@pytest.mark.slow
async def test_many_duplicates_across_three_servers(cluster: Cluster) -> None:
    servers = cluster.start(3)
    uniques = [b"d%d" % i for i in range(300)]
    acked: set[bytes] = set()
    # Every server gets every unique, concurrently.
    left = await asyncio.gather(*(submit(s.port, b"co", uniques, acked) for s in servers))
    assert left == [[], [], []]
    assert sum(queued(s.port, "co") for s in servers) == 300
    runs = Runs()
    await _run_all([s.port for s in servers], runs, 300)
    assert set(runs.count) == set(uniques)
    assert runs.duplicates() == 0


async def test_empty_uniques_are_never_coalesced(cluster: Cluster) -> None:
    a, b = cluster.start(2)
    for port in (a.port, a.port, b.port):
        submit_bg_sync(port, b"co", b"", b"x", ptype=T.SUBMIT_JOB_BG)
    assert queued(a.port, "co") == 2
    assert queued(b.port, "co") == 1
    assert len(admin(a.port, "show stored jobs")) == 3
