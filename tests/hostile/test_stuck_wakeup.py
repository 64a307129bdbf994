"""A worker that is woken but never grabs must not hold a job hostage.

Real Perl and PHP worker pools fork: a child can die while its parent keeps the socket
open, so the server's NOOP lands on a connection nobody reads.  gearmand wakes every
sleeper; gearshift wakes one per job and passes the wakeup on after a short delay.
"""

from __future__ import annotations

import asyncio
import time

from gearshift.testing import serve
from tests.server.helpers import Raw, T, worker


async def sleepers(address: str, n: int, fn: bytes = b"f") -> list[Raw]:
    ws = [await worker(address, fn) for _ in range(n)]
    for w in ws:
        w.send(T.PRE_SLEEP)
    for w in ws:  # sync: each has been seen asleep
        await w.call(T.ECHO_REQ, b"sync")
    return ws


async def first_noop(ws: list[Raw], within: float) -> Raw:
    waits = {asyncio.ensure_future(w.expect(T.NOOP, within)): w for w in ws}
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    task = done.pop()
    task.result()
    return waits[task]


async def test_a_stuck_worker_does_not_stall_the_job() -> None:
    async with serve() as srv:  # defaults: -w 1, wakeup delay 50 ms
        c = await Raw.connect(srv.address)
        a, b = await sleepers(srv.address, 2)
        started = time.monotonic()
        c.send(T.SUBMIT_JOB_BG, b"f", b"", b"x")
        await c.expect(T.JOB_CREATED)
        stuck = await first_noop([a, b], 5)  # it never sends GRAB_JOB
        other = b if stuck is a else a
        await other.expect(T.NOOP, within=5)
        other.send(T.GRAB_JOB)
        assert (await other.expect(T.JOB_ASSIGN))[2] == b"x"
        elapsed = time.monotonic() - started
        assert elapsed < 0.1, f"the job ran on the second worker after {elapsed * 1000:.0f} ms"
        for conn in (c, a, b):
            await conn.close()


async def test_a_pool_of_dead_children_is_walked_through() -> None:
    # Five workers whose children died: the job still reaches the one live worker.
    async with serve(worker_wakeup_delay=0.02) as srv:
        c = await Raw.connect(srv.address)
        ws = await sleepers(srv.address, 6)
        c.send(T.SUBMIT_JOB_BG, b"f", b"", b"x")
        await c.expect(T.JOB_CREATED)
        live = ws[-1]
        for _ in range(6):
            woken = await first_noop(ws, 5)
            ws.remove(woken)
            if woken is live:
                break
        live.send(T.GRAB_JOB)
        assert (await live.expect(T.JOB_ASSIGN))[2] == b"x"
        await c.close()
        await asyncio.gather(*(w.close() for w in [*ws, live]))


async def test_one_wakeup_per_job_when_workers_grab() -> None:
    # Pass-on must not turn into a thundering herd: workers that grab promptly are
    # woken once per job, and idle workers of the function are left to sleep.
    async with serve() as srv:
        c = await Raw.connect(srv.address)
        ws = await sleepers(srv.address, 20)
        c.send(T.SUBMIT_JOB_BG, b"f", b"", b"x")
        await c.expect(T.JOB_CREATED)
        woken = await first_noop(ws, 5)
        woken.send(T.GRAB_JOB)
        await woken.expect(T.JOB_ASSIGN)
        await asyncio.sleep(0.3)  # several wakeup delays
        others = [w for w in ws if w is not woken]
        await asyncio.gather(*(w.nothing(0.01) for w in others))
        await c.close()
        await asyncio.gather(*(w.close() for w in ws))
