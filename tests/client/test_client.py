"""AsyncClient and Client against real servers (gearshift and C++ gearmand)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import pytest

from gearshift import (
    AdminClient,
    AsyncAdminClient,
    AsyncClient,
    Client,
    JobHandle,
    JobRequest,
    JobState,
    Priority,
    WorkComplete,
    WorkData,
    WorkerJob,
    WorkException,
    WorkFail,
    WorkStatus,
    WorkWarning,
)
from gearshift.codecs import JsonCodec
from gearshift.errors import (
    ClosedError,
    JobException,
    JobFailed,
    JobTimeout,
    LocalProtocolError,
    QueueFull,
    UnknownOption,
)
from tests.client.conftest import make_worker, running
from tests.client.helpers import await_until
from tests.procs import ServerProcess


async def reverse(job: WorkerJob[bytes]) -> bytes:
    return job.data[::-1]


async def chatty(job: WorkerJob[bytes]) -> bytes:
    job.send_status(1, 3)
    job.send_data(b"chunk1")
    job.send_warning(b"careful")
    job.send_status(2, 3)
    job.send_data(b"chunk\0two")
    return b"done:" + job.data


def blocking_upper(job: WorkerJob[bytes]) -> bytes:
    # Runs in the worker's thread pool; send_* are thread-safe.
    job.send_data(b"from-thread")
    return job.data.upper()


async def raises(job: WorkerJob[bytes]) -> bytes:
    raise ValueError("bad input: " + job.data.decode())


async def fails(job: WorkerJob[bytes]) -> bytes:
    raise JobFailed(job.handle)


def fails_by_call(job: WorkerJob[bytes]) -> bytes:
    job.fail()
    return b"ignored"


async def slow(job: WorkerJob[bytes]) -> bytes:
    await asyncio.sleep(float(job.data or b"1"))
    return b"slow"


FUNCTIONS: dict[str, Any] = {
    "reverse": reverse,
    "chatty": chatty,
    "upper": blocking_upper,
    "raises": raises,
    "fails": fails,
    "fails_by_call": fails_by_call,
    "slow": slow,
}


async def test_foreground_results_and_update_stream(server: ServerProcess) -> None:
    seen: list[tuple[str, Any]] = []
    async with (
        running(make_worker(server.address, FUNCTIONS, concurrency=4)),
        AsyncClient(server.address) as client,
    ):
        assert await client.submit("reverse", b"Hello World!") == b"!dlroW olleH"
        assert await client.submit("reverse", "text in") == b"ni txet"
        assert await client.submit(b"reverse", b"") == b""
        job = await client.submit_job(
            "chatty",
            b"x",
            on_data=lambda d: seen.append(("data", d)),
            on_warning=lambda d: seen.append(("warning", d)),
            on_status=lambda n, d: seen.append(("status", (n, d))),
        )
        assert job.handle is not None and job.handle.server == client.servers[0]
        assert job.state in (JobState.CREATED, JobState.RUNNING)
        assert await job == b"done:x"
        assert job.done() and job.state is JobState.COMPLETE and job.exception() is None
        assert job.data_chunks == [b"chunk1", b"chunk\0two"]
        assert job.warnings == [b"careful"]
        assert job.status == (2, 3)
        assert [u async for u in job.updates()] == [
            WorkStatus(1, 3),
            WorkData(b"chunk1"),
            WorkWarning(b"careful"),
            WorkStatus(2, 3),
            WorkData(b"chunk\0two"),
            WorkComplete(b"done:x"),
        ]
        assert seen == [
            ("status", (1, 3)),
            ("data", b"chunk1"),
            ("warning", b"careful"),
            ("status", (2, 3)),
            ("data", b"chunk\0two"),
        ]
        threaded = await client.submit_job("upper", b"abc")
        assert await threaded.result(timeout=20) == b"ABC"
        assert threaded.data_chunks == [b"from-thread"]


async def test_priorities_uniques_and_php_names(server: ServerProcess) -> None:
    async with (
        running(make_worker(server.address, FUNCTIONS, concurrency=2)),
        AsyncClient(server.address) as client,
    ):
        for priority in Priority:
            assert await client.submit("reverse", b"ab", priority=priority) == b"ba"
        assert await client.submit("reverse", b"ab", unique="u-1") == b"ba"
        jobs = await client.submit_many(
            [JobRequest("reverse", b"hi", priority=Priority.HIGH), ("reverse", b"lo")]
        )
        assert await client.gather(*jobs, timeout=20) == [b"ih", b"ol"]
        assert await client.ping() >= 0
        assert await client.do_normal("reverse", b"1a") == b"a1"
        assert await client.do_high("reverse", b"2a") == b"a2"
        assert await client.do_low("reverse", b"3a") == b"a3"
        handles = [
            await client.do_background("reverse", b"x"),
            await client.do_high_background("reverse", b"x"),
            await client.do_low_background("reverse", b"x"),
        ]
        assert len(set(handles)) == 3
        for handle in handles:
            status = await client.job_status(handle)
            assert status.handle == handle


async def test_coalesced_foreground_jobs_share_one_run(server: ServerProcess) -> None:
    runs = 0

    async def counted(job: WorkerJob[bytes]) -> bytes:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.5)
        return b"once"

    async with AsyncClient(server.address) as client:
        first = await client.submit_job("counted", b"a", unique="same-key")
        second = await client.submit_job("counted", b"b", unique="same-key")
        assert first.handle == second.handle
        status = await client.get_status_by_unique("same-key", function="counted")
        assert status.known and status.waiting == 2
        async with running(make_worker(server.address, {"counted": counted})):
            assert await client.gather(first, second, timeout=20) == [b"once", b"once"]
        assert runs == 1


async def test_failures_map_to_exceptions(server: ServerProcess) -> None:
    async with (
        running(make_worker(server.address, FUNCTIONS, concurrency=2)),
        AsyncClient(server.address) as client,
        AsyncClient(server.address, exceptions=False) as no_exc,
    ):
        with pytest.raises(JobException) as info:
            await client.submit("raises", b"42")
        assert info.value.payload == b"ValueError: bad input: 42"
        job = await client.submit_job("raises", b"7")
        with pytest.raises(JobException):
            await job
        assert job.state is JobState.EXCEPTION
        assert [u async for u in job.updates()] == [WorkException(b"ValueError: bad input: 7")]
        with pytest.raises(JobFailed):
            await client.submit("fails")
        job = await client.submit_job("fails_by_call")
        with pytest.raises(JobFailed) as failed:
            await job
        assert failed.value.handle == job.handle
        assert [u async for u in job.updates()] == [WorkFail()]
        # Without the exceptions option gearmand turns WORK_EXCEPTION into "handle\0" WORK_FAIL.
        with pytest.raises(JobFailed) as failed:
            await no_exc.submit("raises", b"1")
        assert "\0" not in failed.value.handle


async def test_timeouts_and_cancel(server: ServerProcess) -> None:
    async with (
        running(make_worker(server.address, FUNCTIONS, concurrency=4)),
        AsyncClient(server.address, timeout=30) as client,
    ):
        started = time.monotonic()
        with pytest.raises(JobTimeout):
            await client.submit("slow", b"1", timeout=0.3)
        with pytest.raises(TimeoutError):  # JobTimeout is also the builtin TimeoutError
            await client.submit("slow", b"1", timeout=0.3)
        assert time.monotonic() - started < 0.95
        job = await client.submit_job("slow", b"0.5")
        with pytest.raises(JobTimeout):
            await job.result(timeout=0.05)
        assert await job.result(timeout=20) == b"slow"  # the job itself carried on
        job = await client.submit_job("slow", b"0.5")
        assert job.cancel() and job.cancelled() and job.done()
        assert [u async for u in job.updates()] == []
        # The connection stays usable after abandoned jobs finish.
        assert await client.submit("reverse", b"ok") == b"ko"


async def test_background_status_uuid_and_epoch(server: ServerProcess) -> None:
    release = threading.Event()

    def gated(job: WorkerJob[bytes]) -> bytes:
        job.send_status(5, 10)
        release.wait(20)
        return b""

    async with AsyncClient(server.address) as client, AsyncAdminClient(server.address) as admin:
        async with running(make_worker(server.address, {"gated": gated})):
            handle = await client.submit_background("gated", b"x")
            assert handle.server == client.servers[0]

            async def is_running() -> bool:
                status = await client.get_status(handle)
                return status.running and status.numerator == 5

            await await_until(is_running)
            status = await client.get_status(str(handle))  # plain str: asks every server
            assert (status.known, status.running, status.numerator, status.denominator) == (
                True,
                True,
                5,
                10,
            )
            # The default unique is a UUID, visible to admin.
            uniques = await admin.show_unique_jobs()
            assert any(_is_uuid(u) for u in uniques)
            release.set()

            async def gone() -> bool:
                return not (await client.get_status(handle)).known

            await await_until(gone)
        unknown = await client.get_status("H:nowhere:1")
        assert (unknown.known, unknown.running) == (False, False)
        # Epoch job: queued now, runs only once its time has come.
        when = int(time.time()) + 2
        epoch_handle = await client.submit_background("epoch_f", b"e", when=when, unique="ep-1")
        status = await client.get_status_by_unique("ep-1")
        assert status.known and not status.running and status.unique == "ep-1"
        assert any(j.handle == epoch_handle for j in await admin.show_jobs())
        ran_at: list[float] = []

        async def epoch_f(job: WorkerJob[bytes]) -> bytes:
            ran_at.append(time.time())
            return b""

        # gearmand 1.1.20 does not wake sleeping workers at the epoch (#101); a worker
        # that connects after the time grabs it.
        await asyncio.sleep(max(0.0, when - time.time()) + 0.2)
        async with running(make_worker(server.address, {"epoch_f": epoch_f})):
            await await_until(lambda: bool(ran_at))
        assert ran_at[0] >= when
        with pytest.raises(LocalProtocolError):
            await client.submit_background("f", b"", when=when, priority=Priority.HIGH)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


async def test_echo_options_and_server_errors(server: ServerProcess) -> None:
    async with AsyncClient(server.address, client_id="tester") as client:
        assert await client.echo(b"ping\0pong") == b"ping\0pong"
        big = bytes(range(256)) * 4096
        assert await client.echo(big) == big
        await client.set_option("exceptions")
        with pytest.raises(UnknownOption):
            await client.set_option("no-such-option")
        async with AsyncAdminClient(server.address) as admin:
            assert any(w.client_id == "tester" for w in await admin.workers())
            await admin.create_function("limited")  # maxqueue ignores unknown functions
            await admin.maxqueue("limited", 1)
            await client.submit_background("limited", b"1")
            with pytest.raises(QueueFull):
                await client.submit_background("limited", b"2")
        with pytest.raises(LocalProtocolError):
            await client.submit_background("f", b"", unique="u" * 65)
        with pytest.raises(LocalProtocolError):
            await client.submit("bad\0name", b"")
        # The connection is still fine after refused requests.
        assert await client.echo(b"still") == b"still"
    with pytest.raises(ClosedError):
        await client.submit_background("f", b"")


async def test_json_codec_end_to_end(server: ServerProcess) -> None:
    async def add(job: WorkerJob[Any]) -> Any:
        job.send_data({"partial": True})
        return {"sum": sum(job.data["numbers"])}

    async def explode(job: WorkerJob[Any]) -> Any:
        raise KeyError("missing")

    async with (
        running(make_worker(server.address, {"add": add, "explode": explode}, codec="json")),
        AsyncClient(server.address, codec=JsonCodec()) as client,
    ):
        job = await client.submit_job("add", {"numbers": [1, 2, 3]})
        assert await job == {"sum": 6}
        assert job.data_chunks == [{"partial": True}]
        with pytest.raises(JobException) as info:
            await client.submit("explode", None)
        assert JsonCodec().decode(info.value.payload) == {
            "type": "KeyError",
            "message": "'missing'",
        }

    async def mixed(job: WorkerJob[bytes]) -> bytes:
        job.send_data(b"plain text, not JSON")
        return b'{"ok": 1}'

    async def garbage(job: WorkerJob[bytes]) -> bytes:
        return b"{not json"

    async with (
        running(make_worker(server.address, {"mixed": mixed, "garbage": garbage})),
        AsyncClient(server.address, codec="json") as client,
    ):
        # An update the codec cannot read is kept as bytes; the connection carries on.
        job = await client.submit_job("mixed")
        assert await job.result(timeout=20) == {"ok": 1}
        assert job.data_chunks == [b"plain text, not JSON"]
        # A result the codec cannot read fails that job alone.
        with pytest.raises(ValueError):
            await client.submit("garbage", timeout=20)
        assert await client.submit("mixed", timeout=20) == {"ok": 1}


def test_blocking_client(server: ServerProcess) -> None:
    from gearshift import Worker

    with Worker(server.address, concurrency=2) as worker, Client(server.address) as client:
        for name, handler in FUNCTIONS.items():
            worker.register(name, handler)
        runner = threading.Thread(target=worker.run)
        runner.start()
        try:
            assert client.submit("reverse", b"abc") == b"cba"
            done: list[Any] = []
            job = client.submit_job("chatty", b"s")
            job.add_done_callback(lambda j: done.append(j.handle))
            assert job.result(timeout=20) == b"done:s"
            assert job.data_chunks == [b"chunk1", b"chunk\0two"] and job.warnings == [b"careful"]
            assert job.status == (2, 3) and job.state is JobState.COMPLETE and job.done()
            assert list(job.updates())[-1] == WorkComplete(b"done:s")
            assert done == [job.handle] and job.function == "chatty" and job.unique == ""
            with pytest.raises(JobException):
                client.submit("raises", b"x")
            failing = client.submit_job("fails")
            assert isinstance(failing.exception(timeout=20), JobFailed)
            assert not failing.cancelled()
            slow_job = client.submit_job("slow", b"0.3")
            assert slow_job.cancel()
            jobs = [client.submit_job("reverse", str(i)) for i in range(20)]
            assert client.gather(*jobs, timeout=20) == [str(i)[::-1].encode() for i in range(20)]
            handle = client.submit_background("reverse", b"bg", priority=Priority.LOW)
            assert client.get_status(handle).handle == handle
            assert client.get_status_by_unique("nothing-here").known is False
            assert client.job_status(handle).handle == handle
            assert client.job_status_by_unique_key("nothing").known is False
            assert client.echo(b"e") == b"e"
            assert client.ping() >= 0
            client.add_task("reverse", b"t1")
            client.add_task_high("reverse", b"t2")
            client.add_task_low("raises", b"t3")
            client.add_task_background("reverse", b"t4")
            client.add_task_high_background("reverse", b"t5")
            client.add_task_low_background("reverse", b"t6")
            out = client.run_tasks(timeout=20)
            assert out[:2] == [b"1t", b"2t"] and isinstance(out[2], JobException)
            assert all(isinstance(h, JobHandle) for h in out[3:])
            assert client.run_tasks() == []  # the set was emptied
            many = client.submit_many([("reverse", b"ab"), JobRequest("reverse", b"cd")])
            assert [job.result(timeout=20) for job in many] == [b"ba", b"dc"]
            handles = client.submit_many([("reverse", b"x")] * 3, background=True)
            assert len(set(handles)) == 3
            client.set_option("exceptions")
            assert client.do_normal("reverse", b"12") == b"21"
            assert client.do_high("reverse", b"12") == b"21"
            assert client.do_low("reverse", b"12") == b"21"
            assert client.do_background("reverse", b"1")
            assert client.do_high_background("reverse", b"1")
            assert client.do_low_background("reverse", b"1")
            with pytest.raises(JobTimeout):
                client.submit("slow", b"0.5", timeout=0.2)
        finally:
            worker.stop()
            runner.join(30)
    with pytest.raises(ClosedError):
        client.submit("reverse", b"")
    with AdminClient(server.address) as admin:
        assert all("reverse" not in w.functions for w in admin.workers())
