"""The store seen through a real gearshift server: default file, QUEUE_ERROR, recovery."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from gearshift.protocol.codec import Decoder, Packet, encode_request
from gearshift.protocol.packets import PacketType
from tests.procs import Gearshift, free_port, wait_listening
from tests.store.conftest import Backend
from tests.store.proxy import TcpProxy
from tests.store.rawclient import grab_uniq


async def submit(port: int, ptype: int, function: bytes, data: bytes) -> Packet:
    """Send one submit, return the first reply (JOB_CREATED or ERROR)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(encode_request(ptype, function, b"", data))
        dec = Decoder()
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), 30)
            assert chunk, "server closed the connection"
            for pkt in dec.feed(chunk):
                assert isinstance(pkt, Packet)
                return pkt
    finally:
        writer.close()


async def foreground_roundtrip(port: int) -> bytes:
    """A foreground job with a worker that echoes it reversed; returns the result."""
    wr, ww = await asyncio.open_connection("127.0.0.1", port)
    ww.write(encode_request(PacketType.CAN_DO, b"rev"))
    cr, cw = await asyncio.open_connection("127.0.0.1", port)
    cw.write(encode_request(PacketType.SUBMIT_JOB, b"rev", b"", b"abc"))
    wdec, cdec = Decoder(), Decoder()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ww.write(encode_request(PacketType.GRAB_JOB))
            pkts = wdec.feed(await asyncio.wait_for(wr.read(65536), 30))
            assigned = [
                p for p in pkts if isinstance(p, Packet) and p.type == PacketType.JOB_ASSIGN
            ]
            if assigned:
                handle, _, data = assigned[0].args
                ww.write(encode_request(PacketType.WORK_COMPLETE, handle, data[::-1]))
                break
            await asyncio.sleep(0.05)
        while True:
            for pkt in cdec.feed(await asyncio.wait_for(cr.read(65536), 30)):
                assert isinstance(pkt, Packet)
                if pkt.type == PacketType.WORK_COMPLETE:
                    return pkt.args[1]
    finally:
        ww.close()
        cw.close()


def test_default_queue_is_sqlite_in_the_working_directory(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "gearshift", "server", "-p", str(port), "-L", "127.0.0.1"]
    with open(tmp_path / "log", "wb") as log:
        proc = subprocess.Popen(argv, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_listening(port, proc)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(encode_request(PacketType.SUBMIT_JOB_BG, b"f", b"", b"kept"))
            pkts = Decoder().feed(s.recv(4096))
        assert isinstance(pkts[0], Packet) and pkts[0].type == PacketType.JOB_CREATED
        with sqlite3.connect(tmp_path / "gearshift.db") as db:
            assert db.execute("SELECT data FROM gearman_queue").fetchall() == [(b"kept",)]
    finally:
        proc.terminate()
        proc.wait(10)


async def test_database_cut_gives_queue_error_then_recovers(network_backend: Backend) -> None:
    proxy = await TcpProxy(network_backend.port).start()
    srv = Gearshift(["--queue", network_backend.url_via(proxy.port)])
    await asyncio.to_thread(srv.start)
    try:
        ok = await submit(srv.port, PacketType.SUBMIT_JOB_BG, b"bg", b"before")
        assert ok.type == PacketType.JOB_CREATED

        await proxy.cut()
        err = await submit(srv.port, PacketType.SUBMIT_JOB_BG, b"bg", b"refused")
        assert err.type == PacketType.ERROR
        assert err.args[0] == b"QUEUE_ERROR"
        assert network_backend.kind.encode() in err.args[1]  # says which store failed
        # Foreground jobs never touch the store and keep working.
        assert await foreground_roundtrip(srv.port) == b"cba"

        await proxy.restore()
        deadline = time.monotonic() + 30
        while True:
            reply = await submit(srv.port, PacketType.SUBMIT_JOB_BG, b"bg", b"after")
            if reply.type == PacketType.JOB_CREATED:
                break
            assert time.monotonic() < deadline, "store did not recover"
            await asyncio.sleep(0.2)
        log = srv.log_text()
        assert "failed" in log and "recovered after" in log
    finally:
        await asyncio.to_thread(srv.close)
        await proxy.close()

    store = await network_backend.open()
    assert sorted([j.data async for j in store.replay()]) == [b"after", b"before"]


async def test_store_queue_on_shutdown_through_the_server(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    srv = Gearshift(["-q", "libsqlite3", "--libsqlite3-db", str(db), "--store-queue-on-shutdown"])
    await asyncio.to_thread(srv.start)
    try:
        for i in range(3):
            reply = await submit(srv.port, PacketType.SUBMIT_JOB_BG, b"f", b"j%d" % i)
            assert reply.type == PacketType.JOB_CREATED
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM gearman_queue").fetchone() == (0,)
        assert await asyncio.to_thread(srv.stop) == 0
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT data FROM gearman_queue ORDER BY id").fetchall()
        assert rows == [(b"j0",), (b"j1",), (b"j2",)]
    finally:
        await asyncio.to_thread(srv.close)


async def test_restart_keeps_priorities_uniques_and_epoch(backend: Backend) -> None:
    srv = Gearshift(["--queue", backend.url])
    await asyncio.to_thread(srv.start)
    try:
        for ptype, unique, data in (
            (PacketType.SUBMIT_JOB_LOW_BG, b"u-low", b"low"),
            (PacketType.SUBMIT_JOB_BG, b"u-normal", b"normal"),
            (PacketType.SUBMIT_JOB_HIGH_BG, b"u-high", b"high"),
            (PacketType.SUBMIT_JOB_BG, b"", b"empty-1"),
            (PacketType.SUBMIT_JOB_BG, b"", b"empty-2"),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(encode_request(ptype, b"prio", unique, data))
            pkts = Decoder().feed(await asyncio.wait_for(reader.read(4096), 30))
            writer.close()
            assert isinstance(pkts[0], Packet) and pkts[0].type == PacketType.JOB_CREATED
        epoch = str(int(time.time()) + 3600).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(encode_request(PacketType.SUBMIT_JOB_EPOCH, b"later", b"ep", epoch, b"x"))
        pkts = Decoder().feed(await asyncio.wait_for(reader.read(4096), 30))
        writer.close()
        assert isinstance(pkts[0], Packet) and pkts[0].type == PacketType.JOB_CREATED

        await asyncio.to_thread(srv.kill)
        await asyncio.to_thread(srv.start)
        assert await grab_uniq(srv.port, b"prio", 10) == [
            (b"u-high", b"high"),
            (b"u-normal", b"normal"),
            (b"", b"empty-1"),
            (b"", b"empty-2"),
            (b"u-low", b"low"),
        ]
        # The epoch job is back, and still waits for its time.
        assert await grab_uniq(srv.port, b"later", 1) == []
        await asyncio.to_thread(srv.stop)
    finally:
        await asyncio.to_thread(srv.close)
    store = await backend.open()
    jobs = [j async for j in store.replay()]
    assert [(j.function, j.unique, j.when) for j in jobs] == [(b"later", b"ep", int(epoch))]
