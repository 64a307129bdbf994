"""How packets leave the libraries: what is sent in one loop pass shares one write."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

from gearshift import AsyncClient, AsyncWorker, JobHandle, WorkerJob
from gearshift.protocol.codec import Decoder, Packet, encode_response
from gearshift.protocol.packets import PacketType as T
from tests.client.conftest import make_worker, running
from tests.procs import ServerProcess


class _FakeServer(threading.Thread):
    """A blocking server thread that records the worker's packets by the recv that
    brought them: it reads as soon as bytes arrive, in parallel with the worker's loop."""

    def __init__(self, jobs: int) -> None:
        super().__init__(daemon=True)
        self.jobs = jobs
        self.reads: list[list[int]] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sleeping = threading.Event()

    def run(self) -> None:
        conn, _ = self.listener.accept()
        decoder = Decoder(allow_admin=False)
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                packets = [p for p in decoder.feed(data) if isinstance(p, Packet)]
                self.reads.append([p.type for p in packets])
                for p in packets:
                    if p.type == T.GRAB_JOB_UNIQ and self.jobs:
                        self.jobs -= 1
                        handle = b"H:fake:%d" % self.jobs
                        conn.sendall(
                            encode_response(T.JOB_ASSIGN_UNIQ, handle, b"f", b"", b"payload")
                        )
                    elif p.type == T.GRAB_JOB_UNIQ:
                        conn.sendall(encode_response(T.NO_JOB))
                    elif p.type == T.PRE_SLEEP:
                        self.sleeping.set()


async def test_result_and_next_grab_leave_in_one_write() -> None:
    fake = _FakeServer(jobs=5)
    fake.start()

    async def echo(job: WorkerJob[bytes]) -> bytes:
        return job.data

    try:
        async with running(make_worker(f"127.0.0.1:{fake.port}", {"f": echo})):
            assert await asyncio.to_thread(fake.sleeping.wait, 20)
    finally:
        fake.listener.close()
    flat = [t for read in fake.reads for t in read]
    assert flat.count(T.WORK_COMPLETE) == 5
    # Every result arrived in the same read as the GRAB_JOB_UNIQ that followed it.
    for read in fake.reads:
        if T.WORK_COMPLETE in read:
            assert read[read.index(T.WORK_COMPLETE) + 1 :][:1] == [T.GRAB_JOB_UNIQ], fake.reads


async def test_after_job_hook_does_not_hold_back_the_result(server: ServerProcess) -> None:
    # The hook waits until the client has the result: a result held until the hook
    # returned would never arrive.
    srv = server
    delivered = asyncio.Event()
    hook_done = asyncio.Event()

    async def after(job: WorkerJob[Any], outcome: str) -> None:
        await asyncio.wait_for(delivered.wait(), 20)
        hook_done.set()

    async def echo(job: WorkerJob[bytes]) -> bytes:
        return job.data

    worker: AsyncWorker = make_worker(srv.address, {"echo": echo}, after_job=after)
    async with running(worker), AsyncClient(srv.address) as client:
        assert await client.submit("echo", b"now", timeout=20) == b"now"
        delivered.set()
        await asyncio.wait_for(hook_done.wait(), 20)


class _CreatingServer(threading.Thread):
    """A blocking server thread answering every submit with JOB_CREATED, recording how
    many SUBMIT_JOB_BG packets each recv brought."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.reads: list[int] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]

    def run(self) -> None:
        conn, _ = self.listener.accept()
        decoder = Decoder(allow_admin=False)
        n = 0
        with conn:
            while data := conn.recv(1 << 20):
                packets = [p for p in decoder.feed(data) if isinstance(p, Packet)]
                submits = [p for p in packets if p.type == T.SUBMIT_JOB_BG]
                self.reads.append(len(submits))
                replies = []
                for _ in submits:
                    n += 1
                    replies.append(encode_response(T.JOB_CREATED, b"H:fake:%d" % n))
                conn.sendall(b"".join(replies))


async def test_submits_made_in_one_pass_leave_in_one_write() -> None:
    fake = _CreatingServer()
    fake.start()
    try:
        async with AsyncClient(f"127.0.0.1:{fake.port}") as client:
            handles = await asyncio.gather(
                *(client.submit_background("f", b"x" * 100) for _ in range(200))
            )
            assert all(isinstance(h, JobHandle) for h in handles)
            assert len(set(handles)) == 200
            # One more, alone: it is not held back waiting for company.
            await asyncio.wait_for(client.submit_background("f", b"late"), 5)
    finally:
        fake.listener.close()
    reads = [n for n in fake.reads if n]
    # The task that opened the connection sends first; the 199 that waited for it
    # resume together, in one pass: one write, not one each.
    assert sum(reads) == 201 and len(reads) <= 3 and reads[-1] == 1, fake.reads


def test_which_results_may_wait_for_the_next_pass() -> None:
    def plain(job: WorkerJob[bytes]) -> bytes:
        return job.data

    async def coro(job: WorkerJob[bytes]) -> bytes:
        return job.data

    def hook(job: WorkerJob[Any], outcome: str) -> None:
        pass

    small, large = b"r" * 100, b"r" * (64 * 1024)
    threaded = make_worker("127.0.0.1:1", {"p": plain, "c": coro})
    inline = make_worker("127.0.0.1:1", {"p": plain, "c": coro}, executor=None)
    hooked = make_worker("127.0.0.1:1", {"c": coro}, after_job=hook)
    fns = threaded._functions
    assert threaded._may_cork(fns[b"p"], small) and threaded._may_cork(fns[b"c"], small)
    assert not threaded._may_cork(fns[b"c"], large)  # joining would copy it
    # A plain handler on the loop: another job's handler may run before the next pass.
    assert not inline._may_cork(inline._functions[b"p"], small)
    assert inline._may_cork(inline._functions[b"c"], small)
    assert not hooked._may_cork(hooked._functions[b"c"], small)
