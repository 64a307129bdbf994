"""Cross-language: libgearman's gearman tool as worker for our clients, and as client of ours."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from gearshift import AsyncClient, Client, WorkerJob
from gearshift.errors import JobFailed
from tests.client.conftest import make_worker, running
from tests.client.helpers import await_until
from tests.procs import ServerProcess

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("gearman") is None, reason="libgearman tools not installed"),
]


@contextmanager
def gearman_worker(server: ServerProcess, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        ["gearman", "-h", "127.0.0.1", "-p", str(server.port), "-w", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


async def gearman_client(server: ServerProcess, *args: str) -> tuple[int, bytes]:
    proc = await asyncio.create_subprocess_exec(
        "gearman",
        "-h",
        "127.0.0.1",
        "-p",
        str(server.port),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out


async def test_libgearman_worker_serves_our_clients(server: ServerProcess) -> None:
    with (
        gearman_worker(server, "-f", "rev", "--", "rev"),
        gearman_worker(server, "-n", "-f", "lines", "--", "cat"),
    ):
        async with AsyncClient(server.address) as client:
            assert await client.submit("rev", b"hello\n", timeout=20) == b"olleh\n"
            # -n: one WORK_DATA per output line, then an empty WORK_COMPLETE.  (This
            # libgearman build resends the output so far with each line.)
            job = await client.submit_job("lines", b"a\nb\nc\n")
            assert await job.result(timeout=20) == b""
            assert len(job.data_chunks) == 3
            assert [c[-2:] for c in job.data_chunks] == [b"a\n", b"b\n", b"c\n"]
            results = await asyncio.gather(
                *(client.submit("rev", f"{i}x\n", timeout=30) for i in range(20))
            )
            assert results == [f"{i}x"[::-1].encode() + b"\n" for i in range(20)]
            handle = await client.submit_background("rev", b"background\n")

            async def finished() -> bool:
                return not (await client.get_status(handle)).known

            await await_until(finished)
        with Client(server.address) as blocking:
            assert blocking.submit("rev", b"sync\n", timeout=20) == b"cnys\n"


async def test_our_worker_serves_libgearman_client(server: ServerProcess) -> None:
    seen: list[tuple[str, bytes]] = []

    async def shout(job: WorkerJob[bytes]) -> bytes:
        seen.append((job.unique, job.data))
        job.send_data(b"partial ")
        return job.data.upper()

    async def broken(job: WorkerJob[bytes]) -> bytes:
        raise JobFailed(job.handle)

    async with running(make_worker(server.address, {"shout": shout, "broken": broken})):
        code, out = await gearman_client(server, "-f", "shout", "hello")
        assert code == 0
        assert out == b"partial HELLO"
        code, out = await gearman_client(server, "-I", "-u", "my-unique", "-f", "shout", "high")
        assert code == 0 and out.endswith(b"HIGH")
        assert ("my-unique", b"high") in seen
        code, _ = await gearman_client(server, "-b", "-f", "shout", "background")
        assert code == 0
        await await_until(lambda: any(data == b"background" for _, data in seen))
        # libgearman's CLI reports a failed job on stderr; nothing is printed as a result.
        code, out = await gearman_client(server, "-f", "broken", "x")
        assert b"X" not in out and b"partial" not in out
