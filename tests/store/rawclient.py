"""A minimal raw-protocol client and worker (via the codec) for the store's end-to-end tests."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from gearshift.protocol.codec import Decoder, Packet, encode_request
from gearshift.protocol.packets import PacketType


def submit_bg_sync(
    port: int, function: bytes, unique: bytes, data: bytes, *, ptype: int, epoch: int = 0
) -> bytes:
    """Submit one background job and return its handle (blocking)."""
    if ptype == PacketType.SUBMIT_JOB_EPOCH:
        msg = encode_request(ptype, function, unique, str(epoch).encode(), data)
    else:
        msg = encode_request(ptype, function, unique, data)
    dec = Decoder()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(msg)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            for pkt in dec.feed(chunk):
                assert isinstance(pkt, Packet)
                if pkt.type == PacketType.JOB_CREATED:
                    return pkt.args[0]
                raise AssertionError(f"unexpected reply {pkt}")


async def submit_many(
    port: int,
    function: bytes,
    payloads: list[bytes],
    on_created: Callable[[bytes], None],
    window: int = 200,
) -> None:
    """Pipeline background submits (empty uniques); call ``on_created(data)`` per JOB_CREATED.

    Stops quietly when the server goes away (the crash test kills it).
    """
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    dec = Decoder()
    sent = 0
    acked = 0
    try:
        while acked < len(payloads):
            burst = []
            while sent < len(payloads) and sent - acked < window:
                burst.append(
                    encode_request(PacketType.SUBMIT_JOB_BG, function, b"", payloads[sent])
                )
                sent += 1
            if burst:
                writer.write(b"".join(burst))
            chunk = await reader.read(65536)
            if not chunk:
                return
            for pkt in dec.feed(chunk):
                assert isinstance(pkt, Packet)
                if pkt.type != PacketType.JOB_CREATED:
                    raise AssertionError(f"unexpected reply {pkt}")
                on_created(payloads[acked])
                acked += 1
    except (ConnectionError, OSError):
        return
    finally:
        writer.close()


async def drain(
    port: int, function: bytes, on_job: Callable[[bytes], None], until: Callable[[], bool]
) -> None:
    """Work ``function`` jobs (WORK_COMPLETE each) until ``until()`` is true."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    dec = Decoder()
    writer.write(encode_request(PacketType.CAN_DO, function))
    writer.write(encode_request(PacketType.GRAB_JOB))
    try:
        while not until():
            try:
                chunk = await asyncio.wait_for(reader.read(65536), 0.5)
            except TimeoutError:
                writer.write(encode_request(PacketType.GRAB_JOB))
                continue
            if not chunk:
                raise ConnectionError("server went away while draining")
            out = []
            for pkt in dec.feed(chunk):
                assert isinstance(pkt, Packet)
                if pkt.type == PacketType.JOB_ASSIGN:
                    handle, _, data = pkt.args
                    on_job(data)
                    out.append(encode_request(PacketType.WORK_COMPLETE, handle, b""))
                    out.append(encode_request(PacketType.GRAB_JOB))
                elif pkt.type == PacketType.NO_JOB:
                    out.append(encode_request(PacketType.PRE_SLEEP))
                elif pkt.type == PacketType.NOOP:
                    out.append(encode_request(PacketType.GRAB_JOB))
            writer.write(b"".join(out))
    finally:
        writer.close()


async def admin_status(port: int) -> dict[bytes, tuple[int, int, int]]:
    """``status`` over the admin protocol: function -> (queued, running, workers)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"status\n")
        out: dict[bytes, tuple[int, int, int]] = {}
        while (line := await reader.readline()) not in (b".\n", b""):
            parts = line.rstrip(b"\r\n").split(b"\t")
            if len(parts) == 4:
                out[parts[0]] = (int(parts[1]), int(parts[2]), int(parts[3]))
        return out
    finally:
        writer.close()


async def grab_uniq(port: int, function: bytes, n: int) -> list[tuple[bytes, bytes]]:
    """Grab up to ``n`` jobs with GRAB_JOB_UNIQ (completing each); return (unique, data)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    dec = Decoder()
    got: list[tuple[bytes, bytes]] = []
    try:
        writer.write(encode_request(PacketType.CAN_DO, function))
        while len(got) < n:
            writer.write(encode_request(PacketType.GRAB_JOB_UNIQ))
            pkt = None
            while pkt is None:
                chunk = await asyncio.wait_for(reader.read(65536), 30)
                assert chunk
                pkts = dec.feed(chunk)
                pkt = pkts[0] if pkts else None
            assert isinstance(pkt, Packet)
            if pkt.type == PacketType.NO_JOB:
                break
            assert pkt.type == PacketType.JOB_ASSIGN_UNIQ
            handle, _, unique, data = pkt.args
            got.append((unique, data))
            writer.write(encode_request(PacketType.WORK_COMPLETE, handle, b""))
        return got
    finally:
        writer.close()
