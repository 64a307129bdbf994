"""The scheduler's cluster hooks, without sockets: fencing and cluster-wide coalescing."""

from __future__ import annotations

import asyncio

from gearshift.protocol.packets import PacketType as T
from gearshift.records import ClusterSettings, StoredJob
from gearshift.server.cluster import ClusterNode
from gearshift.store.postgres import PostgresStore
from tests.server.fakes import make, peer, take


def _grab(sched: object, w: object) -> tuple[int, tuple[bytes, ...]]:
    sched.grab_job(w, ())  # type: ignore[attr-defined]
    return take(w)[-1]  # type: ignore[arg-type]


def test_withdraw_stored_gives_up_queued_and_delayed_stored_jobs_only() -> None:
    done: list[StoredJob] = []
    s, clock = make(store_done=done.append)
    c, w, fg = peer(s), peer(s), peer(s)
    s.can_do(w, (b"f",))
    running = s.replay(StoredJob(b"f", b"a", b"1"))
    delayed = s.replay(StoredJob(b"f", b"b", b"2", when=int(clock.now) + 60))
    waiting = s.replay(StoredJob(b"f", b"c", b"3"))
    assert running is not None and delayed is not None and waiting is not None
    s.dispatch[T.SUBMIT_JOB](fg, (b"f", b"a", b"x"))  # coalesces onto `running`
    s.dispatch[T.SUBMIT_JOB](c, (b"f", b"", b"mem"))  # memory only
    take(fg)
    assert _grab(s, w)[1][0] == running.handle
    assert s.withdraw_stored() == 2  # `delayed` and `waiting`, not the running one
    assert take(fg) == []  # its job is running here, so it stays
    assert done == []  # the store is not touched: another server owns the rows now
    assert delayed.handle not in s.handles and waiting.handle not in s.handles
    assert running.handle in s.handles
    assert s.functions[b"f"].delayed == [0, 0, 0]
    # Only the memory-only job is left to grab.
    assert _grab(s, w)[1][2] == b"mem"
    clock.advance(120)  # the withdrawn epoch job never comes due
    assert _grab(s, w)[0] == T.NO_JOB
    # Nothing queued and stored is left: a second call is a no-op.
    assert s.withdraw_stored() == 0


def test_withdraw_stored_fails_coalesced_foreground_clients() -> None:
    s, _ = make()
    fg = peer(s)
    job = s.replay(StoredJob(b"f", b"u", b"x"))
    assert job is not None
    s.dispatch[T.SUBMIT_JOB](fg, (b"f", b"u", b"y"))
    assert take(fg) == [(T.JOB_CREATED, (job.handle,))]
    assert s.withdraw_stored() == 1
    assert take(fg) == [(T.WORK_FAIL, (job.handle,))]
    assert (b"f", b"u") not in s.uniques and s.functions[b"f"].total == 0


def test_a_job_the_cluster_coalesced_is_acknowledged_but_not_queued() -> None:
    done: list[StoredJob] = []
    s, _ = make(store_done=done.append)
    c, w = peer(s), peer(s)
    s.can_do(w, (b"f",))
    job = s.submit(c, b"f", b"u", b"x", 1, True, defer=True)
    assert job is not None
    rec = StoredJob(b"f", b"u", b"x", coalesced=True)
    s.activate(job, c, rec)
    assert take(c) == [(T.JOB_CREATED, (job.handle,))]
    assert job.handle not in s.handles and (b"f", b"u") not in s.uniques
    assert _grab(s, w)[0] == T.NO_JOB


async def test_notice_during_a_tick_starts_the_next_tick_at_once() -> None:
    # A member's "leave" notice that arrives while a tick is running must not wait a
    # whole heartbeat: the loop clears its wake-up before the tick, not after it.
    store = PostgresStore(cluster=ClusterSettings("c", node="me", lease=60, heartbeat=30))
    node = ClusterNode(server=None, store=store)  # type: ignore[arg-type]
    ticks: list[float] = []
    second = asyncio.Event()

    async def tick() -> float:
        ticks.append(asyncio.get_running_loop().time())
        if len(ticks) == 1:
            await asyncio.sleep(0)
            node._notified("leave|other")  # as LISTEN delivers it, mid-tick
        else:
            second.set()
        return 30.0

    node._tick = tick  # type: ignore[method-assign]
    task = asyncio.create_task(node._run())
    try:
        await asyncio.wait_for(second.wait(), 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert ticks[1] - ticks[0] < 5
