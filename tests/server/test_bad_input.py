"""Bad input: each offender gets an ERROR or a closed connection, with a log line; the
server keeps serving everyone else and loses no queued job."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

import pytest

from gearshift.testing import RunningServer, serve
from tests.procs import ServerProcess
from tests.server.helpers import Raw, T, wait_for, worker


async def queue_one(address: str) -> bytes:
    c = await Raw.connect(address)
    c.send(T.SUBMIT_JOB_BG, b"keep", b"", b"precious")
    (h,) = await c.expect(T.JOB_CREATED)
    await c.close()
    return h


async def still_serving(address: str, handle: bytes) -> None:
    """Another connection works and the queued job is still there for a worker."""
    c = await Raw.connect(address)
    assert await c.call(T.ECHO_REQ, b"alive") == (T.ECHO_RES, (b"alive",))
    w = await worker(address, b"keep")
    w.send(T.GRAB_JOB)
    assert await w.expect(T.JOB_ASSIGN) == (handle, b"keep", b"precious")
    await c.close()
    await w.close()


def header(magic: bytes, ptype: int, size: int) -> bytes:
    return magic + struct.pack(">II", ptype, size)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("malformed", header(b"\0REQ", T.SUBMIT_JOB, 5) + b"nonul"),
        ("wrong_magic", header(b"\0XYZ", T.ECHO_REQ, 1) + b"x"),
        ("short_wrong_magic", b"\0ABC"),
        ("type_zero", header(b"\0REQ", 0, 0)),
        ("type_43", header(b"\0REQ", 43, 0)),
        ("type_huge", header(b"\0REQ", 0xFFFFFFFF, 0)),
        ("admin_too_many_tokens", b"status a b c d e\r\n"),
    ],
)
async def test_bad_input_closes_only_that_peer(
    server: RunningServer, caplog: pytest.LogCaptureFixture, name: str, data: bytes
) -> None:
    h = await queue_one(server.address)
    bystander = await Raw.connect(server.address)
    bad = await Raw.connect(server.address)
    with caplog.at_level(logging.WARNING, logger="gearshift"):
        bad.send_raw(data)
        assert await bad.closed(), name
    assert any("closing connection" in r.getMessage() for r in caplog.records), name
    assert await bystander.call(T.ECHO_REQ, b"b") == (T.ECHO_RES, (b"b",))
    await still_serving(server.address, h)
    await bystander.close()
    await bad.close()


async def test_bad_input_oversized_length_closes_before_body() -> None:
    async with serve(max_packet_size=1024) as srv:
        h = await queue_one(srv.address)
        bad = await Raw.connect(srv.address)
        bad.send_raw(header(b"\0REQ", T.ECHO_REQ, 2000))  # no body sent at all
        assert await bad.closed()
        await bad.close()
        ok = await Raw.connect(srv.address)
        payload = b"x" * 1024
        assert await ok.call(T.ECHO_REQ, payload) == (T.ECHO_RES, (payload,))
        await ok.close()
        await still_serving(srv.address, h)


async def test_checklist_01_response_magic_gets_invalid_magic(server: RunningServer) -> None:
    c = await Raw.connect(server.address)
    c.send_raw(header(b"\0RES", T.ECHO_REQ, 2) + b"hi")
    assert await c.expect(T.ERROR) == (b"INVALID_MAGIC", b"Request magic expected")
    assert await c.call(T.ECHO_REQ, b"still") == (T.ECHO_RES, (b"still",))
    await c.close()


async def test_bad_input_admin_garbage_answers_unknown_command(server: RunningServer) -> None:
    h = await queue_one(server.address)
    c = await Raw.connect(server.address)
    assert (
        await c.admin("\x7fgarbage here")
        == "ERR UNKNOWN_COMMAND Unknown+server+command\x7fgarbage\r\n"
    )
    assert await c.admin("héllo") == "ERR UNKNOWN_COMMAND Unknown+server+commandhéllo\r\n"
    # a line that never ends is cut off at the admin line limit
    c.send_raw(b"A" * 70000)
    assert await c.closed()
    await c.close()
    await still_serving(server.address, h)


async def test_bad_input_work_result_for_someone_elses_job(server: RunningServer) -> None:
    c = await Raw.connect(server.address)
    owner = await worker(server.address, b"f")
    thief = await worker(server.address, b"f")
    c.send(T.SUBMIT_JOB, b"f", b"", b"x")
    (h,) = await c.expect(T.JOB_CREATED)
    owner.send(T.GRAB_JOB)
    await owner.expect(T.JOB_ASSIGN)
    assert (await thief.call(T.WORK_COMPLETE, h, b"stolen"))[0] == T.ERROR
    owner.send(T.WORK_COMPLETE, h, b"real")
    assert await c.expect(T.WORK_COMPLETE) == (h, b"real")
    for conn in (c, owner, thief):
        await conn.close()


async def test_bad_input_silent_peer_does_not_hurt(server: RunningServer) -> None:
    h = await queue_one(server.address)
    silent = await Raw.connect(server.address)
    half = await Raw.connect(server.address)
    half.send_raw(b"\0REQ\x00\x00")  # half a header, then nothing
    await still_serving(server.address, h)
    assert not await silent.closed(0.2)
    for conn in (silent, half):
        await conn.close()


async def test_bad_input_idle_timeout_closes_silent_peers() -> None:
    async with serve(idle_timeout=0.3) as srv:
        silent = await Raw.connect(srv.address)
        w = await worker(srv.address, b"f")
        w.send(T.PRE_SLEEP)  # a sleeping worker is quiet by design: kept
        assert await silent.closed(5)
        await silent.close()
        assert await w.call(T.ECHO_REQ, b"x") == (T.ECHO_RES, (b"x",))
        await w.close()


async def test_bad_input_slow_reader_is_paused_not_buffered_forever() -> None:
    async with serve(write_high_water=64 * 1024) as srv:
        c = await Raw.connect(srv.address)
        payload = b"x" * 65536
        for _ in range(400):  # 26 MB of echoes we do not read
            c.send(T.ECHO_REQ, payload)
        await asyncio.sleep(0.5)
        conn = next(iter(srv.server.connections))
        assert conn.transport is not None
        assert conn.transport.get_write_buffer_size() < 40 * 1024 * 1024
        other = await Raw.connect(srv.address)
        assert await other.call(T.ECHO_REQ, b"y") == (T.ECHO_RES, (b"y",))
        for _ in range(400):
            assert await c.expect(T.ECHO_RES, within=30) == (payload,)
        await c.close()
        await other.close()


def _connect_many(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        socks.append(s)
    return socks


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_bad_input_ten_thousand_connections_at_once(make_gearshift) -> None:  # type: ignore[no-untyped-def]
    srv: ServerProcess = make_gearshift("-b", "4096")
    h = await queue_one(srv.address)
    socks = _connect_many(srv.port, 10_000)
    try:
        admin = await Raw.connect(srv.address)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while True:
            workers = await admin.admin("workers")
            if workers.count("\n") - 1 >= 10_000 or loop.time() > deadline:
                break
            await asyncio.sleep(0.5)
        assert workers.count("\n") - 1 >= 10_000
        # a sample of the crowd is served
        for s in socks[::2000]:
            s.setblocking(True)
            s.settimeout(30)
            s.sendall(header(b"\0REQ", T.ECHO_REQ, 2) + b"hi")
            assert s.recv(14) == header(b"\0RES", T.ECHO_RES, 2) + b"hi"
        await admin.close()
    finally:
        for s in socks:
            s.close()
    await still_serving(srv.address, h)
    assert srv.proc is not None and srv.proc.poll() is None


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_bad_input_fd_exhaustion_is_survived(make_gearshift) -> None:  # type: ignore[no-untyped-def]
    srv: ServerProcess = make_gearshift("-f", "128", "--verbose", "WARNING")
    h = await queue_one(srv.address)
    socks = _connect_many(srv.port, 400)  # far more than the server can accept
    await asyncio.sleep(3)
    for s in socks:
        s.close()
    # once the crowd is gone the server accepts again
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        try:
            await still_serving(srv.address, h)
            break
        except (OSError, TimeoutError, AssertionError, asyncio.IncompleteReadError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.5)
    assert srv.proc is not None and srv.proc.poll() is None
    assert "file descriptor limit" in srv.log_text()


async def test_bad_input_connection_cap_refuses_extra_peers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serve(max_connections=3) as srv:
        h = await queue_one(srv.address)
        held = [await Raw.connect(srv.address) for _ in range(3)]
        for conn in held:
            assert await conn.call(T.ECHO_REQ, b"in") == (T.ECHO_RES, (b"in",))
        with caplog.at_level(logging.ERROR, logger="gearshift"):
            extra = await Raw.connect(srv.address)
            assert await extra.closed()
        assert any("connection limit 3" in r.message for r in caplog.records)
        await extra.close()
        await held.pop().close()
        await held.pop().close()
        await wait_for(lambda: len(srv.server.connections) == 1)
        assert len(srv.scheduler.peers) == 1  # the refused one was never registered
        await still_serving(srv.address, h)  # two more fit again
        await held.pop().close()
