"""AsyncWorker(executor="process") and Worker(executor=...) against real servers.

Sync handlers run in spawned child processes; the handlers live in
``tests.client.process_handlers`` because the children import them by name.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gearshift import (
    AsyncClient,
    AsyncWorker,
    Client,
    WorkComplete,
    WorkData,
    Worker,
    WorkerJob,
    WorkException,
    WorkStatus,
    WorkWarning,
)
from gearshift.errors import JobException, JobFailed
from tests.client import process_handlers as h
from tests.client.conftest import make_worker, running
from tests.client.helpers import await_until
from tests.procs import ServerProcess


def _children() -> dict[int, str]:
    """This process's direct children (zombies included): pid -> command line."""
    me = os.getpid()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        # Fields after the ")" closing the command name: state, ppid, ...
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid == me:
            found[int(entry.name)] = cmdline
    return found


def _job_processes() -> set[int]:
    """Children that are job processes (not servers, not multiprocessing's tracker)."""
    return {pid for pid, cmd in _children().items() if "spawn_main" in cmd}


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


async def test_cpu_bound_handler_runs_in_a_reused_child(server: ServerProcess) -> None:
    worker = make_worker(server.address, {"cpu": h.cpu_pid}, executor="process")
    async with running(worker), AsyncClient(server.address) as client:
        first = (await client.submit("cpu", b"200000", timeout=30)).split()
        second = (await client.submit("cpu", b"1000", timeout=30)).split()
        assert int(first[1]) == sum(i * i for i in range(200000))
        assert int(second[1]) == sum(i * i for i in range(1000))
        pid = int(first[0])
        assert pid != os.getpid()
        assert int(second[0]) == pid  # the child is kept between jobs
        assert _job_processes() == {pid}
    assert _gone(pid)
    assert _job_processes() == set()


async def test_updates_arrive_in_order_before_the_result(server: ServerProcess) -> None:
    worker = make_worker(server.address, {"progress": h.progress}, executor="process")
    async with running(worker), AsyncClient(server.address) as client:
        for i in range(3):  # the same order on every run, not only the first
            job = await client.submit_job("progress", str(i))
            assert await job.result(timeout=30) == f"done:{i}".encode()
            data = str(i).encode()
            assert [u async for u in job.updates()] == [
                WorkStatus(1, 3),
                WorkData(b"first"),
                WorkWarning(b"careful"),
                WorkStatus(2, 3),
                WorkData(b"second:" + data),
                WorkComplete(b"done:" + data),
            ]


async def test_errors_match_the_thread_executor(server: ServerProcess) -> None:
    functions = {
        "value": h.raise_value_error,
        "two_arg": h.raise_two_arg_error,
        "fail_call": h.call_fail,
        "job_failed": h.raise_job_failed,
    }
    seen: dict[str, list[Any]] = {}
    for executor in ("thread", "process"):
        outcomes: list[str] = []
        worker = make_worker(
            server.address,
            functions,
            executor=executor,
            after_job=lambda job, outcome, seen_outcomes=outcomes: seen_outcomes.append(outcome),
        )
        async with running(worker), AsyncClient(server.address) as client:
            value = await client.submit_job("value", b"7")
            with pytest.raises(JobException):
                await value.result(timeout=30)
            two_arg = await client.submit_job("two_arg")
            with pytest.raises(JobException):
                await two_arg.result(timeout=30)
            with pytest.raises(JobFailed):
                await client.submit("fail_call", timeout=30)
            with pytest.raises(JobFailed):
                await client.submit("job_failed", timeout=30)
            seen[executor] = [
                [u async for u in value.updates()],
                [u async for u in two_arg.updates()],
                outcomes,
            ]
    assert seen["process"] == seen["thread"]
    assert seen["process"][0] == [WorkException(b"ValueError: bad input b'7'")]
    assert seen["process"][1] == [
        WorkException(b"tests.client.process_handlers.TwoArgError: left/right")
    ]
    assert seen["process"][2] == ["exception", "exception", "fail", "fail"]


async def test_timeout_kills_the_child_and_the_slot_is_reused(server: ServerProcess) -> None:
    worker = AsyncWorker(server.address, executor="process")
    worker.register("spin", h.spin_forever, timeout=0.5)
    worker.register("cpu", h.cpu_pid)
    async with running(worker), AsyncClient(server.address) as client:
        started = time.monotonic()
        job = await client.submit_job("spin")
        with pytest.raises(JobFailed):
            await job.result(timeout=30)
        assert time.monotonic() - started < 5
        pid = int(job.data_chunks[0])
        await await_until(lambda: _gone(pid), limit=5)  # killed and reaped
        # The slot is free again, and a fresh child runs the next job.
        result = await client.submit("cpu", b"10", timeout=30)
        assert int(result.split()[0]) not in (pid, os.getpid())
    assert _job_processes() == set()


@pytest.mark.parametrize("how", [b"exit", b"segv"])
async def test_child_that_dies_fails_its_job_and_is_replaced(
    server: ServerProcess, how: bytes
) -> None:
    worker = make_worker(server.address, {"die": h.exit_hard, "cpu": h.cpu_pid}, executor="process")
    async with running(worker), AsyncClient(server.address) as client:
        job = await client.submit_job("die", how)
        with pytest.raises(JobException) as raised:
            await job.result(timeout=30)
        pid = int(job.data_chunks[0])
        text = raised.value.payload.decode()
        assert text.startswith("ChildProcessError: ")
        assert f"pid {pid}" in text
        assert ("exited with code 3" if how == b"exit" else "signal SIGSEGV") in text
        assert _gone(pid)
        result = await client.submit("cpu", b"10", timeout=30)
        assert int(result.split()[0]) != pid


async def test_concurrency_two_runs_two_children_at_once(server: ServerProcess) -> None:
    worker = make_worker(
        server.address, {"timed": h.timed}, executor="process", concurrency=2, codec="json"
    )
    async with running(worker), AsyncClient(server.address, codec="json") as client:
        jobs = [await client.submit_job("timed", {"sleep": 1.0, "n": i}) for i in range(2)]
        results = await client.gather(*jobs, timeout=30)
    assert [r["data"]["n"] for r in results] == [0, 1]  # decoded by the codec in the child
    assert len({r["pid"] for r in results}) == 2
    # Both were running at the same moment.
    assert max(r["start"] for r in results) < min(r["end"] for r in results)
    assert _job_processes() == set()


async def test_unpicklable_handler_fails_its_job_not_the_worker(
    server: ServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    suffix = b"!"

    def closure(job: WorkerJob[bytes]) -> bytes:
        return job.data + suffix

    worker = make_worker(
        server.address,
        {"closure": closure, "lambda": lambda job: job.data, "cpu": h.cpu_pid},
        executor="process",
    )
    warned = [r.getMessage() for r in caplog.records if "cannot be pickled" in r.getMessage()]
    assert len(warned) == 2  # told at register time, not only when a job comes
    async with running(worker), AsyncClient(server.address) as client:
        for name in ("closure", "lambda"):
            with pytest.raises(JobException) as raised:
                await client.submit(name, b"x", timeout=30)
            text = raised.value.payload.decode()
            assert text.startswith("TypeError: ")
            assert f"handler for {name!r} cannot run in a child process" in text
        # The worker carries on.
        assert int((await client.submit("cpu", b"10", timeout=30)).split()[0]) != os.getpid()


async def test_async_handlers_stay_on_the_loop(server: ServerProcess) -> None:
    async def where(job: WorkerJob[bytes]) -> bytes:
        return str(os.getpid()).encode()

    worker = make_worker(server.address, {"where": where}, executor="process")
    async with running(worker), AsyncClient(server.address) as client:
        assert await client.submit("where", timeout=30) == str(os.getpid()).encode()
    assert _job_processes() == set()


async def test_children_ignore_sigint(server: ServerProcess) -> None:
    # Ctrl-C reaches the whole process group; the worker, not the child, decides.
    worker = make_worker(server.address, {"sleep": h.sleep_pid}, executor="process")
    async with running(worker), AsyncClient(server.address) as client:
        job = await client.submit_job("sleep", b"1.0")
        await await_until(lambda: bool(job.data_chunks), limit=30)
        pid = int(job.data_chunks[0])
        os.kill(pid, signal.SIGINT)
        assert await job.result(timeout=30) == str(pid).encode()


async def test_immediate_stop_kills_a_busy_child(server: ServerProcess) -> None:
    worker = make_worker(server.address, {"spin": h.spin_forever}, executor="process")
    task = asyncio.create_task(worker.run(install_signal_handlers=False))
    async with AsyncClient(server.address) as client:
        job = await client.submit_job("spin")
        await await_until(lambda: bool(job.data_chunks), limit=30)
        pid = int(job.data_chunks[0])
        await worker.stop(graceful=False)
        await asyncio.wait_for(task, 10)
    assert _gone(pid)
    assert _job_processes() == set()


def test_blocking_worker_passes_executor_through(server: ServerProcess) -> None:
    with (
        Worker(server.address, executor="process") as worker,
        Client(server.address) as client,
    ):
        worker.register("cpu", h.cpu_pid)
        job = client.submit_job("cpu", b"100")
        assert worker.work_once(timeout=30) is True
        pid = int(job.result(timeout=30).split()[0])
        assert pid != os.getpid()
        worker.stop()
    assert _gone(pid)
    assert _job_processes() == set()


async def test_executor_none_runs_sync_handlers_on_the_loop_thread(
    server: ServerProcess,
) -> None:
    loop_thread = threading.get_ident()

    def where(job: WorkerJob[bytes]) -> bytes:
        return b"loop" if threading.get_ident() == loop_thread else b"elsewhere"

    def slow(job: WorkerJob[bytes]) -> bytes:
        time.sleep(0.4)
        return b"late"

    worker = make_worker(server.address, {"where": where}, executor=None)
    worker.register("slow", slow, timeout=0.2)
    async with running(worker), AsyncClient(server.address) as client:
        assert await client.submit("where", timeout=30) == b"loop"
        # Nothing can interrupt it, but running past the limit still fails the job.
        with pytest.raises(JobFailed):
            await client.submit("slow", timeout=30)


def test_executor_is_validated() -> None:
    for bad in ("threads", "fork", ""):
        with pytest.raises(ValueError, match="executor"):
            AsyncWorker("127.0.0.1:1", executor=bad)  # type: ignore[arg-type]
