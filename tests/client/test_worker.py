"""AsyncWorker and Worker against real servers (gearshift and C++ gearmand)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest

from gearshift import (
    AdminClient,
    AsyncAdminClient,
    AsyncClient,
    AsyncWorker,
    Client,
    Worker,
    WorkerJob,
)
from gearshift.errors import BusyError, ClosedError, JobFailed
from tests.client.conftest import make_worker, running
from tests.client.helpers import await_until, wait_until
from tests.conftest import ServerFactory
from tests.procs import ServerProcess


async def _functions_of(admin: AsyncAdminClient, client_id: str) -> set[str]:
    return {f for w in await admin.workers() if w.client_id == client_id for f in w.functions}


async def test_concurrency_limits_jobs_in_flight(server: ServerProcess) -> None:
    active = 0
    peak = 0
    lock = threading.Lock()

    def tracked(job: WorkerJob[bytes]) -> bytes:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.1)
        with lock:
            active -= 1
        return job.data

    async def tracked_async(job: WorkerJob[bytes]) -> bytes:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.1)
        active -= 1
        return job.data

    async with AsyncClient(server.address) as client, AsyncAdminClient(server.address) as admin:
        for handler, concurrency in ((tracked, 3), (tracked_async, 5)):
            active = peak = 0
            jobs = [await client.submit_job("tracked", str(i)) for i in range(15)]
            worker = make_worker(server.address, {"tracked": handler}, concurrency=concurrency)
            async with running(worker):

                async def running_count() -> int:
                    rows = {r.name: r for r in await admin.status()}
                    return rows["tracked"].running if "tracked" in rows else 0

                # Never more jobs taken from the server than free slots.
                for _ in range(5):
                    assert await running_count() <= concurrency
                    await asyncio.sleep(0.05)
                results = await client.gather(*jobs, timeout=30)
            assert results == [str(i).encode() for i in range(15)]
            assert peak == concurrency


async def test_registration_calls_are_visible_to_admin(server: ServerProcess) -> None:
    worker = AsyncWorker(server.address, client_id="reg-worker")

    @worker.function
    async def alpha(job: WorkerJob[bytes]) -> bytes:
        return b"a"

    @worker.function("beta", timeout=5)
    def beta_handler(job: WorkerJob[bytes]) -> bytes:
        return b"b"

    assert sorted(worker.functions) == ["alpha", "beta"]
    async with running(worker), AsyncAdminClient(server.address) as admin:

        async def registered(names: set[str], client_id: str = "reg-worker") -> bool:
            return await _functions_of(admin, client_id) == names

        await await_until(lambda: registered({"alpha", "beta"}))
        worker.unregister("alpha")
        await await_until(lambda: registered({"beta"}))
        worker.register("gamma", alpha)
        await await_until(lambda: registered({"beta", "gamma"}))
        worker.set_client_id("renamed")
        await await_until(lambda: registered({"beta", "gamma"}, "renamed"))
        worker.reset_abilities()
        await await_until(lambda: registered(set(), "renamed"))
        assert worker.functions == []
        with pytest.raises(BusyError):
            await worker.run()
        with pytest.raises(BusyError):
            await worker.work_once(0.1)


async def test_timeout_is_enforced_locally(server: ServerProcess) -> None:
    async def sleepy(job: WorkerJob[bytes]) -> bytes:
        await asyncio.sleep(30)
        return b"never"

    def sleepy_thread(job: WorkerJob[bytes]) -> bytes:
        time.sleep(1.5)
        job.send_data(b"too late")  # dropped: the job already failed
        return b"too late"

    worker = AsyncWorker(server.address, concurrency=2)
    worker.register("sleepy", sleepy, timeout=0.3)
    worker.register("sleepy_thread", sleepy_thread, timeout=0.3)
    async with running(worker), AsyncClient(server.address) as client:
        started = time.monotonic()
        with pytest.raises(JobFailed):
            await client.submit("sleepy", timeout=20)
        job = await client.submit_job("sleepy_thread")
        with pytest.raises(JobFailed):
            await job.result(timeout=20)
        assert job.data_chunks == []
        assert time.monotonic() - started < 1.4


async def test_graceful_stop_finishes_running_jobs(server: ServerProcess) -> None:
    started = asyncio.Event()

    async def long(job: WorkerJob[bytes]) -> bytes:
        started.set()
        await asyncio.sleep(0.5)
        return b"finished"

    worker = make_worker(server.address, {"long": long}, client_id="graceful")
    task = asyncio.create_task(worker.run(install_signal_handlers=False))
    async with AsyncClient(server.address) as client, AsyncAdminClient(server.address) as admin:
        job = await client.submit_job("long")
        await asyncio.wait_for(started.wait(), 20)
        await worker.stop()
        assert await job.result(timeout=5) == b"finished"
        await asyncio.wait_for(task, 5)
        # The worker has closed its connection; the server notices a moment later.
        for _ in range(100):
            if "graceful" not in {w.client_id for w in await admin.workers()}:
                break
            await asyncio.sleep(0.05)
        assert "graceful" not in {w.client_id for w in await admin.workers()}
        # Stopped: no more jobs are taken.
        queued = await client.submit_job("long")
        await asyncio.sleep(0.3)
        assert not queued.done()
        with pytest.raises(ClosedError):
            await worker.run()


async def test_immediate_stop_leaves_the_job_to_another_worker(server: ServerProcess) -> None:
    first_started = asyncio.Event()

    async def stuck(job: WorkerJob[bytes]) -> bytes:
        first_started.set()
        await asyncio.sleep(30)
        return b"first"

    async def quick(job: WorkerJob[bytes]) -> bytes:
        return b"second"

    async with AsyncClient(server.address) as client:
        job = await client.submit_job("handover", b"x")
        first = make_worker(server.address, {"handover": stuck})
        task = asyncio.create_task(first.run(install_signal_handlers=False))
        await asyncio.wait_for(first_started.wait(), 20)
        await first.stop(graceful=False)
        await asyncio.wait_for(task, 10)
        # The server requeued the job when the connection dropped.
        async with running(make_worker(server.address, {"handover": quick})):
            assert await job.result(timeout=20) == b"second"


async def test_work_once(server: ServerProcess) -> None:
    calls: list[bytes] = []

    def record(job: WorkerJob[bytes]) -> bytes:
        calls.append(job.data)
        return job.data

    worker = make_worker(server.address, {"once": record})
    async with AsyncClient(server.address) as client:
        assert await worker.work_once(timeout=0.3) is False
        await client.submit_background("once", b"1")
        await client.submit_background("once", b"2")
        assert await worker.work_once(timeout=20) is True
        assert await worker.work_once(timeout=20) is True
        assert calls == [b"1", b"2"]
        # Sleeping on PRE_SLEEP, woken by NOOP when a job arrives.
        waiting = asyncio.create_task(worker.work_once(timeout=20))
        await asyncio.sleep(0.3)
        job = await client.submit_job("once", b"3")
        assert await waiting is True
        assert await job == b"3"
        await worker.aclose()


async def test_reconnects_and_reregisters_after_restart(make_any_server: ServerFactory) -> None:
    srv = make_any_server()
    worker = AsyncWorker(srv.address, client_id="phoenix", reconnect_backoff=(0.05, 0.5))
    worker.register("rev", lambda job: job.data[::-1])
    async with running(worker):
        async with AsyncClient(srv.address) as client:
            assert await client.submit("rev", b"abc", timeout=20) == b"cba"
        srv.kill()
        await await_until(lambda: not worker.connected)
        srv.start()  # same port
        await await_until(lambda: bool(worker.connected))
        async with AsyncClient(srv.address) as client, AsyncAdminClient(srv.address) as admin:
            assert await client.submit("rev", b"after", timeout=20) == b"retfa"
            assert await _functions_of(admin, "phoenix") == {"rev"}


async def test_one_worker_many_servers(make_any_server: ServerFactory) -> None:
    servers = [make_any_server(), make_any_server()]
    seen: set[bytes] = set()

    async def which(job: WorkerJob[bytes]) -> bytes:
        seen.add(job.data)
        return job.data

    worker = make_worker([s.address for s in servers], {"which": which}, concurrency=2)
    async with running(worker):
        assert len(worker.connected) == 2
        for srv in servers:
            async with AsyncClient(srv.address) as client:
                # The worker sleeps on both; a submit on either wakes it.
                await asyncio.sleep(0.2)
                assert await client.submit("which", srv.address, timeout=20) == srv.address.encode()
    assert len(seen) == 2


def test_blocking_worker_work_once_and_stop(server: ServerProcess) -> None:
    with Worker(server.address, client_id="blocking") as worker, Client(server.address) as client:
        worker.register("double", lambda job: job.data * 2)

        @worker.function("halve")
        def halve(job: WorkerJob[bytes]) -> bytes:
            return job.data[: len(job.data) // 2]

        assert sorted(worker.functions) == ["double", "halve"]
        assert worker.work_once(timeout=0.2) is False
        job = client.submit_job("double", b"ab")
        assert worker.work_once(timeout=20) is True
        assert job.result(timeout=20) == b"abab"
        worker.unregister("halve")
        worker.set_client_id("blocking2")
        runner = threading.Thread(target=worker.run)
        runner.start()
        assert client.submit("double", b"x", timeout=20) == b"xx"
        worker.reset_abilities()
        worker.stop()
        runner.join(20)
        assert not runner.is_alive()
        assert worker.jobs_done == 2 and worker.connected == []


WORKER_SCRIPT = """
import sys, time
from gearshift import Worker

worker = Worker(sys.argv[1])

@worker.function("term")
def term(job):
    print("started", flush=True)
    time.sleep(float(sys.argv[2]))
    return b"finished after the signal"

print("ready", flush=True)
worker.run()
print("exited cleanly", flush=True)
"""

ASYNC_WORKER_SCRIPT = """
import asyncio, sys
from gearshift import AsyncWorker

async def main():
    worker = AsyncWorker(sys.argv[1])

    @worker.function("term")
    async def term(job):
        print("started", flush=True)
        await asyncio.sleep(float(sys.argv[2]))
        return b"finished after the signal"

    task = asyncio.create_task(worker.run())
    while not worker.connected:
        await asyncio.sleep(0.01)
    print("ready", flush=True)
    await task
    print("exited cleanly", flush=True)

asyncio.run(main())
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "signals", "finishes"),
    [
        (WORKER_SCRIPT, [signal.SIGTERM], True),
        (ASYNC_WORKER_SCRIPT, [signal.SIGTERM], True),
        (ASYNC_WORKER_SCRIPT, [signal.SIGINT], True),
        (WORKER_SCRIPT, [signal.SIGINT, signal.SIGINT], False),
        (ASYNC_WORKER_SCRIPT, [signal.SIGINT, signal.SIGINT], False),
    ],
    ids=["blocking-term", "async-term", "async-int", "blocking-int-int", "async-int-int"],
)
def test_signals_stop_run(
    make_gearmand: ServerFactory, tmp_path: Any, script: str, signals: list[int], finishes: bool
) -> None:
    # Signal handling is the worker's own business: one server kind is enough.
    server = make_gearmand()
    path = tmp_path / "worker.py"
    path.write_text(textwrap.dedent(script))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, str(path), server.address, "1.0" if finishes else "30"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        with Client(server.address) as client:
            job = client.submit_job("term")
            assert proc.stdout.readline().strip() == "started"
            for sig in signals:
                proc.send_signal(sig)
                time.sleep(0.1)
            if finishes:
                # Graceful: the running job completes before the worker exits.
                assert job.result(timeout=20) == b"finished after the signal"
            assert proc.wait(20) == 0
            assert proc.stdout.read().strip() == "exited cleanly"
            if not finishes:
                # Immediate: the connection dropped and the server requeued the job.
                with AdminClient(server.address) as admin:
                    rows = {r.name: r for r in admin.status()}
                    assert rows["term"].total == 1 and rows["term"].running == 0
                job.cancel()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def test_handler_exceptions_and_fail_paths(server: ServerProcess) -> None:
    async def not_encodable(job: WorkerJob[bytes]) -> Any:
        return 12345  # the bytes codec cannot encode an int

    def unknown_later(job: WorkerJob[bytes]) -> bytes:
        raise RuntimeError("multi\nline")

    worker = make_worker(server.address, {"not_encodable": not_encodable, "rt": unknown_later})
    async with running(worker), AsyncClient(server.address) as client:
        from gearshift.errors import JobException

        with pytest.raises(JobException) as info:
            await client.submit("not_encodable", timeout=20)
        assert info.value.payload.startswith(b"TypeError: payload must be bytes or str")
        with pytest.raises(JobException) as info:
            await client.submit("rt", timeout=20)
        assert info.value.payload == b"RuntimeError: multi\nline"


def test_wait_until_helper_fails_when_condition_never_holds() -> None:
    with pytest.raises(AssertionError):
        wait_until(lambda: False, timeout=0.05)


async def test_hooks_see_every_job_and_outcome(server: ServerProcess) -> None:
    events: list[Any] = []

    async def ok(job: WorkerJob[bytes]) -> bytes:
        return b"ok"

    def bad(job: WorkerJob[bytes]) -> bytes:
        raise ValueError("hook me")

    async def after(job: WorkerJob[bytes], outcome: str) -> None:
        events.append(("after", job.function, outcome))

    def broken_hook(job: WorkerJob[bytes]) -> None:
        events.append(("before", job.function, job.data))
        raise RuntimeError("hooks may fail without harm")

    worker = AsyncWorker(
        server.address,
        on_startup=lambda: events.append("startup"),
        on_shutdown=lambda: events.append("shutdown"),
        before_job=broken_hook,
        after_job=after,
        on_error=lambda exc: events.append(("error", repr(exc))),
    )
    worker.register("ok", ok)
    worker.register("bad", bad)
    async with running(worker), AsyncClient(server.address) as client:
        assert await client.submit("ok", b"1", timeout=20) == b"ok"
        from gearshift.errors import JobException

        with pytest.raises(JobException):
            await client.submit("bad", b"2", timeout=20)
    assert events == [
        "startup",
        ("before", "ok", b"1"),
        ("after", "ok", "complete"),
        ("before", "bad", b"2"),
        ("error", "ValueError('hook me')"),
        ("after", "bad", "exception"),
        "shutdown",
    ]
