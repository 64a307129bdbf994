"""End to end: kill -9 the server mid-load, restart it on the same store, lose nothing.

8 clients submit 20,000 background jobs while 2 workers already drain them; the
server is SIGKILLed when a random number of jobs has been acknowledged.  After a
restart on the same store, every job that got JOB_CREATED must run (at least once).
Jobs running or finished-but-not-yet-deleted at the kill run again after the
restart; that count is printed (``-s`` shows it).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable

import pytest

from gearshift.store import open_store
from tests.procs import ServerProcess
from tests.store.conftest import Backend
from tests.store.rawclient import admin_status, drain, submit_many

pytestmark = pytest.mark.slow

JOBS = 20_000
CLIENTS = 8
FUNCTION = b"crash"


async def wait_for(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.timeout(120)
async def test_kill_9_loses_no_acknowledged_job(
    backend: Backend, make_gearshift: Callable[..., ServerProcess]
) -> None:
    srv = make_gearshift("--queue", backend.url)
    payloads = [[b"c%d-%05d" % (c, i) for i in range(JOBS // CLIENTS)] for c in range(CLIENTS)]
    acked: set[bytes] = set()
    ran: Counter[bytes] = Counter()
    kill_at = random.randrange(JOBS // 10, JOBS * 9 // 10)
    killed = asyncio.Event()

    def record(data: bytes) -> None:
        ran[data] += 1

    async def killer() -> None:
        await wait_for(lambda: len(acked) >= kill_at, 60, f"{kill_at} acknowledged jobs")
        srv.kill()
        killed.set()

    async def worker() -> None:
        try:
            await drain(srv.port, FUNCTION, record, killed.is_set)
        except (ConnectionError, OSError):
            pass

    started = time.monotonic()
    await asyncio.gather(
        killer(),
        *(submit_many(srv.port, FUNCTION, p, acked.add) for p in payloads),
        worker(),
        worker(),
    )
    acked_at_kill = len(acked)
    ran_at_kill = set(ran)

    srv.start()  # same port, same store
    status = await admin_status(srv.port)
    queued_after_restart = status.get(FUNCTION, (0, 0, 0))[0]
    workers = [
        asyncio.create_task(drain(srv.port, FUNCTION, record, lambda: False)) for _ in range(4)
    ]
    try:
        await wait_for(lambda: acked <= ran.keys(), 60, "every acknowledged job to run")

        # Rows stored but not yet acknowledged at the kill also come back; let them finish.
        async def queue_empty() -> bool:
            s = (await admin_status(srv.port)).get(FUNCTION, (0, 0, 0))
            return s[0] == 0 and s[1] == 0

        deadline = time.monotonic() + 30
        while not await queue_empty():
            assert time.monotonic() < deadline, "queue did not drain"
            await asyncio.sleep(0.1)
    finally:
        for t in workers:
            t.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    assert srv.stop() == 0

    lost = acked - set(ran)
    twice = sum(1 for n in ran.values() if n > 1)
    print(
        f"\n[crash {backend.kind}] killed at {acked_at_kill} acknowledged jobs "
        f"({len(ran_at_kill)} had started), {queued_after_restart} replayed, "
        f"lost {len(lost)}, ran twice {twice}, unacknowledged-but-run "
        f"{len(set(ran) - acked)}, {time.monotonic() - started:.1f}s"
    )
    assert not lost
    assert queued_after_restart >= len(acked - ran_at_kill)

    # Every finished job was deleted: the store is empty after a clean stop.
    store = open_store(backend.url)
    await store.open()
    backend.opened.append(store)
    assert [j.data async for j in store.replay()] == []
