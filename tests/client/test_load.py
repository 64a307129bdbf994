"""1,000 concurrent foreground jobs from one AsyncClient: every job gets its own result."""

from __future__ import annotations

import asyncio
import random

from gearshift import AsyncClient, WorkerJob
from tests.client.conftest import make_worker, running
from tests.procs import ServerProcess


async def test_thousand_concurrent_jobs_each_get_their_own_result(server: ServerProcess) -> None:
    async def work(job: WorkerJob[bytes]) -> bytes:
        # Random delays finish jobs out of order, so a mix-up would show.
        if random.random() < 0.2:
            await asyncio.sleep(random.random() / 100)
        if job.data.endswith(b"7"):
            job.send_data(b"progress:" + job.data)
        return b"result:" + job.data[::-1]

    workers = [make_worker(server.address, {"work": work}, concurrency=32) for _ in range(2)]
    async with running(workers[0]), running(workers[1]), AsyncClient(server.address) as client:
        payloads = [f"payload-{i:04d}".encode() for i in range(1000)]
        jobs = await asyncio.gather(*(client.submit_job("work", p) for p in payloads))
        assert len({job.handle for job in jobs}) == 1000
        results = await asyncio.wait_for(asyncio.gather(*jobs), 60)
        assert results == [b"result:" + p[::-1] for p in payloads]
        for job, payload in zip(jobs, payloads, strict=True):
            expected = [b"progress:" + payload] if payload.endswith(b"7") else []
            assert job.data_chunks == expected
        # And plain submit() in bulk, on the same connection.
        results = await asyncio.wait_for(
            asyncio.gather(*(client.submit("work", p) for p in payloads[:500])), 60
        )
        assert results == [b"result:" + p[::-1] for p in payloads[:500]]
    assert workers[0].jobs_done + workers[1].jobs_done == 1500
