"""The shared Connection class on a fake transport: writing, draining, loss, closing.

No sockets, no processes: the "server" is the test, feeding bytes and hang-ups in.
"""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from gearshift._async import net
from gearshift._async.connection import (
    HIGH_WATER,
    Attached,
    Connection,
    Request,
    RequestLost,
    connect,
)
from gearshift.addresses import ServerAddress
from gearshift.errors import ClosedError, ConnectError, ConnectionLost
from gearshift.protocol.client import ClientEvent, ClientProtocol, EchoReply
from gearshift.protocol.codec import encode_request, encode_response
from gearshift.protocol.packets import PacketType as T
from tests.client.scripted import FakeTransport

ADDRESS = ServerAddress("127.0.0.1", 4730)


class _Role(Connection[ClientProtocol]):
    """The smallest role: records events and resolves echoes; b"boom" makes it raise."""

    def __init__(self, *, batch: bool = True) -> None:
        super().__init__(ADDRESS, ClientProtocol())
        self.batch_writes = batch
        self.events: list[ClientEvent] = []
        self.endings: list[tuple[BaseException | None, list[Attached]]] = []

    def dispatch(self, event: ClientEvent) -> None:
        if isinstance(event, EchoReply) and event.data == b"boom":
            raise RuntimeError("dispatch failed")
        self.events.append(event)
        if isinstance(event, EchoReply):
            assert isinstance(event.tag, Request)
            event.tag.resolve(event.data)

    def connection_ended(self, error: BaseException | None, jobs: list[Attached]) -> None:
        self.endings.append((error, jobs))

    def echo(self, data: bytes) -> asyncio.Future[bytes]:
        return self.request(lambda tag: self.core.echo(data, tag=tag))


class _Job:
    """An attached job that records what the connection told it."""

    def __init__(self) -> None:
        self.told: list[BaseException] = []

    def _connection_lost(self, error: BaseException) -> None:
        self.told.append(error)


def _opened(conn: Connection[ClientProtocol]) -> FakeTransport:
    transport = FakeTransport(conn)
    conn.connection_made(transport)
    return transport


def _echo_res(data: bytes) -> bytes:
    return encode_response(T.ECHO_RES, data)


# -- writing ------------------------------------------------------------------------------


async def test_sends_of_one_loop_pass_share_one_write() -> None:
    conn = _Role()
    transport = _opened(conn)
    conn.send(b"a")
    conn.send(b"b")
    conn.send(b"c")
    assert transport.writes == []  # held to the end of the pass
    await asyncio.sleep(0)
    assert transport.writes == [b"abc"]
    conn.send(b"d")  # a later pass: a write of its own, not held for company
    await asyncio.sleep(0)
    assert transport.writes == [b"abc", b"d"]


async def test_an_immediate_connection_writes_at_once_and_cork_holds_writes() -> None:
    conn = _Role(batch=False)
    transport = _opened(conn)
    conn.send(b"a")
    assert transport.writes == [b"a"]
    conn.cork()
    conn.send(b"b")
    conn.send(b"c")
    await asyncio.sleep(0)
    assert transport.writes == [b"a"]
    conn.uncork()
    assert transport.writes == [b"a", b"bc"]  # in order, in one write
    conn.uncork()  # not corked: nothing more
    assert transport.writes == [b"a", b"bc"]


async def test_cork_holds_a_batch_past_the_end_of_its_pass() -> None:
    conn = _Role()
    transport = _opened(conn)
    conn.send(b"a")
    conn.cork()
    await asyncio.sleep(0)
    assert transport.writes == []
    conn.send(b"b")
    conn.uncork()
    assert transport.writes == [b"ab"]


async def test_drain_waits_only_while_the_transport_has_paused_us() -> None:
    conn = _Role()
    transport = _opened(conn)
    assert transport.limits == (HIGH_WATER, None)  # the transport pauses above the mark
    await asyncio.wait_for(conn.drain(), 1)
    conn.pause_writing()
    waiting = asyncio.create_task(conn.drain())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    conn.resume_writing()
    await asyncio.wait_for(waiting, 1)


async def test_drain_hands_a_large_batch_to_the_transport_at_once() -> None:
    conn = _Role()
    transport = _opened(conn)
    conn.send(b"x" * HIGH_WATER)
    conn.send(b"y")
    await conn.drain()  # not paused: no wait, but the batch is written now
    assert transport.writes == [b"x" * HIGH_WATER + b"y"]
    await asyncio.sleep(0)
    assert len(transport.writes) == 1  # the end of the pass finds nothing left


async def test_loss_while_draining_fails_the_wait() -> None:
    conn = _Role()
    transport = _opened(conn)
    conn.pause_writing()
    waiting = asyncio.create_task(conn.drain())
    await asyncio.sleep(0)
    transport.hang_up(ConnectionResetError("reset by peer"))
    with pytest.raises(RequestLost, match="reset by peer"):
        await asyncio.wait_for(waiting, 1)
    with pytest.raises(RequestLost):
        await conn.drain()  # still paused, and over


# -- loss ---------------------------------------------------------------------------------


async def test_loss_fails_requests_without_a_reply_and_tells_attached_jobs() -> None:
    conn = _Role()
    transport = _opened(conn)
    answered = conn.echo(b"one")
    waiting = conn.echo(b"two")
    job, other = _Job(), _Job()
    conn.attach(b"H:x:1", job)
    conn.attach(b"H:x:1", other)
    conn.attach(b"H:x:2", _Job())
    assert conn.detach(b"H:x:2", conn.jobs[b"H:x:2"][0])
    assert not conn.detach(b"H:x:2", job)
    await asyncio.sleep(0)
    transport.deliver(_echo_res(b"one"))
    assert await answered == b"one"
    transport.hang_up(ConnectionResetError("reset by peer"))
    # Before its reply: nothing was acknowledged, safe to send elsewhere.
    with pytest.raises(RequestLost, match="reset by peer"):
        await waiting
    # After: the job is the server's; it is told, with the plain ConnectionLost.
    assert [type(e) for e in job.told + other.told] == [ConnectionLost, ConnectionLost]
    assert "H:x:1" in str(job.told[0])
    assert conn.closed and conn.ended.done() and conn.jobs == {}
    assert len(conn.endings) == 1 and conn.endings[0][1] == [job, other]
    assert isinstance(conn.endings[0][0], ConnectionResetError)
    with pytest.raises(RequestLost):
        conn.send(b"late")
    with pytest.raises(RequestLost):
        conn.echo(b"late")
    conn.connection_lost(None)  # a second report changes nothing
    assert len(conn.endings) == 1


async def test_a_request_nobody_waits_for_leaves_no_unretrieved_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    conn = _Role()
    transport = _opened(conn)
    conn.echo(b"gone")  # e.g. an OPTION_REQ sent without waiting, or a cancelled wait
    transport.hang_up()
    await asyncio.sleep(0)
    gc.collect()
    assert "never retrieved" not in caplog.text


async def test_close_writes_what_is_queued_then_gives_its_error_to_everyone() -> None:
    conn = _Role()
    transport = _opened(conn)
    conn.send(b"queued")
    pending = conn.echo(b"e")
    job = _Job()
    conn.attach(b"H:x:1", job)
    closed = ClosedError("client closed")
    conn.close(closed)
    assert transport.writes[0].startswith(b"queued")  # flushed before closing
    assert transport.closing and not transport.aborted  # a graceful close
    with pytest.raises(ClosedError):
        await pending
    assert job.told == [closed]
    assert conn.endings == [(None, [job])]
    await asyncio.wait_for(conn.wait_closed(), 1)  # the transport reported its end
    conn.close(closed)  # twice is harmless
    assert len(conn.endings) == 1


async def test_bytes_the_core_refuses_end_the_connection() -> None:
    conn = _Role()
    transport = _opened(conn)
    pending = conn.echo(b"e")
    transport.deliver(encode_request(T.ECHO_REQ, b"x"))  # a request packet, from a server
    assert conn.closed and transport.aborted
    with pytest.raises(RequestLost, match="request packet"):
        await pending
    transport.deliver(_echo_res(b"e"))  # nothing is read after the end
    assert conn.events == []


async def test_one_event_that_fails_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    conn = _Role()
    transport = _opened(conn)
    first, second = conn.echo(b"boom"), conn.echo(b"fine")
    with caplog.at_level(logging.ERROR):
        transport.deliver(_echo_res(b"boom") + _echo_res(b"fine"))
    assert await second == b"fine"
    assert not first.done() and not conn.closed
    assert "error handling" in caplog.text


async def test_end_of_stream_ends_the_connection() -> None:
    conn = _Role()
    _opened(conn)
    pending = conn.echo(b"e")
    assert conn.eof_received() is False  # let the transport close itself
    assert conn.closed
    with pytest.raises(RequestLost):
        await pending


# -- connecting ---------------------------------------------------------------------------


async def test_connect_opens_the_transport_and_refuses_a_connection_dead_on_arrival(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hang_up = False

    async def fake_open(
        address: ServerAddress, protocol: asyncio.Protocol, **kwargs: object
    ) -> asyncio.BaseTransport:
        assert kwargs == {"connect_timeout": 3.0, "keepalive": True, "tls": None}
        transport = FakeTransport(protocol)
        protocol.connection_made(transport)
        if hang_up:  # the server hung up before the connect returned
            transport.hang_up()
        return transport

    monkeypatch.setattr(net, "open_transport", fake_open)
    conn = await connect(_Role(), connect_timeout=3.0, keepalive=True)
    assert isinstance(conn.transport, FakeTransport) and not conn.closed
    hang_up = True
    with pytest.raises(ConnectError, match="closed the connection at once"):
        await connect(_Role(), connect_timeout=3.0, keepalive=True)
