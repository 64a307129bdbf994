"""Checklist items over real sockets against an in-process server on port 0."""

from __future__ import annotations

import asyncio

from gearshift.protocol.codec import encode_request
from gearshift.testing import RunningServer, serve
from tests.server.helpers import Raw, T, wait_for, worker


async def test_checklist_04_echo_any_size(server: RunningServer) -> None:
    c = await Raw.connect(server.address)
    for payload in (b"", b"hello\0world", bytes(range(256)) * 4096):
        assert await c.call(T.ECHO_REQ, payload) == (T.ECHO_RES, (payload,))
    await c.close()


async def test_checklist_05_submit_fg_roundtrip_and_handles(server: RunningServer) -> None:
    c = await Raw.connect(server.address)
    w = await worker(server.address, b"rev")
    c.send(T.SUBMIT_JOB, b"rev", b"", b"hello")
    (handle,) = await c.expect(T.JOB_CREATED)
    assert handle.startswith(b"H:") and handle.endswith(b":1")
    w.send(T.GRAB_JOB)
    assert await w.expect(T.JOB_ASSIGN) == (handle, b"rev", b"hello")
    w.send(T.WORK_COMPLETE, handle, b"olleh")
    assert await c.expect(T.WORK_COMPLETE) == (handle, b"olleh")
    await c.close()
    await w.close()


async def test_checklist_05_job_handle_prefix() -> None:
    async with serve(handle_prefix="P") as srv:
        c = await Raw.connect(srv.address)
        assert await c.call(T.SUBMIT_JOB_BG, b"f", b"", b"x") == (T.JOB_CREATED, (b"P:1",))
        assert await c.call(T.SUBMIT_JOB_BG, b"f", b"", b"x") == (T.JOB_CREATED, (b"P:2",))
        await c.close()


async def test_checklist_05_every_submit_variant(server: RunningServer) -> None:
    c = await Raw.connect(server.address)
    for ptype in (
        T.SUBMIT_JOB,
        T.SUBMIT_JOB_BG,
        T.SUBMIT_JOB_HIGH,
        T.SUBMIT_JOB_HIGH_BG,
        T.SUBMIT_JOB_LOW,
        T.SUBMIT_JOB_LOW_BG,
    ):
        c.send(ptype, b"v", b"", b"x")
        await c.expect(T.JOB_CREATED)
    c.send(T.SUBMIT_JOB_EPOCH, b"v", b"", b"0", b"x")
    await c.expect(T.JOB_CREATED)
    c.send(T.SUBMIT_REDUCE_JOB, b"v", b"", b"red", b"", b"x")
    await c.expect(T.JOB_CREATED)
    c.send(T.SUBMIT_REDUCE_JOB_BACKGROUND, b"v", b"", b"red", b"", b"x")
    await c.expect(T.JOB_CREATED)
    status = await c.admin("prioritystatus")
    assert status == "v\t2\t5\t2\t0\n.\n"
    await c.close()


async def test_checklist_12_grab_variants_and_no_job(server: RunningServer) -> None:
    c = await Raw.connect(server.address)
    w = await worker(server.address, b"g")
    w.send(T.GRAB_JOB)
    await w.expect(T.NO_JOB)
    c.send(T.SUBMIT_JOB_BG, b"g", b"u1", b"d1")
    (h1,) = await c.expect(T.JOB_CREATED)
    c.send(T.SUBMIT_REDUCE_JOB_BACKGROUND, b"g", b"u2", b"reducer", b"", b"d2")
    (h2,) = await c.expect(T.JOB_CREATED)
    c.send(T.SUBMIT_JOB_BG, b"g", b"u3", b"d3")
    (h3,) = await c.expect(T.JOB_CREATED)
    w.send(T.GRAB_JOB_UNIQ)
    assert await w.expect(T.JOB_ASSIGN_UNIQ) == (h1, b"g", b"u1", b"d1")
    w.send(T.GRAB_JOB_ALL)
    assert await w.expect(T.JOB_ASSIGN_ALL) == (h2, b"g", b"u2", b"reducer", b"d2")
    w.send(T.GRAB_JOB_ALL)  # no reducer -> JOB_ASSIGN_UNIQ
    assert await w.expect(T.JOB_ASSIGN_UNIQ) == (h3, b"g", b"u3", b"d3")
    nobody = await Raw.connect(server.address)
    assert await nobody.call(T.GRAB_JOB) == (T.NO_JOB, ())
    for conn in (c, w, nobody):
        await conn.close()


async def test_checklist_11_pre_sleep_noop_one_per_job() -> None:
    # No pass-on here (it would wake the next sleeper after its delay: see
    # tests/hostile/test_stuck_wakeup.py): this checks one NOOP per new job.
    async with serve(worker_wakeup_delay=0) as srv:
        c = await Raw.connect(srv.address)
        sleepers = [await worker(srv.address, b"s") for _ in range(3)]
        for s in sleepers:
            s.send(T.PRE_SLEEP)
        await c.admin("status")  # sync point: the server has seen everything sent before
        await asyncio.sleep(0.05)
        c.send(T.SUBMIT_JOB_BG, b"s", b"", b"x")
        await c.expect(T.JOB_CREATED)
        got = []
        for s in sleepers:
            try:
                await s.expect(T.NOOP, within=0.3)
                got.append(s)
            except TimeoutError:
                pass
        assert len(got) == 1  # one new job wakes one sleeper
        # the woken worker gets one NOOP per sleep cycle even if more jobs arrive
        c.send(T.SUBMIT_JOB_BG, b"s", b"", b"y")
        await c.expect(T.JOB_CREATED)
        await got[0].nothing(0.2)
        # PRE_SLEEP with work waiting -> immediate NOOP
        late = await worker(srv.address, b"s")
        late.send(T.PRE_SLEEP)
        await late.expect(T.NOOP)
        for conn in (c, late, *sleepers):
            await conn.close()


async def test_checklist_11_worker_wakeup_zero_wakes_all() -> None:
    async with serve(worker_wakeup=0) as srv:
        c = await Raw.connect(srv.address)
        sleepers = [await worker(srv.address, b"s") for _ in range(3)]
        for s in sleepers:
            s.send(T.PRE_SLEEP)
        await asyncio.sleep(0.1)
        c.send(T.SUBMIT_JOB_BG, b"s", b"", b"x")
        await c.expect(T.JOB_CREATED)
        for s in sleepers:
            await s.expect(T.NOOP)
        for conn in (c, *sleepers):
            await conn.close()


async def test_checklist_13_work_results_fan_out_to_all_clients(server: RunningServer) -> None:
    c1 = await Raw.connect(server.address)
    c2 = await Raw.connect(server.address)
    w = await worker(server.address, b"f")
    c1.send(T.SUBMIT_JOB, b"f", b"same", b"payload")
    (h,) = await c1.expect(T.JOB_CREATED)
    c2.send(T.SUBMIT_JOB_HIGH, b"f", b"same", b"other")
    assert await c2.expect(T.JOB_CREATED) == (h,)
    w.send(T.GRAB_JOB)
    assert await w.expect(T.JOB_ASSIGN) == (h, b"f", b"payload")
    w.send(T.WORK_DATA, h, b"d\0ata")
    w.send(T.WORK_WARNING, h, b"warn")
    w.send(T.WORK_STATUS, h, b"1", b"2")
    w.send(T.WORK_COMPLETE, h, b"done")
    for c in (c1, c2):
        assert await c.expect(T.WORK_DATA) == (h, b"d\0ata")
        assert await c.expect(T.WORK_WARNING) == (h, b"warn")
        assert await c.expect(T.WORK_STATUS) == (h, b"1", b"2")
        assert await c.expect(T.WORK_COMPLETE) == (h, b"done")
    for conn in (c1, c2, w):
        await conn.close()


async def test_checklist_13_work_result_ownership_texts(server: RunningServer) -> None:
    c = await Raw.connect(server.address)
    owner = await worker(server.address, b"f")
    other = await worker(server.address, b"f")
    c.send(T.SUBMIT_JOB, b"f", b"", b"x")
    (h,) = await c.expect(T.JOB_CREATED)
    # queued, not yet assigned: nobody owns it
    assert await other.call(T.WORK_COMPLETE, h, b"r") == (
        T.ERROR,
        (b"JOB_NOT_FOUND", b"Job given in work result not found"),
    )
    owner.send(T.GRAB_JOB)
    await owner.expect(T.JOB_ASSIGN)
    expected = {
        T.WORK_DATA: b"Job does not exist on server",
        T.WORK_WARNING: b"Job does not exist on server",
        T.WORK_STATUS: b"Job given in work result not found",
        T.WORK_COMPLETE: b"Job given in work result not found",
        T.WORK_FAIL: b"Job given in work result not found",
        T.WORK_EXCEPTION: b"An exception was received for a job that does not exist",
    }
    for ptype, text in expected.items():
        args = {T.WORK_STATUS: (h, b"1", b"2"), T.WORK_FAIL: (h,)}.get(ptype, (h, b"x"))
        assert await other.call(ptype, *args) == (T.ERROR, (b"JOB_NOT_FOUND", text))
        assert await other.call(ptype, *((b"H:nope:9",) + args[1:])) == (
            T.ERROR,
            (b"JOB_NOT_FOUND", text),
        )
    # the owner still finishes it, and a second result is refused
    owner.send(T.WORK_COMPLETE, h, b"ok")
    assert await c.expect(T.WORK_COMPLETE) == (h, b"ok")
    assert await owner.call(T.WORK_COMPLETE, h, b"again") == (
        T.ERROR,
        (b"JOB_NOT_FOUND", b"Job given in work result not found"),
    )
    for conn in (c, owner, other):
        await conn.close()


async def test_admin_status_and_workers(server: RunningServer) -> None:
    a = await Raw.connect(server.address)
    w = await worker(server.address, b"one", b"two", client_id=b"wid")
    c = await Raw.connect(server.address)
    c.send(T.SUBMIT_JOB_BG, b"one", b"", b"x")
    await c.expect(T.JOB_CREATED)
    await wait_for(lambda: server.scheduler.functions.get(b"two") is not None)
    status = await a.admin("status")
    assert status == "one\t1\t0\t1\ntwo\t0\t0\t1\n.\n"
    workers = (await a.admin("workers")).splitlines()
    assert workers[-1] == "."
    assert any(line.endswith(" 127.0.0.1 wid : two one") for line in workers)
    assert sum(line.endswith(" 127.0.0.1 - :") for line in workers) == 2
    for conn in (a, w, c):
        await conn.close()


async def test_large_payloads_round_trip_in_pieces(server: RunningServer) -> None:
    c = await Raw.connect(server.address)
    w = await worker(server.address, b"big")
    payload = bytes(range(256)) * (20 * 4096)  # 20 MiB, with NULs inside
    packet = encode_request(T.SUBMIT_JOB, b"big", b"", payload)
    for i in range(0, len(packet), 100_000):  # dribbled in, as a slow client would
        c.send_raw(packet[i : i + 100_000])
        await c.writer.drain()
    (h,) = await c.expect(T.JOB_CREATED)
    w.send(T.GRAB_JOB)
    assert await w.expect(T.JOB_ASSIGN, within=60) == (h, b"big", payload)
    w.send(T.WORK_DATA, h, payload[:300_000])
    w.send(T.WORK_COMPLETE, h, payload[::-1])
    assert await c.expect(T.WORK_DATA, within=60) == (h, payload[:300_000])
    assert await c.expect(T.WORK_COMPLETE, within=60) == (h, payload[::-1])
    assert await c.call(T.ECHO_REQ, payload) == (T.ECHO_RES, (payload,))
    for conn in (c, w):
        await conn.close()
