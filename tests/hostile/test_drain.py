"""A graceful stop (SIGUSR1) must end: it refuses new submits, keeps durable queued
jobs in the store for the next start, waits for running jobs, and stops at its
deadline.  Each test runs ``gearshift server`` as a process on a SQLite queue."""

from __future__ import annotations

import signal
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from tests.procs import Gearshift

REQ = b"\0REQ"


def packet(ptype: int, *args: bytes) -> bytes:
    body = b"\0".join(args)
    return REQ + struct.pack(">II", ptype, len(body)) + body


def read_packet(sock: socket.socket) -> tuple[int, list[bytes]]:
    def exactly(n: int) -> bytes:
        got = b""
        while len(got) < n:
            chunk = sock.recv(n - len(got))
            if not chunk:
                raise ConnectionError("closed")
            got += chunk
        return got

    _, ptype, size = struct.unpack(">4sII", exactly(12))
    return ptype, exactly(size).split(b"\0") if size else []


def connect(srv: Gearshift) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.port), timeout=10)


def admin(srv: Gearshift, line: bytes) -> bytes:
    with connect(srv) as s:
        s.sendall(line + b"\n")
        out = b""
        while not out.endswith(b".\n"):
            out += s.recv(65536)
        return out


def exit_within(srv: Gearshift, seconds: float) -> float:
    assert srv.proc is not None
    started = time.monotonic()
    while srv.proc.poll() is None:
        elapsed = time.monotonic() - started
        assert elapsed < seconds, f"still running {elapsed:.1f}s after SIGUSR1"
        time.sleep(0.02)
    assert srv.proc.returncode == 0, srv.log_text()[-2000:]
    return time.monotonic() - started


@pytest.fixture
def durable() -> Iterator[Gearshift]:
    srv = Gearshift()
    srv.extra_args = ["--queue", f"sqlite:///{srv.dir}/queue.db", "--verbose", "WARNING"]
    srv.start()
    try:
        yield srv
    finally:
        srv.close()


def test_a_stored_job_without_workers_does_not_hold_the_drain(durable: Gearshift) -> None:
    with connect(durable) as c:
        c.sendall(packet(18, b"nobody_does_this", b"", b"payload"))
        assert read_packet(c)[0] == 8  # JOB_CREATED: durable now
    durable.signal(signal.SIGUSR1)
    elapsed = exit_within(durable, 5)
    assert elapsed < 2
    assert "1 durable jobs stay in the store" in durable.log_text()
    durable.start()  # the same queue file: the job is back
    assert b"nobody_does_this\t1\t0\t0" in admin(durable, b"status")


def test_submits_are_refused_once_the_drain_begins(durable: Gearshift) -> None:
    with connect(durable) as c, connect(durable) as w:
        # A running job keeps the server draining while the client keeps submitting.
        w.sendall(packet(1, b"slow"))
        c.sendall(packet(18, b"slow", b"", b"busy"))
        assert read_packet(c)[0] == 8
        w.sendall(packet(9))
        assert read_packet(w)[0] == 11  # JOB_ASSIGN
        durable.signal(signal.SIGUSR1)
        accepted_after_refusal = refused = 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and refused < 200:
            c.sendall(packet(18, b"other", b"", b"more"))
            ptype, args = read_packet(c)
            if ptype == 19:
                assert args[0] == b"SHUTDOWN_GRACEFUL", args
                refused += 1
            elif refused:
                accepted_after_refusal += 1
        assert refused == 200 and accepted_after_refusal == 0
        # A worker can still connect, but nothing durable is handed out any more.
        with connect(durable) as late:
            late.sendall(packet(1, b"slow") + packet(9))
            assert read_packet(late)[0] == 10  # NO_JOB
        assert durable.proc is not None and durable.proc.poll() is None
    # The worker's connection closed mid-job: the job stays in the store, and with
    # nothing left to wait for the drain ends.
    exit_within(durable, 5)
    durable.start()
    status = admin(durable, b"status")
    assert b"slow\t1\t0\t0" in status
    assert b"other\t" in status  # accepted before the drain began: kept too


def test_the_drain_stops_at_its_deadline(durable: Gearshift) -> None:
    durable.stop()
    durable.extra_args += ["--drain-timeout", "1"]
    durable.start()
    with connect(durable) as c, connect(durable) as w:
        w.sendall(packet(1, b"hangs"))
        c.sendall(packet(18, b"hangs", b"", b"forever"))
        assert read_packet(c)[0] == 8
        w.sendall(packet(9))
        assert read_packet(w)[0] == 11  # the worker takes it and never answers
        durable.signal(signal.SIGUSR1)
        elapsed = exit_within(durable, 5)
        assert 0.9 < elapsed < 3
    log = durable.log_text()
    assert "drain stopped after 1.0s with 1 jobs left (1 running)" in log, log[-2000:]
    assert "1 are in the store and run after the next start" in log
    durable.start()
    assert b"hangs\t1\t0\t0" in admin(durable, b"status")
