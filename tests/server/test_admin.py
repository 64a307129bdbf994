"""Admin protocol over real sockets: gearmand's exact output (checklist 2, 25, 26)."""

from __future__ import annotations

import os

from gearshift import __version__
from gearshift.testing import RunningServer, serve
from tests.server.helpers import Raw, T, worker


async def test_checklist_02_admin_and_binary_mixed_on_one_connection(server: RunningServer) -> None:
    c = await Raw.connect(server.address)
    c.send(T.ECHO_REQ, b"a")
    c.send_raw(b"VERSION\r\n")
    c.send(T.ECHO_REQ, b"b")
    c.send_raw(b"getpid\n")  # bare \n works too
    assert await c.expect(T.ECHO_RES) == (b"a",)
    assert await c.reader.readline() == f"OK {__version__}\n".encode()
    assert await c.expect(T.ECHO_RES) == (b"b",)
    assert await c.reader.readline() == f"OK {os.getpid()}\n".encode()
    await c.close()


async def test_checklist_25_status_prioritystatus_and_counts(server: RunningServer) -> None:
    a = await Raw.connect(server.address)
    c = await Raw.connect(server.address)
    w = await worker(server.address, b"pr", b"pr")
    for ptype in (T.SUBMIT_JOB_HIGH_BG, T.SUBMIT_JOB_BG, T.SUBMIT_JOB_LOW_BG, T.SUBMIT_JOB_BG):
        c.send(ptype, b"pr", b"", b"x")
        await c.expect(T.JOB_CREATED)
    w.send(T.GRAB_JOB)
    await w.expect(T.JOB_ASSIGN)
    assert await a.admin("status") == "pr\t4\t1\t2\n.\n"
    assert await a.admin("PRIORITYSTATUS") == "pr\t0\t2\t1\t2\n.\n"
    assert await a.admin("create function newf") == "OK\r\n"
    assert (await a.admin("status")).endswith("newf\t0\t0\t0\n.\n")
    for conn in (a, c, w):
        await conn.close()


async def test_checklist_25_workers_lists_every_connection(server: RunningServer) -> None:
    a = await Raw.connect(server.address)
    w = await worker(server.address, b"old", b"new", client_id=b"w-1")
    assert await w.call(T.ECHO_REQ, b"sync") == (T.ECHO_RES, (b"sync",))
    lines = (await a.admin("workers")).splitlines()
    assert lines[-1] == "."
    rows = {line.split(" ", 1)[1] for line in lines[:-1]}
    assert rows == {"127.0.0.1 - :", "127.0.0.1 w-1 : new old"}
    assert all(line.split(" ", 1)[0].isdigit() for line in lines[:-1])
    for conn in (a, w):
        await conn.close()


async def test_checklist_25_show_jobs_and_unique_jobs(server: RunningServer) -> None:
    a = await Raw.connect(server.address)
    c = await Raw.connect(server.address)
    c.send(T.SUBMIT_JOB_BG, b"f", b"u1", b"x")
    (h1,) = await c.expect(T.JOB_CREATED)
    c.send(T.SUBMIT_JOB, b"f", b"", b"x")
    (h2,) = await c.expect(T.JOB_CREATED)
    assert await a.admin("show jobs") == f"{h1.decode()}\t0\t0\t1\n{h2.decode()}\t0\t0\t0\n.\n"
    assert await a.admin("show unique jobs") == "u1\n\n.\n"
    assert await a.admin("show") == "ERR UNKNOWN_COMMAND Unknown+server+commandshow\r\n"
    assert await a.admin("show x") == "ERR UNKNOWN_SHOW_ARGUMENTS\r\n"
    assert await a.admin("show jobs x") == "ERR UNKNOWN_SHOW_ARGUMENTS\r\n"
    for conn in (a, c):
        await conn.close()


async def test_checklist_25_cancel_job(server: RunningServer) -> None:
    a = await Raw.connect(server.address)
    c = await Raw.connect(server.address)
    c.send(T.SUBMIT_JOB, b"f", b"", b"x")
    (h,) = await c.expect(T.JOB_CREATED)
    assert await a.admin(f"cancel job {h.decode()}") == "OK\r\n"
    assert await c.expect(T.WORK_FAIL) == (h,)
    assert await a.admin("show jobs") == f"{h.decode()}\t0\t1\t0\n.\n"
    assert await a.admin("cancel job H:nope:1") == "ERR UNKNOWN_JOB\r\n"
    assert await a.admin("cancel x y") == "ERR UNKNOWN_ERROR\r\n"
    assert await a.admin("cancel job") == "ERR UNKNOWN_COMMAND Unknown+server+commandcancel\r\n"
    assert await a.admin("cancel") == "ERR UNKNOWN_COMMAND Unknown+server+commandcancel\r\n"
    for conn in (a, c):
        await conn.close()


async def test_checklist_25_drop_function(server: RunningServer) -> None:
    a = await Raw.connect(server.address)
    w = await worker(server.address, b"busy")
    assert await w.call(T.ECHO_REQ, b"s") == (T.ECHO_RES, (b"s",))
    assert await a.admin("create function Gone") == "OK\r\n"
    assert await a.admin("drop function gONE") == "OK\r\n"  # case-insensitive, as gearmand
    assert "Gone" not in await a.admin("status")
    assert await a.admin("drop function Gone") == "ERR function not found\r\n"
    assert await a.admin("drop function busy") == (
        "ERR there are still connected workers or executing clients\r\n"
    )
    assert await a.admin("drop") == (
        "ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+drop\r\n"
    )
    assert await a.admin("create function") == (
        "ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+create\r\n"
    )
    for conn in (a, w):
        await conn.close()


async def test_checklist_24_maxqueue_admin_and_queue_full(server: RunningServer) -> None:
    a = await Raw.connect(server.address)
    c = await Raw.connect(server.address)
    assert await a.admin("maxqueue") == (
        "ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+maxqueue\r\n"
    )
    assert await a.admin("maxqueue unknownfn 5") == "OK\r\n"  # no effect
    c.send(T.SUBMIT_JOB_BG, b"mq", b"", b"x")
    await c.expect(T.JOB_CREATED)
    assert await a.admin("maxqueue mq 2") == "OK\r\n"
    c.send(T.SUBMIT_JOB_BG, b"mq", b"", b"x")
    await c.expect(T.JOB_CREATED)
    assert await c.call(T.SUBMIT_JOB_BG, b"mq", b"", b"x") == (
        T.ERROR,
        (b"QUEUE_ERROR", b"Job queue is full"),
    )
    assert await a.admin("maxqueue mq 0 0 1") == "OK\r\n"
    c.send(T.SUBMIT_JOB_HIGH_BG, b"mq", b"", b"x")
    await c.expect(T.JOB_CREATED)
    assert (await c.call(T.SUBMIT_JOB_LOW_BG, b"mq", b"", b"x"))[0] == T.ERROR
    assert await a.admin("maxqueue mq") == "OK\r\n"  # reset: unlimited
    c.send(T.SUBMIT_JOB_LOW_BG, b"mq", b"", b"x")
    await c.expect(T.JOB_CREATED)
    for conn in (a, c):
        await conn.close()


async def test_checklist_26_version_verbose_getpid_and_errors(server: RunningServer) -> None:
    a = await Raw.connect(server.address)
    assert await a.admin("version extra args") == f"OK {__version__}\n"
    assert await a.admin("verbose DEBUG") == "OK ERROR\n"
    assert await a.admin("getpid") == f"OK {os.getpid()}\n"
    assert await a.admin("bogus") == "ERR UNKNOWN_COMMAND Unknown+server+commandbogus\r\n"
    assert await a.admin("") == "ERR UNKNOWN_COMMAND Unknown+server+command\r\n"
    assert await a.admin(" status") == "ERR UNKNOWN_COMMAND Unknown+server+command\r\n"
    assert await a.admin("status\tx") == "ERR UNKNOWN_COMMAND Unknown+server+commandstatus\tx\r\n"
    assert await a.admin("status  ") == ".\n"
    await a.close()


async def test_checklist_25_shutdown_only_from_loopback() -> None:
    async with serve() as srv:
        a = await Raw.connect(srv.address)
        # simulate a remote admin: the reply is gearmand 1.1.20's
        conn = next(iter(srv.server.connections))
        conn.host = "192.0.2.7"
        assert await a.admin("shutdown") == (
            "ERR UNKNOWN_COMMAND Unknown+server+commandshutdown\r\n"
        )
        conn.host = "127.0.0.1"
        assert await a.admin("shutdown bogus") == (
            "ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+"
            "shutdown\r\n"
        )
        assert await a.admin("shutdown") == "OK\r\n"
        await srv.server.serve_forever()  # returns once it has stopped
        assert await a.closed()
        await a.close()


async def test_checklist_28_shutdown_graceful_waits_for_jobs() -> None:
    async with serve() as srv:
        a = await Raw.connect(srv.address)
        c = await Raw.connect(srv.address)
        w = await worker(srv.address, b"f")
        c.send(T.SUBMIT_JOB, b"f", b"", b"x")
        (h,) = await c.expect(T.JOB_CREATED)
        assert await a.admin("shutdown graceful") == "OK\r\n"
        await w.call(T.ECHO_REQ, b"sync")
        # New submits are refused, on old and new connections alike (nothing is queued,
        # so a client may take the job elsewhere)...
        assert await c.call(T.SUBMIT_JOB_BG, b"f", b"", b"late") == (
            T.ERROR,
            (b"SHUTDOWN_GRACEFUL", b"Server is shutting down: submit the job to another server"),
        )
        late = await Raw.connect(srv.address)
        late.send(T.SUBMIT_JOB, b"f", b"", b"y")
        assert (await late.expect(T.ERROR))[0] == b"SHUTDOWN_GRACEFUL"
        # ...but workers may still connect, and the queued foreground job runs.
        w.send(T.GRAB_JOB)
        await w.expect(T.JOB_ASSIGN)
        w2 = await worker(srv.address, b"f")
        assert await w2.call(T.GRAB_JOB) == (T.NO_JOB, ())
        w.send(T.WORK_COMPLETE, h, b"done")
        assert await c.expect(T.WORK_COMPLETE) == (h, b"done")
        await srv.server.serve_forever()
        for conn in (a, c, w, w2, late):
            await conn.close()


async def test_admin_line_limit_is_gearmands_8k(server: RunningServer) -> None:
    a = await Raw.connect(server.address)
    longest = "x" * 8190  # + CRLF = 8192 bytes: answered
    assert await a.admin(longest) == f"ERR UNKNOWN_COMMAND Unknown+server+command{longest}\r\n"
    a.send_raw(b"y" * 8191 + b"\r\n")  # one byte more: dropped, as gearmand does
    assert await a.closed()
    await a.close()
