"""Large payloads are received straight into their own buffer (``_PayloadReceiver``).

Over real sockets: what follows a large payload in the same stream is neither lost nor
reordered, a payload kept as a buffer still coalesces and persists as bytes, and a peer
that drops in the middle of one costs nobody else anything.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from gearshift.protocol.codec import encode_request
from gearshift.testing import RunningServer, serve
from tests.server.helpers import Raw, T, wait_for, worker

MIB = 1024 * 1024


def pattern(size: int, seed: int) -> bytes:
    """``size`` bytes, NULs included, different for each seed."""
    block = bytes((i * 7 + seed) % 256 for i in range(4096))
    return (block * (size // 4096 + 1))[:size]


async def test_packets_after_a_large_payload_in_one_write(server: RunningServer) -> None:
    c = await Raw.connect(server.address)
    w = await worker(server.address, b"big")
    one, two = pattern(3 * MIB, 1), pattern(2 * MIB + 17, 2)
    stream = b"".join(
        (
            encode_request(T.SUBMIT_JOB, b"big", b"u1", one),
            encode_request(T.ECHO_REQ, b"after one"),
            encode_request(T.SUBMIT_JOB_BG, b"big", b"u2", two),
            encode_request(T.ECHO_REQ, b"after two"),
        )
    )
    c.send_raw(stream)
    (h1,) = await c.expect(T.JOB_CREATED, within=30)
    assert await c.recv() == (T.ECHO_RES, (b"after one",))
    (h2,) = await c.expect(T.JOB_CREATED, within=30)
    assert await c.recv() == (T.ECHO_RES, (b"after two",))
    w.send(T.GRAB_JOB)
    assert await w.expect(T.JOB_ASSIGN, within=30) == (h1, b"big", one)
    # The worker answers with a large result and a GRAB_JOB right behind it.
    w.send_raw(encode_request(T.WORK_COMPLETE, h1, one[::-1]) + encode_request(T.GRAB_JOB))
    assert await c.expect(T.WORK_COMPLETE, within=30) == (h1, one[::-1])
    assert await w.expect(T.JOB_ASSIGN, within=30) == (h2, b"big", two)
    for conn in (c, w):
        await conn.close()


async def test_large_payload_whose_arguments_arrive_after_the_header(
    server: RunningServer,
) -> None:
    c = await Raw.connect(server.address)
    payload = pattern(MIB, 3)
    packet = encode_request(T.ECHO_REQ, payload)
    submit = encode_request(T.SUBMIT_JOB_BG, b"split-function", b"uniq", payload)
    # The header and 3 bytes of the function name, then the rest: the arguments before
    # the payload are not all there when the header is read.
    c.send_raw(submit[:15])
    await c.writer.drain()
    await asyncio.sleep(0.05)
    c.send_raw(submit[15:] + packet)
    (handle,) = await c.expect(T.JOB_CREATED, within=30)
    assert await c.recv(within=30) == (T.ECHO_RES, (payload,))
    w = await worker(server.address, b"split-function")
    w.send(T.GRAB_JOB_UNIQ)
    assert await w.expect(T.JOB_ASSIGN_UNIQ, within=30) == (
        handle,
        b"split-function",
        b"uniq",
        payload,
    )
    for conn in (c, w):
        await conn.close()


async def test_large_payloads_coalesce_on_unique_dash(server: RunningServer) -> None:
    # The unique "-" coalesces on the payload itself, which must then be hashable.
    a = await Raw.connect(server.address)
    b = await Raw.connect(server.address)
    payload = pattern(MIB, 4)
    a.send(T.SUBMIT_JOB, b"same", b"-", payload)
    (ha,) = await a.expect(T.JOB_CREATED, within=30)
    b.send(T.SUBMIT_JOB, b"same", b"-", payload)
    (hb,) = await b.expect(T.JOB_CREATED, within=30)
    assert ha == hb
    b.send(T.SUBMIT_JOB, b"same", b"-", payload[:-1] + b"!")
    (hc,) = await b.expect(T.JOB_CREATED, within=30)
    assert hc != ha
    w = await worker(server.address, b"same")
    w.send(T.GRAB_JOB)
    assert await w.expect(T.JOB_ASSIGN, within=30) == (ha, b"same", payload)
    w.send(T.WORK_COMPLETE, ha, b"done")
    assert await a.expect(T.WORK_COMPLETE) == (ha, b"done")
    assert await b.expect(T.WORK_COMPLETE) == (ha, b"done")
    for conn in (a, b, w):
        await conn.close()


async def test_peer_dropped_in_the_middle_of_a_large_payload(server: RunningServer) -> None:
    other = await Raw.connect(server.address)
    w = await worker(server.address, b"half")
    quitter = await Raw.connect(server.address)
    packet = encode_request(T.SUBMIT_JOB_BG, b"half", b"", pattern(4 * MIB, 5))
    quitter.send_raw(packet[: 2 * MIB])
    await quitter.writer.drain()
    assert await other.call(T.ECHO_REQ, b"meanwhile") == (T.ECHO_RES, (b"meanwhile",))
    await quitter.close()
    await wait_for(lambda: len(server.server.connections) == 2)
    # No job came of the half packet, and everyone else is still served.
    assert await other.admin("status") == "half\t0\t0\t1\n.\n"
    w.send(T.GRAB_JOB)
    await w.expect(T.NO_JOB)
    other.send(T.SUBMIT_JOB_BG, b"half", b"", b"small")
    (handle,) = await other.expect(T.JOB_CREATED)
    w.send(T.GRAB_JOB)
    assert await w.expect(T.JOB_ASSIGN) == (handle, b"half", b"small")
    for conn in (other, w):
        await conn.close()


async def test_large_background_payload_survives_restart_in_sqlite(tmp_path: Path) -> None:
    db = str(tmp_path / "big.db")
    payload = pattern(3 * MIB, 6)
    options = {"queue_type": "libsqlite3", "queue_options": {"libsqlite3-db": db}}
    async with serve(**options) as srv:
        c = await Raw.connect(srv.address)
        c.send(T.SUBMIT_JOB_BG, b"durable", b"big-one", payload)
        (handle,) = await c.expect(T.JOB_CREATED, within=30)
        await c.close()
    async with serve(**options) as srv:
        w = await worker(srv.address, b"durable")
        w.send(T.GRAB_JOB_UNIQ)
        (_, function, unique, data) = await w.expect(T.JOB_ASSIGN_UNIQ, within=30)
        assert (function, unique, data) == (b"durable", b"big-one", payload)
        await w.close()


async def test_random_chunking_of_mixed_large_and_small_packets(server: RunningServer) -> None:
    # Whatever the chunk boundaries (inside headers, inside the arguments before a
    # payload, inside payloads), every reply comes back intact and in order.
    rng = random.Random(20261130)
    c = await Raw.connect(server.address)
    for _ in range(6):
        sizes = [rng.choice((0, 1, 100, 300_000, MIB + rng.randrange(1000))) for _ in range(6)]
        payloads = [pattern(size, rng.randrange(256)) for size in sizes]
        stream = b"".join(encode_request(T.ECHO_REQ, p) for p in payloads)
        cuts = sorted(rng.sample(range(1, len(stream)), 12))
        for start, stop in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            c.send_raw(stream[start:stop])
            await c.writer.drain()
            if rng.random() < 0.3:
                await asyncio.sleep(0.01)
        for expected in payloads:
            assert await c.recv(within=30) == (T.ECHO_RES, (expected,))
    await c.close()
