"""``Connection`` driven by a fake transport: bytes in through ``data_received``, what it
writes captured.  No sockets (like uvicorn's ``get_connected_protocol``).

Covers the glue the scheduler tests cannot see: reading across splits, one write per
batch, flow control both ways (a peer that does not read; requests held behind the
store), large payloads received on their own, durable replies in order, and a peer
that goes away.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gearshift.protocol.codec import Decoder, Packet, encode_request
from gearshift.protocol.packets import PacketType as T
from gearshift.records import StoredJob
from gearshift.server.config import ServerConfig
from gearshift.server.connection import Connection
from gearshift.server.server import GearmanServer
from gearshift.store import Store


class FakeTransport:
    """What ``Connection`` uses of an asyncio transport, recorded."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.reading = True
        self.closed = False
        self.protocol: Any = None

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def writelines(self, parts: list[bytes]) -> None:
        self.written.append(b"".join(parts))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000)}.get(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_reading(self) -> bool:
        return self.reading

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def packets(self) -> list[tuple[int, tuple[bytes, ...]]]:
        """Everything written so far, decoded (and forgotten)."""
        data = b"".join(self.written)
        self.written.clear()
        out = []
        for event in Decoder().feed(data):
            if isinstance(event, Packet):
                out.append((event.type, event.args))
            else:
                out.append((-1, (bytes(event),)))
        return out


class SlowStore(Store):
    """A persistent store whose adds wait until the test lets them through."""

    name = "slow"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.added: list[StoredJob] = []
        self.fail = False

    async def add(self, job: StoredJob) -> None:
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("disk on fire")
        self.added.append(job)

    async def done(self, job: StoredJob) -> None:
        return None

    async def replay(self) -> AsyncIterator[StoredJob]:
        return
        yield  # pragma: no cover


def server_for(store: Store | None = None, **options: Any) -> GearmanServer:
    options.setdefault("handle_prefix", "H:localhost")
    server = GearmanServer(ServerConfig(queue_type="builtin", **options), store=store)
    server.assemble()
    return server


def connect(
    server: GearmanServer, cls: type[Connection] = Connection
) -> tuple[Connection, FakeTransport]:
    conn = cls(server)
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


async def test_packets_split_anywhere_are_read_whole_and_answered_in_one_write() -> None:
    server = server_for()
    conn, transport = connect(server)
    data = (
        encode_request(T.ECHO_REQ, b"one")
        + b"version\r\n"
        + encode_request(T.SUBMIT_JOB_BG, b"f", b"u", b"payload")
    )
    for i in range(len(data) - 1):  # every byte but the last, one at a time
        conn.data_received(data[i : i + 1])
    assert [t for t, _ in transport.packets()] == [T.ECHO_RES, -1]
    conn.data_received(data[-1:])
    assert transport.packets() == [(T.JOB_CREATED, (b"H:localhost:1",))]
    # Several messages in one read: one write.
    conn.data_received(encode_request(T.ECHO_REQ, b"a") + encode_request(T.ECHO_REQ, b"b"))
    assert len(transport.written) == 1
    assert transport.packets() == [(T.ECHO_RES, (b"a",)), (T.ECHO_RES, (b"b",))]
    assert server.scheduler.stats.packets[T.ECHO_REQ] == 3


async def test_a_bad_header_closes_the_connection() -> None:
    server = server_for()
    conn, transport = connect(server)
    conn.data_received(encode_request(T.ECHO_REQ, b"ok") + b"\0XYZ" + bytes(8))
    assert transport.closed and conn.closed
    assert transport.packets() == [(T.ECHO_RES, (b"ok",))]  # what came before is answered


async def test_a_response_packet_is_refused_not_run() -> None:
    server = server_for()
    conn, transport = connect(server)
    conn.data_received(b"\0RES" + (16).to_bytes(4, "big") + (1).to_bytes(4, "big") + b"x")
    ((ptype, args),) = transport.packets()
    assert ptype == T.ERROR and args[0] == b"INVALID_MAGIC"


async def test_a_peer_that_does_not_read_is_not_read_either() -> None:
    server = server_for()
    conn, transport = connect(server)
    conn.pause_writing()  # its transport's write buffer is full
    assert not transport.reading
    conn.resume_writing()
    assert transport.reading


@pytest.mark.parametrize("direct", [True, False])
async def test_a_large_payload_is_received_on_its_own(direct: bool) -> None:
    server = server_for()

    class Conn(Connection):
        __slots__ = ()

    Conn.direct = direct  # False: the copying path, as on TLS
    conn, transport = connect(server, Conn)
    payload = bytes(range(256)) * 4096  # 1 MiB
    packet = encode_request(T.SUBMIT_JOB_BG, b"f", b"", payload)
    conn.data_received(packet[:1000])
    if direct:
        receiver = transport.protocol
        assert receiver is not None  # the socket now reads into the payload's buffer
        at = 1000
        while at < len(packet):
            view = receiver.get_buffer(-1)
            n = min(len(view), 65536, len(packet) - at)
            view[:n] = packet[at : at + n]
            view.release()
            at += n
            receiver.buffer_updated(n)
        assert transport.protocol is conn  # and back to the connection
    else:
        for at in range(1000, len(packet), 70_000):
            conn.data_received(packet[at : at + 70_000])
    assert transport.packets() == [(T.JOB_CREATED, (b"H:localhost:1",))]
    (job,) = server.scheduler.handles.values()
    assert bytes(job.data) == payload
    assert server.payload_reserved == 0


async def test_a_closed_peer_leaves_its_jobs_and_gets_nothing_more() -> None:
    server = server_for()
    client, client_t = connect(server)
    worker, worker_t = connect(server)
    worker.data_received(encode_request(T.CAN_DO, b"f"))
    client.data_received(encode_request(T.SUBMIT_JOB, b"f", b"", b"x"))
    ((_, (handle,)),) = client_t.packets()
    worker.data_received(encode_request(T.GRAB_JOB))
    assert worker_t.packets()[0][0] == T.JOB_ASSIGN
    client.connection_lost(None)
    assert client not in server.connections and client.closed
    assert server.scheduler.handles[handle].ignore  # it runs on; its result is dropped
    worker.data_received(encode_request(T.WORK_COMPLETE, handle, b"r"))
    assert client_t.written == [] and handle not in server.scheduler.handles
    # A worker that goes away: its job is queued again for another.
    client2, client2_t = connect(server)
    client2.data_received(encode_request(T.SUBMIT_JOB, b"f", b"", b"y"))
    worker.data_received(encode_request(T.GRAB_JOB))
    worker.connection_lost(None)
    (job,) = server.scheduler.handles.values()
    assert job.worker is None and job.retries == 1


async def test_durable_replies_leave_in_order_and_reading_pauses_behind_the_store() -> None:
    store = SlowStore()
    server = server_for(store)
    conn, transport = connect(server)
    first = encode_request(T.SUBMIT_JOB_BG, b"f", b"", b"a")
    conn.data_received(first + encode_request(T.ECHO_REQ, b"after") + b"status\n")
    assert transport.packets() == []  # the echo and the admin line wait behind the add
    assert conn.order.blocked and len(conn.order.backlog) == 2
    # Flood it: past the high-water mark the connection stops reading.
    conn.data_received(encode_request(T.ECHO_REQ, b"x") * 1100)
    assert not transport.reading
    store.gate.set()
    for _ in range(5):
        await asyncio.sleep(0)
    replies = transport.packets()
    assert replies[0] == (T.JOB_CREATED, (b"H:localhost:1",))
    assert replies[1] == (T.ECHO_RES, (b"after",))
    assert replies[2:4] == [(-1, (b"f\t1\t0\t0",)), (-1, (b".",))]  # status, in its place
    assert replies[4:] == [(T.ECHO_RES, (b"x",))] * 1100
    assert transport.reading and not conn.order.blocked
    assert [j.function for j in store.added] == [b"f"]


async def test_a_failed_store_add_answers_an_error_in_place() -> None:
    store = SlowStore()
    store.fail = True
    store.gate.set()
    server = server_for(store)
    conn, transport = connect(server)
    conn.data_received(
        encode_request(T.SUBMIT_JOB_BG, b"f", b"", b"a") + encode_request(T.ECHO_REQ, b"e")
    )
    for _ in range(5):
        await asyncio.sleep(0)
    replies = transport.packets()
    assert replies[0][0] == T.ERROR and replies[0][1] == (b"QUEUE_ERROR", b"RuntimeError")
    assert replies[1] == (T.ECHO_RES, (b"e",))
    assert not server.scheduler.handles
