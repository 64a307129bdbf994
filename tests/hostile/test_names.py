"""Names a peer sends once must not cost memory forever: functions that have no worker
and no job left are forgotten by the housekeeping timer (gearmand keeps them all)."""

from __future__ import annotations

import asyncio

from gearshift.server.config import ServerConfig
from gearshift.server.server import GearmanServer
from tests.server.helpers import Raw, T, wait_for


async def test_one_job_functions_are_forgotten_once_done() -> None:
    server = GearmanServer(ServerConfig(port=0, listen="127.0.0.1", queue_type="builtin"))
    server.housekeeping_interval = 0.05
    await server.start()
    try:
        host, port = server.addresses[0]
        address = f"{host}:{port}"
        c = await Raw.connect(address)
        n = 5000
        names = [b"scan.%d" % i for i in range(n)]
        for name in names:
            c.send(T.SUBMIT_JOB_BG, name, b"", b"x")
        for _ in names:
            await c.expect(T.JOB_CREATED)
        assert len(server.scheduler.functions) == n
        w = await Raw.connect(address)
        for name in names:
            w.send(T.CAN_DO, name)
            w.send(T.GRAB_JOB)
        for _ in names:
            handle = (await w.expect(T.JOB_ASSIGN))[0]
            w.send(T.WORK_COMPLETE, handle, b"")
        w.send(T.RESET_ABILITIES)
        await w.call(T.ECHO_REQ, b"sync")
        await wait_for(lambda: not server.scheduler.functions, within=5)
        status = await c.admin("status")
        assert status == ".\n"
        assert server.scheduler.stats.submitted == {}
        # A worker's function is kept however long it idles.
        w.send(T.CAN_DO, b"kept")
        await w.call(T.ECHO_REQ, b"sync")
        await asyncio.sleep(0.3)
        assert (await c.admin("status")).startswith("kept\t0\t0\t1\n")
        for conn in (c, w):
            await conn.close()
    finally:
        await server.shutdown()
