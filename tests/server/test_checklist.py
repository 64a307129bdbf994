"""Checklist items over real sockets that need timing, disconnects or several peers."""

from __future__ import annotations

import asyncio
import time

from gearshift.protocol.packets import MAX_PACKET_TYPE
from gearshift.testing import RunningServer, serve
from tests.server.helpers import Raw, T, wait_for, worker

#: Types a server answers when sent on their own with empty-ish arguments.
REPLIES = {
    T.PRE_SLEEP: None,
    T.GRAB_JOB: T.NO_JOB,
    T.GRAB_JOB_UNIQ: T.NO_JOB,
    T.GRAB_JOB_ALL: T.NO_JOB,
    T.ECHO_REQ: T.ECHO_RES,
    T.GET_STATUS: T.STATUS_RES,
    T.GET_STATUS_UNIQUE: T.STATUS_RES_UNIQUE,
    T.OPTION_REQ: T.ERROR,
}


async def test_checklist_03_every_packet_number(server: RunningServer) -> None:
    c = await Raw.connect(server.address)
    from gearshift.protocol.packets import ARGC, REQUEST_TYPES

    for number in range(1, MAX_PACKET_TYPE + 1):
        ptype = T(number)
        args = [b"a"] * max(ARGC[number], 1) if ARGC[number] else []
        if ptype in (T.CAN_DO_TIMEOUT,):
            args = [b"fn", b"1000"]
        c.send(ptype, *args)
        c.send(T.ECHO_REQ, b"sync")
        replies = []
        while True:
            kind, got = await c.recv()
            if kind == T.ECHO_RES and got == (b"sync",):
                break
            replies.append(kind)
        if ptype not in REQUEST_TYPES or ptype in (T.ALL_YOURS, T.SUBMIT_JOB_SCHED):
            assert replies == [T.ERROR], ptype.name
        elif ptype.name.startswith("SUBMIT"):
            assert replies == [T.JOB_CREATED], ptype.name
        elif ptype in REPLIES:
            assert replies == ([REPLIES[ptype]] if REPLIES[ptype] else []), ptype.name
        elif ptype.name.startswith("WORK_"):
            assert replies == [T.ERROR], ptype.name  # JOB_NOT_FOUND
        else:  # CAN_DO, CANT_DO, RESET_ABILITIES, SET_CLIENT_ID, CAN_DO_TIMEOUT
            assert replies == [], ptype.name
    await c.close()


async def test_checklist_07_unique_limits_over_the_wire(server: RunningServer) -> None:
    c = await Raw.connect(server.address)
    w = await worker(server.address, b"f")
    u64 = b"u" * 64
    c.send(T.SUBMIT_JOB_BG, b"f", u64, b"x")
    await c.expect(T.JOB_CREATED)
    assert await c.call(T.SUBMIT_JOB_BG, b"f", u64 + b"v", b"x") == (
        T.ERROR,
        (b"ARGUMENT_TOO_LARGE", b"Unique value too large"),
    )
    w.send(T.GRAB_JOB_UNIQ)
    assert (await w.expect(T.JOB_ASSIGN_UNIQ))[2] == u64  # not truncated to 63
    for conn in (c, w):
        await conn.close()


async def test_checklist_08_10_priority_requeue_on_worker_loss(server: RunningServer) -> None:
    c = await Raw.connect(server.address)
    w1 = await worker(server.address, b"a", b"b")
    c.send(T.SUBMIT_JOB_LOW_BG, b"a", b"", b"low")
    c.send(T.SUBMIT_JOB_HIGH_BG, b"b", b"", b"high")
    c.send(T.SUBMIT_JOB_BG, b"a", b"", b"normal")
    handles = [(await c.expect(T.JOB_CREATED))[0] for _ in range(3)]
    w1.send(T.GRAB_JOB)
    assert (await w1.expect(T.JOB_ASSIGN))[2] == b"high"
    await w1.close()  # requeued, retries 1
    a = await Raw.connect(server.address)
    await wait_for(lambda: server.scheduler.handles[handles[1]].worker is None)
    assert f"{handles[1].decode()}\t1\t0\t1" in await a.admin("show jobs")
    w2 = await worker(server.address, b"b", b"a")
    got = []
    for _ in range(3):
        w2.send(T.GRAB_JOB)
        got.append((await w2.expect(T.JOB_ASSIGN))[2])
    assert got == [b"high", b"normal", b"low"]
    w2.send(T.CANT_DO, b"a")  # requeues the two "a" jobs it holds
    await wait_for(lambda: server.scheduler.functions[b"a"].running == 0)
    assert await a.admin("status") == "a\t2\t0\t0\nb\t1\t1\t1\n.\n"
    w2.send(T.RESET_ABILITIES)
    await wait_for(lambda: server.scheduler.functions[b"b"].running == 0)
    assert await a.admin("status") == "a\t2\t0\t0\nb\t1\t0\t0\n.\n"
    for conn in (a, c, w2):
        await conn.close()


async def test_checklist_14_exceptions_over_the_wire() -> None:
    async with serve() as srv:
        opted = await Raw.connect(srv.address)
        plain = await Raw.connect(srv.address)
        w = await worker(srv.address, b"f")
        assert await opted.call(T.OPTION_REQ, b"EXCEPTIONS") == (T.OPTION_RES, (b"EXCEPTIONS",))
        opted.send(T.SUBMIT_JOB, b"f", b"u", b"x")
        (h,) = await opted.expect(T.JOB_CREATED)
        plain.send(T.SUBMIT_JOB, b"f", b"u", b"x")
        await plain.expect(T.JOB_CREATED)
        w.send(T.GRAB_JOB)
        await w.expect(T.JOB_ASSIGN)
        w.send(T.WORK_EXCEPTION, h, b"trace")
        assert await opted.expect(T.WORK_EXCEPTION) == (h, b"trace")
        raw = await plain.reader.readexactly(12 + len(h) + 1)
        assert raw[4:8] == (T.WORK_FAIL).to_bytes(4, "big") and raw[12:] == h + b"\0"
        for conn in (opted, plain, w):
            await conn.close()
    async with serve(exceptions=True) as srv:
        c = await Raw.connect(srv.address)
        w = await worker(srv.address, b"f")
        c.send(T.SUBMIT_JOB, b"f", b"", b"x")
        (h,) = await c.expect(T.JOB_CREATED)
        w.send(T.GRAB_JOB)
        await w.expect(T.JOB_ASSIGN)
        w.send(T.WORK_EXCEPTION, h, b"e")
        assert await c.expect(T.WORK_EXCEPTION) == (h, b"e")
        for conn in (c, w):
            await conn.close()


async def test_checklist_15_16_17_status_and_client_id(server: RunningServer) -> None:
    c = await Raw.connect(server.address)
    c2 = await Raw.connect(server.address)
    w = await worker(server.address, b"f", client_id=b"x" * 300)
    c.send(T.SUBMIT_JOB, b"f", b"uq", b"x")
    (h,) = await c.expect(T.JOB_CREATED)
    c2.send(T.SUBMIT_JOB, b"f", b"uq", b"x")
    await c2.expect(T.JOB_CREATED)
    assert await c.call(T.GET_STATUS, h) == (T.STATUS_RES, (h, b"1", b"0", b"0", b"0"))
    w.send(T.GRAB_JOB)
    await w.expect(T.JOB_ASSIGN)
    w.send(T.WORK_STATUS, h, b"5", b"7")
    await c.expect(T.WORK_STATUS)
    assert await c.call(T.GET_STATUS, h) == (T.STATUS_RES, (h, b"1", b"1", b"5", b"7"))
    assert await c.call(T.GET_STATUS_UNIQUE, b"uq") == (
        T.STATUS_RES_UNIQUE,
        (b"uq", b"1", b"1", b"5", b"7", b"2"),
    )
    assert await c.call(T.GET_STATUS, b"H:none:1") == (
        T.STATUS_RES,
        (b"H:none:1", b"0", b"0", b"0", b"0"),
    )
    workers = await c.admin("workers")
    assert f" {'x' * 127} : f\n" in workers
    # a GET_STATUS handle of 64+ bytes drops the connection (as gearmand)
    c2.send(T.GET_STATUS, b"H" * 64)
    assert await c2.closed()
    for conn in (c, c2, w):
        await conn.close()


async def test_checklist_18_can_do_timeout_requeues_after_a_second(server: RunningServer) -> None:
    c = await Raw.connect(server.address)
    slow = await Raw.connect(server.address)
    slow.send(T.CAN_DO_TIMEOUT, b"t", b"100")  # 100 ms -> at least 1 s
    c.send(T.SUBMIT_JOB, b"t", b"", b"x")
    (h,) = await c.expect(T.JOB_CREATED)
    slow.send(T.GRAB_JOB)
    await slow.expect(T.JOB_ASSIGN)
    started = time.monotonic()
    await wait_for(lambda: server.scheduler.handles[h].worker is None, within=10)
    assert time.monotonic() - started >= 0.9
    assert await slow.call(T.WORK_COMPLETE, h, b"late") == (
        T.ERROR,
        (b"JOB_NOT_FOUND", b"Job given in work result not found"),
    )
    fast = await worker(server.address, b"t")
    fast.send(T.GRAB_JOB)
    await fast.expect(T.JOB_ASSIGN)
    fast.send(T.WORK_COMPLETE, h, b"ok")
    assert await c.expect(T.WORK_COMPLETE) == (h, b"ok")
    # completion cancels the timer: a job finished in time is never requeued
    c.send(T.SUBMIT_JOB, b"t", b"", b"y")
    (h2,) = await c.expect(T.JOB_CREATED)
    slow.send(T.GRAB_JOB)
    await slow.expect(T.JOB_ASSIGN)
    slow.send(T.WORK_COMPLETE, h2, b"quick")
    assert await c.expect(T.WORK_COMPLETE) == (h2, b"quick")
    await asyncio.sleep(1.2)
    assert await c.admin("status") == "t\t0\t0\t2\n.\n"
    for conn in (c, slow, fast):
        await conn.close()


async def test_checklist_19_job_retries_fail_clients() -> None:
    async with serve(job_retries=1) as srv:
        c = await Raw.connect(srv.address)
        c.send(T.SUBMIT_JOB, b"f", b"", b"x")
        (h,) = await c.expect(T.JOB_CREATED)
        for _ in range(2):
            w = await worker(srv.address, b"f")
            w.send(T.GRAB_JOB)
            await w.expect(T.JOB_ASSIGN)
            await w.close()
        raw = await c.reader.readexactly(12 + len(h))
        assert raw[4:8] == (T.WORK_FAIL).to_bytes(4, "big") and raw[12:] == h  # no NUL here
        assert await c.admin("status") == "f\t0\t0\t0\n.\n"
        await c.close()


async def test_checklist_20_client_disconnect_semantics(server: RunningServer) -> None:
    c = await Raw.connect(server.address)
    a = await Raw.connect(server.address)
    w = await worker(server.address, b"f")
    c.send(T.SUBMIT_JOB, b"f", b"", b"running")
    (running,) = await c.expect(T.JOB_CREATED)
    c.send(T.SUBMIT_JOB, b"f", b"", b"queued")
    (queued,) = await c.expect(T.JOB_CREATED)
    w.send(T.GRAB_JOB)
    assert (await w.expect(T.JOB_ASSIGN))[0] == running
    await c.close()
    await wait_for(lambda: server.scheduler.handles[queued].ignore)
    shown = await a.admin("show jobs")
    assert f"{queued.decode()}\t0\t1\t0" in shown
    assert await a.admin("status") == "f\t2\t1\t1\n.\n"
    assert await w.call(T.GRAB_JOB) == (T.NO_JOB, ())  # the orphan is dropped
    w.send(T.WORK_COMPLETE, running, b"nobody listens")  # accepted, discarded
    await w.nothing(0.2)
    assert await a.admin("status") == "f\t0\t0\t1\n.\n"
    for conn in (a, w):
        await conn.close()


async def test_checklist_21_epoch_job_woken_by_timer(server: RunningServer) -> None:
    c = await Raw.connect(server.address)
    w = await worker(server.address, b"e")
    when = int(time.time()) + 2
    c.send(T.SUBMIT_JOB_EPOCH, b"e", b"", str(when).encode(), b"due")
    (h,) = await c.expect(T.JOB_CREATED)
    assert await w.call(T.GRAB_JOB) == (T.NO_JOB, ())
    w.send(T.PRE_SLEEP)
    await w.expect(T.NOOP, within=10)  # the wakeup timer, not the submit
    assert time.time() >= when - 0.05
    assert await w.call(T.GRAB_JOB) == (T.JOB_ASSIGN, (h, b"e", b"due"))
    for conn in (c, w):
        await conn.close()


async def test_checklist_23_reduce_over_the_wire(server: RunningServer) -> None:
    c = await Raw.connect(server.address)
    w = await worker(server.address, b"m")
    c.send(T.SUBMIT_REDUCE_JOB, b"m", b"u", b"reducer", b"", b"d")
    (h,) = await c.expect(T.JOB_CREATED)
    w.send(T.GRAB_JOB_ALL)
    assert await w.expect(T.JOB_ASSIGN_ALL) == (h, b"m", b"u", b"reducer", b"d")
    w.send(T.WORK_COMPLETE, h, b"r")
    assert await c.expect(T.WORK_COMPLETE) == (h, b"r")
    for conn in (c, w):
        await conn.close()


async def test_counters_for_metrics(server: RunningServer) -> None:
    c = await Raw.connect(server.address)
    w = await worker(server.address, b"f")
    c.send(T.SUBMIT_JOB, b"f", b"", b"x")
    (h,) = await c.expect(T.JOB_CREATED)
    w.send(T.GRAB_JOB)
    await w.expect(T.JOB_ASSIGN)
    w.send(T.WORK_COMPLETE, h, b"r")
    await c.expect(T.WORK_COMPLETE)
    await c.admin("status")
    stats = server.scheduler.stats
    assert stats.submitted == {b"f": 1}
    assert stats.finished == {(b"f", "complete"): 1}
    assert stats.packets[T.SUBMIT_JOB] == 1 and stats.packets[T.CAN_DO] == 1
    assert stats.packets[0] == 1  # admin lines
    for conn in (c, w):
        await conn.close()
