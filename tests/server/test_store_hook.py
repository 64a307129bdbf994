"""The store hook: add before JOB_CREATED, done on every way out, replay, close."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest

from gearshift.errors import StoreError
from gearshift.protocol.packets import Priority
from gearshift.records import StoredJob
from gearshift.store.base import Store
from gearshift.testing import serve
from tests.server.helpers import Raw, T, wait_for, worker


class RecordingStore(Store):
    """A real in-memory persistent store that records every call."""

    name = "recording"
    persistent = True

    def __init__(
        self,
        preload: list[StoredJob] | None = None,
        fail: str | None = None,
        fail_unique: bytes | None = None,
    ) -> None:
        self.fail_unique = fail_unique
        self.in_flight = 0
        self.max_in_flight = 0
        self.rows: dict[int, StoredJob] = {}
        self.calls: list[str] = []
        self.preload = preload or []
        self.fail = fail
        self.gate: asyncio.Event | None = None
        self.closed = False
        self._next = 0

    async def open(self) -> None:
        self.calls.append("open")

    async def add(self, job: StoredJob) -> None:
        self.calls.append(f"add {job.function.decode()} {job.unique.decode()}")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
        finally:
            self.in_flight -= 1
        if self.fail is not None:
            raise StoreError(self.fail)
        if job.unique == self.fail_unique:
            raise StoreError("refused " + job.unique.decode())
        self._next += 1
        job.key = self._next
        self.rows[self._next] = job

    async def done(self, job: StoredJob) -> None:
        self.calls.append(f"done {job.function.decode()} {job.unique.decode()}")
        assert isinstance(job.key, int)
        del self.rows[job.key]

    async def replay(self) -> AsyncIterator[StoredJob]:
        self.calls.append("replay")
        for job in self.preload:
            self._next += 1
            job.key = self._next
            self.rows[self._next] = job
            yield job

    async def close(self) -> None:
        self.calls.append("close")
        self.closed = True


async def test_store_add_before_job_created_and_in_order() -> None:
    store = RecordingStore()
    store.gate = asyncio.Event()
    async with serve(store=store) as srv:
        c = await Raw.connect(srv.address)
        other = await Raw.connect(srv.address)
        c.send(T.SUBMIT_JOB_BG, b"f", b"u1", b"x")
        c.send(T.ECHO_REQ, b"after")  # must wait behind the store write
        await wait_for(lambda: "add f u1" in store.calls)
        await c.nothing(0.2)
        # other connections are not held up
        assert await other.call(T.ECHO_REQ, b"free") == (T.ECHO_RES, (b"free",))
        store.gate.set()
        (h,) = await c.expect(T.JOB_CREATED)
        assert await c.expect(T.ECHO_RES) == (b"after",)
        assert list(store.rows.values())[0].unique == b"u1"
        # coalesced and foreground submits never reach the store
        assert await c.call(T.SUBMIT_JOB_BG, b"f", b"u1", b"y") == (T.JOB_CREATED, (h,))
        c.send(T.SUBMIT_JOB, b"f", b"fg", b"x")
        await c.expect(T.JOB_CREATED)
        assert [x for x in store.calls if x.startswith("add")] == ["add f u1"]
        for conn in (c, other):
            await conn.close()
    assert store.calls[-1] == "close"


async def test_store_error_is_queue_error_and_no_job() -> None:
    store = RecordingStore(fail="disk on fire")
    async with serve(store=store) as srv:
        c = await Raw.connect(srv.address)
        assert await c.call(T.SUBMIT_JOB_HIGH_BG, b"f", b"u", b"x") == (
            T.ERROR,
            (b"QUEUE_ERROR", b"disk on fire"),
        )
        assert await c.admin("status") == "f\t0\t0\t0\n.\n"
        assert srv.scheduler.handles == {}
        # the connection keeps working
        assert await c.call(T.ECHO_REQ, b"ok") == (T.ECHO_RES, (b"ok",))
        await c.close()


async def test_store_done_on_every_exit() -> None:
    store = RecordingStore()
    async with serve(store=store, job_retries=0) as srv:
        c = await Raw.connect(srv.address)
        w = await worker(srv.address, b"f")
        handles = {}
        for u in (b"complete", b"fail", b"exc", b"cancel", b"retry"):
            c.send(T.SUBMIT_JOB_BG, b"f", u, b"x")
            (handles[u],) = await c.expect(T.JOB_CREATED)
        assert len(store.rows) == 5
        for u, ptype in ((b"complete", T.WORK_COMPLETE), (b"fail", T.WORK_FAIL)):
            w.send(T.GRAB_JOB)
            await w.expect(T.JOB_ASSIGN)
            w.send(ptype, *((handles[u],) if ptype == T.WORK_FAIL else (handles[u], b"r")))
        w.send(T.GRAB_JOB)
        await w.expect(T.JOB_ASSIGN)
        w.send(T.WORK_EXCEPTION, handles[b"exc"], b"e")
        assert await c.admin("cancel job " + handles[b"cancel"].decode()) == "OK\r\n"
        w.send(T.GRAB_JOB)  # the cancelled one is skipped
        assert (await w.expect(T.JOB_ASSIGN))[0] == handles[b"retry"]
        await w.close()  # job_retries=0: the first lost worker fails it
        await wait_for(lambda: len(store.rows) == 0)
        assert sorted(x for x in store.calls if x.startswith("done")) == sorted(
            f"done f {u}" for u in ("complete", "fail", "exc", "cancel", "retry")
        )
        await c.close()


async def test_store_done_when_coalesced_foreground_client_leaves() -> None:
    store = RecordingStore()
    async with serve(store=store) as srv:
        c = await Raw.connect(srv.address)
        c.send(T.SUBMIT_JOB_BG, b"f", b"u", b"x")
        (h,) = await c.expect(T.JOB_CREATED)
        fg = await Raw.connect(srv.address)
        assert await fg.call(T.SUBMIT_JOB, b"f", b"u", b"x") == (T.JOB_CREATED, (h,))
        await fg.close()
        await wait_for(lambda: "done f u" in store.calls)
        assert store.rows == {}
        await c.close()


async def test_store_replay_before_listen_keeps_fields() -> None:
    future = int(time.time()) + 3600
    store = RecordingStore(
        preload=[
            StoredJob(b"f", b"low", b"l", Priority.LOW),
            StoredJob(b"f", b"high", b"h", Priority.HIGH),
            StoredJob(b"f", b"later", b"e", Priority.NORMAL, when=future),
        ]
    )
    async with serve(store=store) as srv:
        assert store.calls[:2] == ["open", "replay"]
        c = await Raw.connect(srv.address)
        assert await c.admin("prioritystatus") == "f\t1\t1\t1\t0\n.\n"
        prefix = srv.server.config.handle_prefix
        expected = "".join(f"{prefix}:{n}\t0\t0\t1\n" for n in (1, 2, 3)) + ".\n"
        assert await c.admin("show jobs") == expected
        w = await worker(srv.address, b"f")
        w.send(T.GRAB_JOB_UNIQ)
        assert (await w.expect(T.JOB_ASSIGN_UNIQ))[2:] == (b"high", b"h")
        w.send(T.GRAB_JOB_UNIQ)
        assert (await w.expect(T.JOB_ASSIGN_UNIQ))[2:] == (b"low", b"l")
        assert await w.call(T.GRAB_JOB) == (T.NO_JOB, ())
        for conn in (c, w):
            await conn.close()
    assert store.closed


async def test_store_adds_pipelined_replies_in_submit_order() -> None:
    store = RecordingStore(fail_unique=b"u2")
    store.gate = asyncio.Event()
    async with serve(store=store) as srv:
        c = await Raw.connect(srv.address)
        for u in (b"u0", b"u1", b"u2", b"u3"):
            c.send(T.SUBMIT_JOB_BG, b"f", u, b"x")
        c.send(T.SUBMIT_JOB_BG, b"f", b"u1", b"dup")  # coalesces onto a pending job
        c.send(T.SUBMIT_JOB_BG, b"f", b"u" * 65, b"x")  # refused at once, but in order
        c.send(T.ECHO_REQ, b"after")  # waits behind all of them
        c.send_raw(b"getpid\r\n")  # admin lines wait too
        c.send(T.SUBMIT_JOB_BG, b"f", b"u4", b"x")  # after the echo: waits in the backlog
        await wait_for(lambda: store.in_flight == 4)
        await c.nothing(0.2)
        store.gate.set()
        h0 = await c.expect(T.JOB_CREATED)
        h1 = await c.expect(T.JOB_CREATED)
        assert await c.expect(T.ERROR) == (b"QUEUE_ERROR", b"refused u2")
        h3 = await c.expect(T.JOB_CREATED)
        assert await c.expect(T.JOB_CREATED) == h1
        assert await c.expect(T.ERROR) == (b"ARGUMENT_TOO_LARGE", b"Unique value too large")
        assert await c.expect(T.ECHO_RES) == (b"after",)
        assert (await c.reader.readline()).startswith(b"OK ")
        h4 = await c.expect(T.JOB_CREATED)
        assert len({h0, h1, h3, h4}) == 4
        assert store.max_in_flight == 4
        # queue order is submit order
        w = await worker(srv.address, b"f")
        got = []
        for _ in range(4):
            w.send(T.GRAB_JOB_UNIQ)
            got.append((await w.expect(T.JOB_ASSIGN_UNIQ))[2])
        assert got == [b"u0", b"u1", b"u3", b"u4"]
        for conn in (c, w):
            await conn.close()


class FlakyDoneStore(RecordingStore):
    async def done(self, job: StoredJob) -> None:
        self.calls.append("done-attempt")
        raise StoreError("delete failed")


async def test_store_done_failure_is_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyDoneStore()
    async with serve(store=store) as srv:
        c = await Raw.connect(srv.address)
        w = await worker(srv.address, b"f")
        c.send(T.SUBMIT_JOB_BG, b"f", b"u", b"x")
        (h,) = await c.expect(T.JOB_CREATED)
        w.send(T.GRAB_JOB)
        await w.expect(T.JOB_ASSIGN)
        with caplog.at_level(logging.ERROR, logger="gearshift"):
            w.send(T.WORK_COMPLETE, h, b"r")
            await wait_for(lambda: "done-attempt" in store.calls)
            await wait_for(
                lambda: any("store done failed" in r.getMessage() for r in caplog.records)
            )
        assert await c.call(T.ECHO_REQ, b"alive") == (T.ECHO_RES, (b"alive",))
        for conn in (c, w):
            await conn.close()
