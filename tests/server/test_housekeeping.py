"""Housekeeping: job tables grown by a burst are given back once the burst drains."""

from __future__ import annotations

import logging
import sys

import pytest

from gearshift.protocol.codec import encode_request
from gearshift.server.config import ServerConfig
from gearshift.server.server import GearmanServer
from gearshift.testing import RunningServer
from tests.server.helpers import Raw, T, wait_for, worker

BURST = 20_000


async def test_tables_shrink_after_a_burst_drains(caplog: pytest.LogCaptureFixture) -> None:
    server = GearmanServer(ServerConfig(port=0, listen="127.0.0.1", queue_type="builtin"))
    server.housekeeping_interval = 0.1
    await server.start()
    try:
        address = RunningServer(server).address
        sched = server.scheduler
        c = await Raw.connect(address)
        c.send_raw(
            b"".join(
                encode_request(T.SUBMIT_JOB_BG, b"burst", b"u%d" % i, b"x") for i in range(BURST)
            )
        )
        for _ in range(BURST):
            await c.expect(T.JOB_CREATED)
        grown = sys.getsizeof(sched.handles), sys.getsizeof(sched.uniques)
        assert min(grown) > 512 * 1024  # 20k entries: about 1 MiB per table
        # Nothing is compacted while the jobs are live.
        await wait_for(lambda: sched.job_count() == BURST)
        w = await worker(address, b"burst")
        w.send_raw(encode_request(T.GRAB_JOB) * BURST)
        handles = [(await w.expect(T.JOB_ASSIGN))[0] for _ in range(BURST)]
        assert (sys.getsizeof(sched.handles), sys.getsizeof(sched.uniques)) == grown
        with caplog.at_level(logging.INFO, logger="gearshift.server.server"):
            w.send_raw(b"".join(encode_request(T.WORK_COMPLETE, h, b"") for h in handles))
            await wait_for(lambda: sched.job_count() == 0)
            await wait_for(lambda: sys.getsizeof(sched.handles) < 64 * 1024)
            await wait_for(lambda: sys.getsizeof(sched.uniques) < 64 * 1024)
        assert any("compacted job tables" in r.getMessage() for r in caplog.records)
        # The rebuilt tables are the live ones: jobs still flow, and by unique too.
        c.send(T.SUBMIT_JOB_BG, b"burst", b"after", b"y")
        (handle,) = await c.expect(T.JOB_CREATED)
        c.send(T.SUBMIT_JOB_BG, b"burst", b"after", b"y")
        assert await c.expect(T.JOB_CREATED) == (handle,)
        w.send(T.GRAB_JOB)
        assert await w.expect(T.JOB_ASSIGN) == (handle, b"burst", b"y")
        for conn in (c, w):
            await conn.close()
    finally:
        await server.shutdown()
