"""gearshift's own Python client and worker: ``python -m benchmarks.library``.

The scenarios in ``benchmarks.run`` drive the servers with a lean load generator; this
one measures the libraries users write against. One process runs an ``AsyncWorker``
(echo handler, ``--concurrency`` slots) and an ``AsyncClient`` that keeps as many
foreground jobs in flight, on one event loop (uvloop when installed), against a freshly
started gearmand and gearshift server in turn. It reports jobs/s and the CPU the client
and worker spend per job (the process's user + system time, server excluded), for
100-byte and 1 MiB payloads and for each worker executor. The ``batch`` row is the client
alone: ``-n`` background submits of 100 bytes made at once with ``asyncio.gather``.

Options: ``-n`` jobs per run (1 MiB runs use n/20), ``-r`` repeats (median), ``-s``
servers, ``--executors``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from benchmarks.scenarios import SERVERS
from gearshift import AsyncClient, AsyncWorker, WorkerJob
from gearshift.bench import ManagedServer


@dataclass(frozen=True)
class Result:
    jobs_per_s: float
    cpu_us_per_job: float


@contextmanager
def server(command: str) -> Iterator[str]:
    """Start ``command`` (a SERVERS template) on a free port; yield its address."""
    with ManagedServer(command) as srv:
        yield f"{srv.host}:{srv.port}"


def _echo(job: WorkerJob[Any]) -> bytes:
    return job.raw


async def _echo_async(job: WorkerJob[Any]) -> bytes:
    return job.raw


async def measure_batch(address: str, *, jobs: int, size: int) -> Result:
    """``jobs`` background submits in one ``asyncio.gather`` (no worker): client only."""
    payload = os.urandom(size)
    async with AsyncClient(address) as client:
        await client.submit_background("lib_batch", payload)  # connect first
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        handles = await asyncio.gather(
            *(client.submit_background("lib_batch", payload) for _ in range(jobs))
        )
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
    if len(set(handles)) != jobs:
        raise AssertionError("a background submit got no handle of its own")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Result(jobs / wall, cpu / jobs * 1e6)


async def measure(address: str, *, jobs: int, size: int, concurrency: int, executor: str) -> Result:
    """``jobs`` foreground echo jobs, ``concurrency`` in flight, through the libraries.

    ``executor="batch"`` measures ``measure_batch`` instead.
    """
    if executor == "batch":
        return await measure_batch(address, jobs=jobs, size=size)
    worker = AsyncWorker(
        address,
        concurrency=concurrency,
        executor=None if executor in ("none", "async") else executor,  # type: ignore[arg-type]
    )
    worker.register("lib_echo", _echo_async if executor == "async" else _echo)
    runner = asyncio.create_task(worker.run(install_signal_handlers=False))
    payload = os.urandom(size)
    try:
        async with AsyncClient(address) as client:
            assert await client.submit("lib_echo", payload) == payload  # warm up
            queue = iter(range(jobs))

            async def lane() -> None:
                for _ in queue:
                    if await client.submit("lib_echo", payload) != payload:
                        raise AssertionError("echo came back different")

            before = resource.getrusage(resource.RUSAGE_SELF)
            started = time.perf_counter()
            await asyncio.gather(*(lane() for _ in range(concurrency)))
            wall = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        await worker.stop(graceful=False)
        runner.cancel()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Result(jobs / wall, cpu / jobs * 1e6)


def _run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--jobs", type=int, default=4000)
    parser.add_argument("-r", "--repeats", type=int, default=3)
    parser.add_argument("-c", "--concurrency", type=int, default=4)
    parser.add_argument("-s", "--servers", default="gearshift gearmand")
    parser.add_argument("--executors", default="thread none async batch")
    parser.add_argument("--sizes", default="100 1048576")
    args = parser.parse_args(argv)
    print(
        "| server | payload | executor | jobs/s | client+worker CPU us/job |\n|---|---|---|---|---|"
    )
    for name in args.servers.split():
        for size in (int(s) for s in args.sizes.split()):
            jobs = args.jobs if size < 65536 else max(args.jobs // 20, 20)
            for executor in args.executors.split():
                if executor == "batch" and size >= 65536:
                    continue  # the queue would hold jobs x size bytes
                runs = []
                for _ in range(args.repeats):
                    with server(SERVERS[name]) as address:
                        runs.append(
                            _run(
                                measure(
                                    address,
                                    jobs=jobs,
                                    size=size,
                                    concurrency=args.concurrency,
                                    executor=executor,
                                )
                            )
                        )
                rate = statistics.median(r.jobs_per_s for r in runs)
                cpu = statistics.median(r.cpu_us_per_job for r in runs)
                print(f"| {name} | {size:,} B | {executor} | {rate:,.0f} | {cpu:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
